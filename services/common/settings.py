"""Typed settings for every service, read from environment variables prefixed `ARAGOG_`.

One frozen dataclass per service; every field has a type, a default and a doc string
(the README's settings table is generated from them: `python -m aragog.common.settings`).
Tests inject a mapping instead of the process environment.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any, TypeVar, get_type_hints

PREFIX = "ARAGOG_"
T = TypeVar("T", bound="BaseSettings")
LISTEN_DOC = "gRPC address the service listens on (host:port; port 0 picks a free one)."


class SettingsError(ValueError):
    """A setting has a value of the wrong type; the message names the variable."""


def setting(default: Any, doc: str) -> Any:
    """A settings field with its documentation."""
    return dataclasses.field(default=default, metadata={"doc": doc})


def _parse(name: str, raw: str, typ: Any) -> Any:
    try:
        if typ is bool:
            low = raw.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if typ is int:
            return int(raw)
        if typ is float:
            return float(raw)
        return raw
    except ValueError as e:
        raise SettingsError(f"{name}={raw!r} is not a valid {typ.__name__}") from e


@dataclasses.dataclass(frozen=True)
class BaseSettings:
    """Fields every service shares."""

    redis_url: str = setting("redis://127.0.0.1:6379/0", "Redis holding all cluster state.")
    redis_max_connections: int = setting(
        64, "Redis connections one process keeps at most; past it, callers wait for one."
    )
    namespace: str = setting("aragog", "Prefix of every Redis key (lets stacks share a Redis).")
    log_level: str = setting("info", "structlog level: debug, info, warning, error.")
    metrics_port: int = setting(0, "Prometheus metrics port (0: pick a free one, logged at start).")
    rpc_timeout_s: float = setting(10.0, "Deadline of outgoing unary RPCs, seconds.")
    shutdown_grace_s: float = setting(10.0, "On SIGTERM, time in-flight work gets to finish.")
    request_ttl_s: int = setting(86400, "How long a finished request's state stays in Redis.")

    @classmethod
    def from_env(cls: type[T], env: Mapping[str, str] | None = None) -> T:
        """Build from `env` (default os.environ); unknown ARAGOG_ variables are ignored."""
        env = os.environ if env is None else env
        hints = get_type_hints(cls)
        values = {}
        for f in dataclasses.fields(cls):
            var = PREFIX + f.name.upper()
            if var in env:
                values[f.name] = _parse(var, env[var], hints[f.name])
        return cls(**values)

    def to_env(self) -> dict[str, str]:
        """The environment variables that reproduce these settings (for child processes)."""
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            out[PREFIX + f.name.upper()] = str(v).lower() if isinstance(v, bool) else str(v)
        return out


@dataclasses.dataclass(frozen=True)
class RouterSettings(BaseSettings):
    """Router: the front door."""

    listen: str = setting("127.0.0.1:50051", LISTEN_DOC)
    default_policy: str = setting("aragog", "Policy for requests that name none.")
    max_input_bytes: int = setting(65536, "Largest request input accepted, bytes (UTF-8).")
    max_workflow_bytes: int = setting(262144, "Largest workflow YAML accepted, bytes.")
    max_configurations: int = setting(1_000_000, "Largest configuration space a workflow may have.")
    request_timeout_s: float = setting(600.0, "A submit stream gives up waiting after this long.")
    max_queued_requests: int = setting(
        5000, "Unfinished (queued or running) requests admitted at most; past it SubmitRequest "
        "is refused with RESOURCE_EXHAUSTED. 0: no bound."
    )
    max_queued_per_tenant: int = setting(
        1000, "Unfinished requests one tenant may have (requests without a tenant share one "
        "bound); past it SubmitRequest is refused with RESOURCE_EXHAUSTED. 0: no bound."
    )
    retry_after_ms: int = setting(
        1000, "Retry hint of a RESOURCE_EXHAUSTED refusal (trailing metadata retry-after-ms)."
    )
    artifacts_dir: str = setting(
        "", "Trained routers and profiles (aragog-routing build); empty: ~/.cache/aragog/artifacts."
    )
    embedding_model: str = setting(
        "all-MiniLM-L6-v2", "Router's text-embedding model (a sentence-transformers directory)."
    )
    embedding_int8: bool = setting(True, "Quantize the embedding model's weights to int8 (faster).")
    embedding_threads: int = setting(2, "Threads ONNX Runtime uses for one embedding.")
    routing_budget: int = setting(4096, "Configurations the router scores at most per request.")
    routing_overlap: bool = setting(
        True, "Hand a request to executors before F(r) is ready (its first stage may then "
        "run on the largest configuration's model)."
    )


@dataclasses.dataclass(frozen=True)
class SchedulerSettings(BaseSettings):
    """Scheduler: meta-queue, capacity, leases."""

    listen: str = setting("127.0.0.1:50052", LISTEN_DOC)
    beam_width: int = setting(4, "Beam width B of the scheduling round.")
    lease_ttl_s: float = setting(30.0, "A lease not renewed or released within this frees itself.")
    request_cache_size: int = setting(20000, "Idle requests kept in memory between their stages.")
    routing_wait_s: float = setting(
        0.05,
        "A stage whose request is still being routed waits this long for the router's F(r) "
        "before it is placed from the placeholder (the largest configuration); 0: at once.",
    )
    pool_file: str = setting(
        "", "Pool YAML path or a shipped pool (llama3, qwen2.5); empty: the embedded llama3."
    )


@dataclasses.dataclass(frozen=True)
class LoadMonitorSettings(BaseSettings):
    """Load-monitor: observes Triton and the executors."""

    listen: str = setting("127.0.0.1:50053", LISTEN_DOC)
    triton_metrics_url: str = setting(
        "http://127.0.0.1:8002/metrics", "Triton's Prometheus metrics endpoint."
    )
    interval_s: float = setting(0.5, "Seconds between snapshots.")


@dataclasses.dataclass(frozen=True)
class ExecutorSettings(BaseSettings):
    """Executor: runs workflow DAGs."""

    listen: str = setting("127.0.0.1:50054", LISTEN_DOC)
    executor_id: str = setting("", "Consumer name in the work stream; empty: host-pid.")
    scheduler_addr: str = setting("127.0.0.1:50052", "Scheduler gRPC address.")
    triton_url: str = setting("127.0.0.1:8001", "Triton gRPC address (host:port).")
    max_concurrent_requests: int = setting(64, "Requests one executor runs at once.")
    claim_idle_s: float = setting(5.0, "Work idle this long in a dead consumer is claimed.")
    acquire_timeout_s: float = setting(300.0, "Deadline of one AcquireStage call (it waits in queue).")
    stage_timeout_s: float = setting(120.0, "Deadline of one model call.")
    stage_retries: int = setting(3, "Attempts per stage before the request fails.")


@dataclasses.dataclass(frozen=True)
class PoolSettings(BaseSettings):
    """Emulated model pool served by a real Triton (from nvidia-pytriton)."""

    pool_file: str = setting(
        "", "Pool YAML path or a shipped pool (llama3, qwen2.5); empty: the embedded llama3."
    )
    time_scale: float = setting(0.0, "Multiplies every emulated latency; 0 keeps the file's.")
    triton_address: str = setting("127.0.0.1", "Address Triton listens on (0.0.0.0 in a container).")
    triton_grpc_port: int = setting(8001, "Triton gRPC port.")
    triton_http_port: int = setting(8000, "Triton HTTP port.")
    triton_metrics_port: int = setting(8002, "Triton metrics port.")
    max_queue_delay_us: int = setting(2000, "Triton dynamic batcher's wait to fill a batch, us.")
    batches_per_instance: int = setting(
        2, "Triton instances per emulated engine: batches one engine decodes at once."
    )


ALL_SETTINGS: tuple[type[BaseSettings], ...] = (
    RouterSettings,
    SchedulerSettings,
    LoadMonitorSettings,
    ExecutorSettings,
    PoolSettings,
)


def settings_table() -> str:
    """Markdown table of every setting, for the README."""
    rows = ["| variable | services | type | default | meaning |", "|---|---|---|---|---|"]
    defaults: dict[str, dict[str, str]] = {}
    info: dict[str, tuple[str, str]] = {}
    for cls in ALL_SETTINGS:
        service = cls.__name__.removesuffix("Settings").replace("LoadMonitor", "load-monitor").lower()
        hints = get_type_hints(cls)
        for f in dataclasses.fields(cls):
            var = PREFIX + f.name.upper()
            defaults.setdefault(var, {})[service] = f"`{f.default!r}`"
            info.setdefault(var, (hints[f.name].__name__, f.metadata["doc"]))
    for var, per_service in defaults.items():
        typ, doc = info[var]
        who = "all" if len(per_service) == len(ALL_SETTINGS) else ", ".join(per_service)
        values = set(per_service.values())
        default = values.pop() if len(values) == 1 else "; ".join(
            f"{svc} {v}" for svc, v in per_service.items())
        rows.append(f"| `{var}` | {who} | {typ} | {default} | {doc} |")
    return "\n".join(rows)


def update_readme(path: str) -> None:
    """Rewrite the table between the README's settings markers."""
    import pathlib
    import re

    readme = pathlib.Path(path)
    text = re.sub(r"(<!-- settings:start -->\n).*?(\n<!-- settings:end -->)",
                  lambda m: m.group(1) + settings_table() + m.group(2), readme.read_text(), flags=re.S)
    readme.write_text(text)


if __name__ == "__main__":
    import sys

    if len(sys.argv) > 1:
        update_readme(sys.argv[1])
    else:
        print(settings_table())
