"""The EMULATED model pool: one real Triton model per pool model, served by nvidia-pytriton.

There are no LLM weights on these machines. Each model's batches wait for the time its latency
profile gives (`ModelProfile.batch_latency_s` x time scale) on an emulated engine that batches
continuously, as the vLLM-class servers the profiles were measured on do (`Engine`), and
return the deterministic `answer()`. Everything around it is real: Triton's dynamic batcher
forms the batches, and several Triton instances per engine (each its own pytriton handler
thread; a waiting thread releases the GIL) let a batch start while others decode. Triton's
gRPC/HTTP APIs and Prometheus metrics serve clients and the load-monitor.

Model I/O contract (the executor relies on it; batch dimension first since max_batch_size > 0):
    inputs   prompt BYTES [1], stage BYTES [1], output_tokens INT32 [1]
    outputs  text BYTES [1], completion_tokens INT32 [1]
"""

from __future__ import annotations

import hmac
import itertools
import json
import logging
import os
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
    TritonSecurityConfig,
)

from aragog.common.logs import configure_logging
from aragog.common.pool import ModelProfile, PoolSpec, PoolSpecError, load_pool
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
CONTROL_MODEL = "aragog-pool-control"  # PoolControl's door; the scheduler's deployment calls it
CONTROL_INPUTS = [Tensor(name=n, dtype=bytes, shape=(1,))
                  for n in ("token", "action", "model", "profile")]
CONTROL_OUTPUTS = [Tensor(name="status", dtype=bytes, shape=(1,))]
UNLOAD_WAIT_S = 30.0
UNLOAD_SETTLE_S = 2.0  # an unloaded model's stub finalizes before the model is bound again
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


def bind_model(triton: Triton, profile: ModelProfile, settings: PoolSettings, scale: float) -> None:
    """Bind one pool model (loaded at once if Triton runs): `instances` engines, served by
    `batches_per_instance` Triton instances each (so a new batch starts while earlier ones
    decode)."""
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


def bind_models(triton: Triton, settings: PoolSettings) -> tuple[list[str], PoolControl | None]:
    """Bind every pool model, and the control model if there is an access token; return
    the pool's names and the control."""
    spec = load_pool(settings.pool_file or None)
    scale = settings.time_scale or spec.time_scale
    for profile in spec.models:
        bind_model(triton, profile, settings, scale)
    control = None
    if settings.triton_access_token:
        control = PoolControl(triton, settings, spec)
        triton.bind(model_name=CONTROL_MODEL, infer_func=control.infer, inputs=CONTROL_INPUTS,
                    outputs=CONTROL_OUTPUTS, config=ModelConfig(max_batch_size=1), strict=True)
    return spec.names, control


class PoolControl:
    """The embedded pool's own deployment: unload, load again and add models while Triton
    serves. The scheduler's `embedded` model control (aragog.scheduler.deployment) calls it
    through CONTROL_MODEL, with the pool's access token (ARAGOG_TRITON_ACCESS_TOKEN), after it
    has drained the model of stages.

    pytriton cannot have Triton reload a model it bound (its proxy dies with the model's
    stub), so an unload forgets the binding and a load binds the model anew. That works
    only without pytriton's shared-memory tensor store (a new store at the old one's
    address refuses the proxy), so the pool passes tensors inline (PYTRITON_NO_TENSORSTORE:
    its tensors are a prompt and a few bytes).
    """

    def __init__(self, triton: Triton, settings: PoolSettings, spec: PoolSpec):
        self.triton = triton
        self.settings = settings
        self.scale = settings.time_scale or spec.time_scale
        self.profiles = {m.name: m for m in spec.models}
        self.token = settings.triton_access_token.encode()
        self._lock = threading.Lock()  # one change at a time
        self._unloaded: dict[str, float] = {}  # model -> when it was unloaded (monotonic)

    def alive(self) -> bool:
        """Triton and every model bound are alive (not asked while a model is being bound:
        its handlers start only once Triton has loaded it)."""
        with self._lock:
            return self.triton.is_alive()

    @batch
    def infer(self, token: np.ndarray, action: np.ndarray, model: np.ndarray,
              profile: np.ndarray) -> dict:
        out = []
        for t, a, m, p in zip(token.reshape(-1), action.reshape(-1), model.reshape(-1),
                              profile.reshape(-1), strict=True):
            out.append(self.handle(bytes(t), bytes(a).decode(), bytes(m).decode(),
                                   bytes(p).decode()).encode())
        return {"status": np.array(out, dtype=np.object_).reshape(-1, 1)}

    def handle(self, token: bytes, action: str, name: str, profile_json: str) -> str:
        """Do `action` (unload, load, add) on model `name`; "ok", or why not."""
        if not hmac.compare_digest(token, self.token):
            return "refused: wrong access token"
        with self._lock:
            try:
                if action == "unload":
                    return self._unload(name)
                if action == "load":
                    if name not in self.profiles:
                        return f"no model {name!r} in this pool"
                    return self._load(self.profiles[name])
                if action == "add":
                    spec = PoolSpec.from_mapping({"models": [json.loads(profile_json)]})
                    profile = spec.models[0]
                    if profile.name != name or name == CONTROL_MODEL:
                        return f"the profile's name must be {name!r}, not a reserved name"
                    if name in self.profiles:
                        return f"model {name!r} is already in this pool"
                    status = self._load(profile)
                    if status == "ok":
                        self.profiles[name] = profile
                    return status
                return f"unknown action {action!r}"
            except (PoolSpecError, ValueError) as e:
                return f"bad profile: {e}"
            except Exception as e:  # Triton refused: say so to the scheduler, keep serving
                log.exception("pool_control_failed", action=action, model=name)
                return f"failed: {e}"

    def _binding(self, name: str):  # pytriton's Model object of `name`, or None
        return self.triton._model_manager._models.get((name.lower(), 1))  # noqa: SLF001

    def _load(self, profile: ModelProfile) -> str:
        if self._binding(profile.name) is not None:
            return "ok"  # loaded already
        settle = self._unloaded.get(profile.name, 0.0) + UNLOAD_SETTLE_S - time.monotonic()
        if settle > 0:  # the old binding's stub may still be finalizing
            time.sleep(settle)
        for attempt in range(1, START_ATTEMPTS + 1):
            try:
                bind_model(self.triton, profile, self.settings, self.scale)
                break
            except Exception:  # the handshake race _start retries too: forget it, try again
                failed = self._binding(profile.name)
                if failed is not None:
                    failed.clean()
                    del self.triton._model_manager._models[(profile.name.lower(), 1)]  # noqa: SLF001
                if attempt == START_ATTEMPTS:
                    raise
                log.warning("pool_model_load_retrying", model=profile.name, attempt=attempt)
                time.sleep(2.0 ** (attempt - 1))
        log.info("pool_model_loaded", model=profile.name)
        return "ok"

    def _unload(self, name: str) -> str:
        model = self._binding(name)
        if model is None:
            return "ok"  # unloaded already
        with model._observers_lock:  # noqa: SLF001 - its stub's exit must not stop Triton
            model._model_events_observers.clear()  # noqa: SLF001
        address = self.settings.triton_address
        host = "127.0.0.1" if address in ("0.0.0.0", "") else address
        headers = create_auth_headers(self.settings.triton_access_token, "grpc")
        with grpcclient.InferenceServerClient(f"{host}:{self.settings.triton_grpc_port}") as c:
            c.unload_model(name, headers=headers)
            deadline = time.monotonic() + UNLOAD_WAIT_S
            while c.is_model_ready(name) and time.monotonic() < deadline:
                time.sleep(0.05)
        model.clean()
        del self.triton._model_manager._models[(name.lower(), 1)]  # noqa: SLF001
        self._unloaded[name] = time.monotonic()
        log.info("pool_model_unloaded", model=name)
        return "ok"


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
    os.environ["PYTRITON_NO_TENSORSTORE"] = "1"  # Triton's stubs inherit it: PoolControl
    t0 = time.monotonic()
    check_ports_free(settings)
    _handle_stop_signals(_on_signal)
    triton = None
    try:
        triton, names, control = _start(settings)
        log.info("pool_ready", emulated=True, models=names, grpc_port=settings.triton_grpc_port,
                 http_port=settings.triton_http_port, metrics_port=settings.triton_metrics_port,
                 startup_s=round(time.monotonic() - t0, 2))
        while control.alive() if control else triton.is_alive():
            time.sleep(POLL_S)
        raise RuntimeError("Triton or a model's handler exited unexpectedly")
    except _Stop as stop:
        log.info("pool_stopping", signal=str(stop))
    finally:
        _handle_stop_signals(signal.SIG_IGN)
        if triton is not None:
            triton.stop()
        log.info("pool_stopped")


def _start(settings: PoolSettings) -> tuple[Triton, list[str], PoolControl | None]:
    """Start Triton with the pool's models, retrying a failed start.

    Under load, a model's Python stub sometimes finds pytriton's handshake socket not yet
    listening (ConnectionRefusedError) and the model fails to load; a fresh start succeeds,
    once the load has passed: the attempts back off (1, 2, 4, 8 s; three quick ones in a row
    were seen to fail on a busy 2-core host).
    """
    for attempt in range(1, START_ATTEMPTS + 1):
        triton = Triton(config=triton_config(settings), security_config=TritonSecurityConfig(
            access_token=settings.triton_access_token or None,
            restricted_endpoints=RESTRICTED_ENDPOINTS))
        try:
            names, control = bind_models(triton, settings)
            triton.run()
            if not triton.is_alive():
                raise RuntimeError("Triton exited during start-up (see its log above)")
            return triton, names, control
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
