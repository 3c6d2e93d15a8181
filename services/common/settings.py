"""Typed settings for every service, read from environment variables prefixed `ARAGOG_`.

One frozen dataclass per service; every field has a type, a default, a doc string and, where
a value can be wrong, its range or choices, checked when the settings are built: a service
with a bad setting stops at start with a message naming the variable. An `ARAGOG_` variable
no settings class knows (a misspelling) is warned about. The README's settings table is
generated from the classes (`python -m aragog.common.settings`). Tests inject a mapping
instead of the process environment.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Mapping
from typing import Any, TypeVar, get_type_hints

PREFIX = "ARAGOG_"
T = TypeVar("T", bound="BaseSettings")
LISTEN_DOC = "gRPC address the service listens on (host:port; port 0 picks a free one)."
TRITON_ACCESS_TOKEN_DOC = ("Access token of Triton's model-repository API (the embedded "
                           "pool's: aragog-pool takes it, or generates one if empty).")


OTHER_VARIABLES = frozenset({
    "ARAGOG_TEST_REDIS_URL", "ARAGOG_TEST_TRITON_URL",  # tests/conftest.py
    "ARAGOG_FUZZ_CALLS",  # tests/integration/test_fuzz_rpc.py
    "ARAGOG_TORCH_VERSION",  # scripts/bootstrap.sh
    "ARAGOG_LOADGEN_POLICY", "ARAGOG_LOADGEN_TIMEOUT_S", "ARAGOG_LOADGEN_WORKLOAD",  # locustfile
    "ARAGOG_ROUTER", "ARAGOG_TOKEN",  # the aragog command (aragog.client.cli)
    "ARAGOG_TLS_SERVER_NAME",  # infra/healthcheck.py (the image's health probe)
})
"""`ARAGOG_` variables read outside the services' settings (not misspellings)."""


class SettingsError(ValueError):
    """A setting has a value of the wrong type or out of range; the message names the
    variable and what it accepts."""


class UnknownSettingWarning(UserWarning):
    """An ARAGOG_ variable that no service reads: probably a misspelling."""


def setting(default: Any, doc: str, *, at_least: float | None = None,
            above: float | None = None, at_most: float | None = None,
            choices: tuple[str, ...] = (), secret: bool = False) -> Any:
    """A settings field with its documentation and what values it accepts (`secret`: kept
    out of the settings' repr, so no log line shows it)."""
    return dataclasses.field(default=default, repr=not secret, metadata={
        "doc": doc, "at_least": at_least, "above": above, "at_most": at_most, "choices": choices})


def _check(var: str, value: Any, meta: Mapping[str, Any]) -> None:
    low, above, high, choices = meta["at_least"], meta["above"], meta["at_most"], meta["choices"]
    if choices and value not in choices:
        raise SettingsError(f"{var}={value!r}: must be one of {', '.join(choices)}")
    if low is not None and value < low:
        raise SettingsError(f"{var}={value!r}: must be at least {low:g}")
    if above is not None and not value > above:
        raise SettingsError(f"{var}={value!r}: must be more than {above:g}")
    if high is not None and value > high:
        raise SettingsError(f"{var}={value!r}: must be at most {high:g}")


def known_variables() -> set[str]:
    return {PREFIX + f.name.upper() for cls in ALL_SETTINGS for f in dataclasses.fields(cls)}


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
        64, "Redis connections one process keeps at most; past it, callers wait for one.",
        at_least=1)
    namespace: str = setting("aragog", "Prefix of every Redis key (lets stacks share a Redis).")
    log_level: str = setting("info", "structlog level: debug, info, warning, error.",
                             choices=("debug", "info", "warning", "error"))
    metrics_port: int = setting(0, "Prometheus metrics port (0: pick a free one, logged at start).",
                                at_least=0, at_most=65535)
    metrics_address: str = setting(
        "127.0.0.1", "Address the metrics endpoint binds (0.0.0.0 for a scraper in another "
        "container or pod).")
    rpc_timeout_s: float = setting(10.0, "Deadline of outgoing unary RPCs, seconds.", above=0)
    shutdown_grace_s: float = setting(10.0, "On SIGTERM, time in-flight work gets to finish.",
                                      at_least=0)
    request_ttl_s: int = setting(86400, "How long a finished request's state stays in Redis.",
                                 at_least=1)
    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            _check(PREFIX + f.name.upper(), getattr(self, f.name), f.metadata)

    @classmethod
    def from_env(cls: type[T], env: Mapping[str, str] | None = None) -> T:
        """Build from `env` (default os.environ), checked; warn of ARAGOG_ variables that no
        service reads."""
        env = os.environ if env is None else env
        hints = get_type_hints(cls)
        values = {}
        for f in dataclasses.fields(cls):
            var = PREFIX + f.name.upper()
            if var in env:
                values[f.name] = _parse(var, env[var], hints[f.name])
        unknown = sorted(v for v in env if v.startswith(PREFIX)
                         and v not in known_variables() and v not in OTHER_VARIABLES)
        if unknown:
            warnings.warn(f"unknown settings {', '.join(unknown)} (misspelled? the README's "
                          "settings table lists every ARAGOG_ variable)", UnknownSettingWarning,
                          stacklevel=2)
        return cls(**values)

    @classmethod
    def for_service(cls: type[T], prog: str) -> T:
        """`from_env` for a service's entry point: a bad setting stops it with one line."""
        try:
            return cls.from_env()
        except SettingsError as e:
            raise SystemExit(f"{prog}: {e}") from None

    def to_env(self) -> dict[str, str]:
        """The environment variables that reproduce these settings (for child processes)."""
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            out[PREFIX + f.name.upper()] = str(v).lower() if isinstance(v, bool) else str(v)
        return out


@dataclasses.dataclass(frozen=True)
class ServiceSettings(BaseSettings):
    """Fields the four gRPC services share: TLS on their ports and between them."""

    tls_cert_file: str = setting(
        "", "PEM certificate (chain) of this service's gRPC port; with ARAGOG_TLS_KEY_FILE the "
        "port speaks TLS, and executors present it to the scheduler. Empty: plaintext.")
    tls_key_file: str = setting("", "PEM private key of ARAGOG_TLS_CERT_FILE.")
    tls_ca_file: str = setting(
        "", "PEM CA certificates: the scheduler, load-monitor and executors then accept only "
        "callers with a client certificate it signed (mutual TLS), and executors check the "
        "scheduler's certificate by it. The router never asks for client certificates.")
    otel_endpoint: str = setting(
        "", "OpenTelemetry: the OTLP/gRPC collector (host:port) this service sends its trace "
        "spans to (one trace per request across the services). Empty: no tracing.")
    otel_insecure: bool = setting(True, "Speak plaintext to ARAGOG_OTEL_ENDPOINT (false: TLS "
                                  "with the system's root certificates).")


@dataclasses.dataclass(frozen=True)
class RouterSettings(ServiceSettings):
    """Router: the front door."""

    listen: str = setting("127.0.0.1:50051", LISTEN_DOC)
    default_policy: str = setting("aragog", "Policy for requests that name none.")
    llm_workflow: str = setting(
        "", "Workflow (one LLM stage, typically) that runs a request naming no workflow when "
        "no registered workflow's intent fits it (the front door's single-model route); "
        "empty: such a request is refused.")
    auth_tokens_file: str = setting(
        "",
        "File of `<token> <tenant>` lines: every router call then needs `authorization: "
        "Bearer <token>` and sees only its tenant's requests; empty: no authentication.")
    max_input_bytes: int = setting(65536, "Largest request input accepted, bytes (UTF-8).",
                                   at_least=1)
    max_workflow_bytes: int = setting(262144, "Largest workflow YAML accepted, bytes.",
                                      at_least=1)
    max_configurations: int = setting(1_000_000, "Largest configuration space a workflow may have.",
                                      at_least=1)
    request_timeout_s: float = setting(600.0, "A submit stream gives up waiting after this long.",
                                       above=0)
    max_queued_requests: int = setting(
        5000, "Unfinished (queued or running) requests admitted at most; past it SubmitRequest "
        "is refused with RESOURCE_EXHAUSTED. 0: no bound.", at_least=0
    )
    max_queued_per_tenant: int = setting(
        1000, "Unfinished requests one tenant may have (requests without a tenant share one "
        "bound); past it SubmitRequest is refused with RESOURCE_EXHAUSTED. 0: no bound.", at_least=0
    )
    retry_after_ms: int = setting(
        1000, "Retry hint of a RESOURCE_EXHAUSTED refusal (trailing metadata retry-after-ms).",
        at_least=0)
    artifacts_dir: str = setting(
        "", "Trained routers and profiles (aragog-routing build); empty: ~/.cache/aragog/artifacts."
    )
    embedding_model: str = setting(
        "all-MiniLM-L6-v2", "Router's text-embedding model (a sentence-transformers directory)."
    )
    embedding_int8: bool = setting(True, "Quantize the embedding model's weights to int8 (faster).")
    embedding_threads: int = setting(2, "Threads ONNX Runtime uses for one embedding.", at_least=1)
    routing_budget: int = setting(4096, "Configurations the router scores at most per request.",
                                  at_least=1)
    http_listen: str = setting(
        "", "HTTP/JSON and OpenAI-compatible front door, host:port (empty: off); it calls the "
        "router's gRPC port, so ARAGOG_LISTEN must name a fixed port.")
    routing_overlap: bool = setting(
        True, "Hand a request to executors before F(r) is ready (its first stage may then "
        "run on the largest configuration's model)."
    )


@dataclasses.dataclass(frozen=True)
class SchedulerSettings(ServiceSettings):
    """Scheduler: meta-queue, capacity, leases."""

    listen: str = setting("127.0.0.1:50052", LISTEN_DOC)
    beam_width: int = setting(4, "Beam width B of the scheduling round.", at_least=1)
    lease_ttl_s: float = setting(30.0, "A lease not renewed or released within this frees itself.",
                                 above=0)
    request_cache_size: int = setting(20000, "Idle requests kept in memory between their stages.",
                                      at_least=0)
    routing_wait_s: float = setting(
        0.05,
        "A stage whose request is still being routed waits this long for the router's F(r) "
        "before it is placed from the placeholder (the largest configuration); 0: at once.",
        at_least=0,
    )
    pool_file: str = setting(
        "",
        "Pool YAML path or a shipped pool (llama3, qwen2.5, mmlu-recorded); empty: the embedded "
        "llama3.",
    )
    placement: str = setting(
        "cost-first",
        "How a round places stages. cost-first: each request's cheapest configurations first, "
        "then dearer models only in capacity no queued stage wanted; work-conserving: any "
        "configuration of C(r), ranked by the throughput a placement adds now.",
        choices=("cost-first", "work-conserving"),
    )
    leader_ttl_s: float = setting(
        5.0,
        "The active scheduler's leadership lease in Redis: a standby takes over at most this "
        "long (plus a third) after the active one dies.",
        above=0,
    )
    eject_after_failures: int = setting(
        5,
        "Consecutive failed model calls (errors or timeouts reported by executors) after "
        "which a model is ejected from placement; 0: never eject.",
        at_least=0,
    )
    model_control: str = setting(
        "none",
        "How the scheduler loads and unloads models it is asked to (UnloadModel, LoadModel, "
        "AddModel). none: it only stops and starts placing stages on them (Triton is the "
        "operator's); triton: through Triton's model-repository API at ARAGOG_TRITON_URL "
        "(explicit model control; the embedded pool's takes ARAGOG_TRITON_ACCESS_TOKEN).",
        choices=("none", "triton"))
    triton_url: str = setting("127.0.0.1:8001", "Triton gRPC address (host:port).")
    triton_access_token: str = setting("", TRITON_ACCESS_TOKEN_DOC, secret=True)
    deployment_window_s: float = setting(
        0.0, "StageRoute's maintenance window: at the start of each, the scheduler keeps "
        "ARAGOG_MAX_DEPLOYED models deployed, chosen from the outcomes reported so far, and "
        "unloads the others (the policy stageroute routes among them). 0: off.", at_least=0)
    max_deployed: int = setting(2, "StageRoute's M_max: models deployed at once.", at_least=1)
    deployment_budget: float = setting(
        0.5, "StageRoute's budget per request, as a share of the dearest model's cost.",
        above=0, at_most=1)
    eject_s: float = setting(
        10.0,
        "How long a model's first ejection lasts; each further ejection without a success "
        "between doubles it, up to 30 times this.",
        above=0,
    )


@dataclasses.dataclass(frozen=True)
class LoadMonitorSettings(ServiceSettings):
    """Load-monitor: observes Triton and the executors."""

    listen: str = setting("127.0.0.1:50053", LISTEN_DOC)
    triton_metrics_url: str = setting(
        "http://127.0.0.1:8002/metrics", "Triton's Prometheus metrics endpoint."
    )
    interval_s: float = setting(0.5, "Seconds between snapshots.", above=0)


@dataclasses.dataclass(frozen=True)
class ExecutorSettings(ServiceSettings):
    """Executor: runs workflow DAGs."""

    listen: str = setting("127.0.0.1:50054", LISTEN_DOC)
    executor_id: str = setting("", "Consumer name in the work stream; empty: host-pid.")
    scheduler_addr: str = setting(
        "127.0.0.1:50052",
        "Scheduler gRPC address; several, comma-separated, for an active scheduler and its "
        "standbys (a refused or broken stream moves on to the next).")
    triton_url: str = setting("127.0.0.1:8001", "Triton gRPC address (host:port).")
    max_concurrent_requests: int = setting(64, "Requests one executor runs at once.", at_least=1)
    claim_idle_s: float = setting(5.0, "Work idle this long in a dead consumer is claimed.",
                                  above=0)
    acquire_timeout_s: float = setting(300.0, "Deadline of one AcquireStage call (it waits in queue).",
                                       above=0)
    stage_timeout_s: float = setting(120.0, "Deadline of one model call.", above=0)
    stage_retries: int = setting(3, "Attempts per stage before the request fails.", at_least=1)


@dataclasses.dataclass(frozen=True)
class PoolSettings(BaseSettings):
    """Emulated model pool served by a real Triton (from nvidia-pytriton)."""

    pool_file: str = setting(
        "",
        "Pool YAML path or a shipped pool (llama3, qwen2.5, mmlu-recorded); empty: the embedded "
        "llama3.",
    )
    time_scale: float = setting(0.0, "Multiplies every emulated latency; 0 keeps the file's.",
                                at_least=0)
    triton_address: str = setting("127.0.0.1", "Address Triton listens on (0.0.0.0 in a container).")
    triton_grpc_port: int = setting(8001, "Triton gRPC port.", at_least=1, at_most=65535)
    triton_http_port: int = setting(8000, "Triton HTTP port.", at_least=1, at_most=65535)
    triton_metrics_port: int = setting(8002, "Triton metrics port.", at_least=1, at_most=65535)
    max_queue_delay_us: int = setting(2000, "Triton dynamic batcher's wait to fill a batch, us.",
                                      at_least=0)
    batches_per_instance: int = setting(
        2, "Triton instances per emulated engine: batches one engine decodes at once.", at_least=1
    )
    triton_access_token: str = setting("", TRITON_ACCESS_TOKEN_DOC, secret=True)


ALL_SETTINGS: tuple[type[BaseSettings], ...] = (
    RouterSettings,
    SchedulerSettings,
    LoadMonitorSettings,
    ExecutorSettings,
    PoolSettings,
)


def _accepts(meta: Mapping[str, Any]) -> str:
    parts = [f">= {meta['at_least']:g}" if meta["at_least"] is not None else "",
             f"> {meta['above']:g}" if meta["above"] is not None else "",
             f"<= {meta['at_most']:g}" if meta["at_most"] is not None else ""]
    text = ", ".join(p for p in parts if p)
    return f" ({text})" if text else ""


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
            info.setdefault(var, (hints[f.name].__name__, f.metadata["doc"] + _accepts(f.metadata)))
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
