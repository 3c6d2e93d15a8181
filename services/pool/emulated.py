"""The EMULATED model pool: one real Triton model per pool model, served by nvidia-pytriton.

There are no LLM weights on these machines. Each model's batches wait for the time its latency
profile gives (`ModelProfile.batch_latency_s` x time scale) on an emulated engine that batches
continuously, as the vLLM-class servers the profiles were measured on do (`Engine`), and
return the deterministic `answer()`. Everything around it is real: Triton's dynamic batcher
forms the batches, and several Triton instances per engine (each its own pytriton handler
thread; a waiting thread releases the GIL) let a batch start while others decode. Triton's
gRPC/HTTP APIs and Prometheus metrics serve clients and the load-monitor.

The models live in a model repository on disk (pytriton's local model store) and Triton runs
in explicit model control mode, so its model-repository API (behind the pool's access token,
ARAGOG_TRITON_ACCESS_TOKEN or generated) unloads and loads them while the pool serves, as
on any Triton. A pool file's `reserve` models are put in the repository and unloaded at
once: the models an operator could add (the scheduler's AddModel) without a restart.

Model I/O contract (the executor relies on it; batch dimension first since max_batch_size > 0):
    inputs   prompt BYTES [1], stage BYTES [1], output_tokens INT32 [1]
    outputs  text BYTES [1], completion_tokens INT32 [1]
"""

from __future__ import annotations

import itertools
import logging
import os
import pathlib
import signal
import socket
import sys
import sysconfig
import threading
import time
from collections.abc import Callable

import numpy as np
import structlog
import tritonclient.grpc as grpcclient
from pytriton.client.auth import create_auth_headers
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import (
    DEFAULT_PROTECTED_ENDPOINTS,
    Triton,
    TritonConfig,
    TritonLifecyclePolicy,
    TritonSecurityConfig,
)
from tritonclient.utils import InferenceServerException

from aragog.common.logs import configure_logging
from aragog.common.pool import ModelProfile, PoolSpec, pool_file, reserve_of
from aragog.common.settings import PoolSettings
from aragog.emulation.answer import answer
from aragog.emulation.engine import ContinuousBatching, prompt_tokens

INPUTS = [
    Tensor(name="prompt", dtype=bytes, shape=(1,)),
    Tensor(name="stage", dtype=bytes, shape=(1,)),
    Tensor(name="output_tokens", dtype=np.int32, shape=(1,)),
]
OUTPUTS = [
    Tensor(name="text", dtype=bytes, shape=(1,)),
    Tensor(name="completion_tokens", dtype=np.int32, shape=(1,)),
]
UNLOAD_WAIT_S = 60.0
UNLOAD_RETRY_S = 1.0  # an unload asked again while the model still shows READY
POLL_S = 1.0
START_ATTEMPTS = 5
# Statistics stay readable without pytriton's access token (monitoring reads them); loading,
# unloading, shared memory, trace and logging keep needing it.
RESTRICTED_ENDPOINTS = [e for e in DEFAULT_PROTECTED_ENDPOINTS if e != "statistics"]

log = structlog.get_logger()


class Engine:
    """One emulated model instance (a GPU, or a tensor-parallel group) on the wall clock:
    aragog.emulation.engine's continuous batching, played with sleeps and a condition
    variable (the simulator plays the same model on simulated time)."""

    def __init__(self, profile: ModelProfile, time_scale: float):
        self.profile = profile
        self.batching = ContinuousBatching(profile, time_scale, time.monotonic())
        self._cv = threading.Condition()
        self._ids = itertools.count()

    @property
    def load(self) -> int:
        """Requests decoding or in prefill here (make_infer balances on it)."""
        return self.batching.load

    @load.setter
    def load(self, value: int) -> None:
        self.batching.load = value

    def run(self, batch: int, prompt_tokens: int, output_tokens: int) -> None:
        """Block for as long as `batch` requests of this shape take on this engine now."""
        cb = self.batching
        time.sleep(cb.prefill_s(batch, prompt_tokens))
        with self._cv:
            key = next(self._ids)
            cb.join(key, batch, output_tokens, time.monotonic())
            self._cv.notify_all()  # the others now decode more slowly
            try:
                while key not in cb.finished():
                    self._cv.wait(cb.left_s(key))
                    cb.advance(time.monotonic())
            finally:
                cb.leave(key, time.monotonic())
                self._cv.notify_all()


def make_infer(engines: list[Engine], choosing: threading.Lock) -> Callable:
    """Infer function of one Triton instance (a concurrency slot): its batch joins the
    least loaded engine of the model, then every request gets its own answer."""
    name = engines[0].profile.name

    @batch
    def infer(prompt: np.ndarray, stage: np.ndarray, output_tokens: np.ndarray) -> dict:
        prompts = [p.decode("utf-8", "replace") for p in prompt.reshape(-1)]
        stages = [s.decode("utf-8", "replace") for s in stage.reshape(-1)]
        outs = np.maximum(output_tokens.reshape(-1, 1).astype(np.int32), 0)
        b = len(prompts)
        with choosing:
            engine = min(engines, key=lambda e: e.load)
            engine.load += b
        try:
            engine.run(b, max(prompt_tokens(p) for p in prompts), int(outs.max()))
        finally:
            with choosing:
                engine.load -= b
        texts = [answer(name, s, p).encode("utf-8") for s, p in zip(stages, prompts, strict=True)]
        return {"text": np.array(texts, dtype=np.object_).reshape(b, 1), "completion_tokens": outs}

    return infer


def use_own_libpython() -> None:
    """Make Triton's Python-backend stub load this interpreter's libpython.

    The stub links `libpython3.11.so`; without this the dynamic loader picks the system one,
    which differs from the running interpreter (pyenv) and model loading fails. tritonserver
    inherits os.environ when pytriton starts it, so prepending the libdir here is enough.
    """
    libdir = sysconfig.get_config_var("LIBDIR")
    current = os.environ.get("LD_LIBRARY_PATH", "")
    if libdir and current.split(":")[0] != libdir:
        os.environ["LD_LIBRARY_PATH"] = f"{libdir}:{current}" if current else libdir


def triton_config(settings: PoolSettings) -> TritonConfig:
    """Address and ports from settings; exit_timeout bounds how long shutdown waits for
    in-flight batches."""
    return TritonConfig(
        grpc_port=settings.triton_grpc_port,
        http_port=settings.triton_http_port,
        metrics_port=settings.triton_metrics_port,
        exit_timeout_secs=20,
        grpc_address=settings.triton_address,
        http_address=settings.triton_address,
        metrics_address=settings.triton_address,
    )


def check_ports_free(settings: PoolSettings) -> None:
    """Fail fast on a taken port: pytriton would otherwise wait for, and report ready, whatever
    Triton already listens there (our own tritonserver having exited on the bind error)."""
    for api in ("grpc", "http", "metrics"):
        port = getattr(settings, f"triton_{api}_port")
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("", port))  # the wildcard conflicts with a listener on any address
            except OSError as e:
                raise RuntimeError(f"Triton {api} port {port} is in use ({e.strerror}); "
                                   f"set ARAGOG_TRITON_{api.upper()}_PORT") from e


def bind_models(triton: Triton, settings: PoolSettings) -> tuple[list[str], list[str]]:
    """Bind every pool model and every reserve model (unloaded once Triton runs):
    `instances` engines, served by `batches_per_instance` Triton instances each (so a new
    batch starts while earlier ones decode); return the names of both."""
    data = pool_file(settings.pool_file or None)
    spec = PoolSpec.from_mapping(data)
    reserve = reserve_of(data)
    scale = settings.time_scale or spec.time_scale
    for profile in (*spec.models, *reserve.models):
        engines = [Engine(profile, scale) for _ in range(profile.instances)]
        slots = profile.instances * settings.batches_per_instance
        choosing = threading.Lock()
        triton.bind(
            model_name=profile.name,
            infer_func=[make_infer(engines, choosing) for _ in range(slots)],
            inputs=INPUTS,
            outputs=OUTPUTS,
            config=ModelConfig(
                max_batch_size=profile.saturation_batch,
                batcher=DynamicBatcher(max_queue_delay_microseconds=settings.max_queue_delay_us),
            ),
            strict=True,
        )
    return spec.names, reserve.names


HANDSHAKE_PATCH = """

# --- added by aragog.pool.emulated (patient_handshake) ---------------------------------
# A model's first Triton instance serves this handshake socket; the others connect to it
# as they start. They may start first, or (when Triton loads the model again) find the
# socket file of the instance before, which refuses them: wait for the server instead of
# failing the model's load.
_aragog_get_config = get_config_from_handshake_server


def get_config_from_handshake_server(socket_path, timeout_s=1.0):
    deadline = time.time() + max(timeout_s, 30.0)
    while True:
        try:
            return _aragog_get_config(socket_path, timeout_s=timeout_s)
        except (ConnectionRefusedError, FileNotFoundError, TimeoutError):
            if time.time() > deadline:
                raise
            time.sleep(0.05)
"""


def patient_handshake(model_store: pathlib.Path) -> None:
    """Make the stubs of every model in pytriton's model repository wait for their first
    instance's handshake server (HANDSHAKE_PATCH), so that Triton can load a model again
    after unloading it, and a busy start-up does not fail on the race."""
    for path in model_store.glob("*/*/communication.py"):
        text = path.read_text("utf-8")
        if "aragog_get_config" in text:
            continue
        if "def get_config_from_handshake_server(" not in text or "\nimport time" not in text:
            raise RuntimeError(f"{path}: pytriton's handshake client is not where "
                               "patient_handshake expects it (pytriton changed?)")
        path.write_text(text + HANDSHAKE_PATCH, "utf-8")


def unload(settings: PoolSettings, names: list[str], token: str) -> None:
    """Unload `names` through Triton's model-repository API, as any client with the access
    token would (the reserve: in the repository, not loaded).

    Waits on the repository index, not on readiness: a model Triton is still loading is not
    ready either, and an unload sent then was seen to be lost (the model served afterwards).
    So each model is asked again while the index shows it READY, until every one is unloaded;
    raises if that takes longer than UNLOAD_WAIT_S (the start is then retried)."""
    address = settings.triton_address
    host = "127.0.0.1" if address in ("0.0.0.0", "") else address
    headers = create_auth_headers(token, "grpc")
    with grpcclient.InferenceServerClient(f"{host}:{settings.triton_grpc_port}") as c:
        deadline = time.monotonic() + UNLOAD_WAIT_S
        asked: dict[str, float] = {}
        error = ""
        while True:
            now = time.monotonic()
            try:
                # a model is listed once per version; one with no state was never loaded
                # (Triton tried every start-up load before it reported ready)
                index = c.get_model_repository_index(
                    headers=headers, as_json=True, client_timeout=max(0.1, deadline - now))
                states = {(m["name"], m.get("state")) for m in index.get("models", [])
                          if m["name"] in names}
                pending = sorted({n for n, state in states
                                  if state in ("READY", "LOADING", "UNLOADING")})
                if not pending:
                    return
                for n in pending:
                    if (n, "READY") in states and now - asked.get(n, -1e9) > UNLOAD_RETRY_S:
                        asked[n] = now
                        c.unload_model(n, headers=headers, client_timeout=max(0.1, deadline - now))
                error = "still loaded: " + ", ".join(pending)
            except InferenceServerException as e:  # e.g. a deadline, or a model changing state
                error = str(e)
            if time.monotonic() > deadline:
                raise RuntimeError(f"reserve models not unloaded after {UNLOAD_WAIT_S:g} s "
                                   f"({error})")
            time.sleep(0.05)


class _Stop(BaseException):
    """Raised in the main thread by SIGTERM/SIGINT, also while Triton is still starting."""


def _handle_stop_signals(handler: Callable | signal.Handlers) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, handler)


def _on_signal(signum: int, _frame: object) -> None:
    _handle_stop_signals(signal.SIG_IGN)  # a second signal must not interrupt the shutdown
    raise _Stop(signal.Signals(signum).name)


def _configure_stdlib_logging() -> None:
    """pytriton logs through stdlib logging: render it as JSON lines too (warnings and up,
    its info lines are per-model banners)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.JSONRenderer(),
        ],
        foreign_pre_chain=[structlog.stdlib.add_log_level, structlog.stdlib.add_logger_name],
    ))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)


def serve(settings: PoolSettings) -> None:
    """Serve the emulated pool on Triton until SIGTERM/SIGINT, then stop Triton and its stubs.

    pytriton gives each Triton process its own workspace (~/.cache/pytriton/workspace_*) and a
    pid+random shared-memory prefix, so pools on different ports coexist on one machine.
    """
    configure_logging("pool", settings.log_level)
    _configure_stdlib_logging()
    use_own_libpython()
    # Triton's stubs inherit it. pytriton's shared-memory tensor store does not survive
    # Triton unloading and loading a model again (the proxy keeps the old store's address);
    # without it tensors travel inline, and these are a prompt and a few bytes.
    os.environ["PYTRITON_NO_TENSORSTORE"] = "1"
    t0 = time.monotonic()
    check_ports_free(settings)
    _handle_stop_signals(_on_signal)
    triton = None
    try:
        triton, names, reserve = _start(settings)
        log.info("pool_ready", emulated=True, models=names, reserve=reserve,
                 grpc_port=settings.triton_grpc_port,
                 http_port=settings.triton_http_port, metrics_port=settings.triton_metrics_port,
                 startup_s=round(time.monotonic() - t0, 2))
        while triton.is_alive():
            time.sleep(POLL_S)
        raise RuntimeError("Triton or a model's handler exited unexpectedly")
    except _Stop as stop:
        log.info("pool_stopping", signal=str(stop))
    finally:
        _handle_stop_signals(signal.SIG_IGN)
        if triton is not None:
            triton.stop()
        log.info("pool_stopped")


def _start(settings: PoolSettings) -> tuple[Triton, list[str], list[str]]:
    """Start Triton with the pool's models, retrying a failed start.

    Under load, a model's Python stub sometimes finds pytriton's handshake socket not yet
    listening (ConnectionRefusedError) and the model fails to load; a fresh start succeeds,
    once the load has passed: the attempts back off (1, 2, 4, 8 s; three quick ones in a row
    were seen to fail on a busy 2-core host).
    """
    for attempt in range(1, START_ATTEMPTS + 1):
        triton = Triton(config=triton_config(settings), security_config=TritonSecurityConfig(
            access_token=settings.triton_access_token or None,
            restricted_endpoints=RESTRICTED_ENDPOINTS),
            # models in a model repository on disk, so that Triton's own repository API
            # unloads and loads them again (aragog.scheduler.deployment's `triton` control)
            triton_lifecycle_policy=TritonLifecyclePolicy(local_model_store=True))
        try:
            names, reserve = bind_models(triton, settings)
            patient_handshake(triton._workspace.model_store_path)  # noqa: SLF001
            triton.run()
            if not triton.is_alive():
                raise RuntimeError("Triton exited during start-up (see its log above)")
            if reserve:
                unload(settings, reserve, triton.get_access_token())
            return triton, names, reserve
        except _Stop:
            triton.stop()
            raise
        except Exception:
            triton.stop()
            if attempt == START_ATTEMPTS:
                raise
            log.warning("pool_start_failed_retrying", attempt=attempt, exc_info=True)
            time.sleep(2.0 ** (attempt - 1))
    raise AssertionError("unreachable")
