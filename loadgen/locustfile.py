"""Locust user for Aragog: closed-loop load on the router, with Locust's live charts.

Each `AragogUser` sends requests one after another (no wait) over a synchronous gRPC
client, taking items of the workload in turn (shared across users), and reports each as a
Locust request named "<workflow>/<policy>": failed, timed-out, rejected and errored
requests count as Locust failures; a wrong answer does not (it is a quality figure, not a
load one). For evaluations with fixed arrival times use aragog.loadgen.runner (open loop).

Open the web UI on a running stack::

    make up            # prints the router address (127.0.0.1:PORT) and registers chain3
    LOCUSTFILE=$(.venv/bin/python -c \\
        'import aragog.loadgen, os; print(os.path.dirname(aragog.loadgen.__file__))')/locustfile.py
    .venv/bin/locust -f "$LOCUSTFILE" --host 127.0.0.1:PORT --web-host 127.0.0.1

then browse http://127.0.0.1:8089, choose users and ramp-up (the Aragog options are in the
start form's advanced options) and start. Headless, e.g. for CI::

    .venv/bin/locust -f "$LOCUSTFILE" --host 127.0.0.1:PORT --headless -u 4 -r 4 -t 30s --csv out

Options (or environment variables): --aragog-workload / ARAGOG_LOADGEN_WORKLOAD, a JSONL or
CSV file of workflow, input, expected, policy (aragog.loadgen.workload; default: a few
questions on chain3); --aragog-policy / ARAGOG_LOADGEN_POLICY overrides the items' policy;
--aragog-timeout / ARAGOG_LOADGEN_TIMEOUT_S is each request's deadline (s); --aragog-ca /
ARAGOG_LOADGEN_CA_FILE, a PEM root certificate, when the router speaks TLS. The host must be
loopback.
"""

import grpc.experimental.gevent as grpc_gevent

grpc_gevent.init_gevent()  # before any channel exists; Locust has already patched gevent

import itertools  # noqa: E402
import os  # noqa: E402

from aragog.loadgen.client import RouterClient  # noqa: E402
from aragog.loadgen.workload import WorkItem, load_workload  # noqa: E402
from locust import User, constant, events, task  # noqa: E402

# chain3 has no routing artifacts, so its items name a policy that needs none (`aragog` would
# refuse them with FAILED_PRECONDITION); --aragog-policy still overrides it
DEFAULT_WORKLOAD = [WorkItem("chain3", q, policy="any") for q in (
    "What is the capital of Australia?",
    "Why does ice float on water?",
    "Who wrote the novel Middlemarch?",
    "What does the HTTP status 429 mean?",
)]
_workloads: dict[str, list[WorkItem]] = {}
_turn = itertools.count()


@events.init_command_line_parser.add_listener
def _options(parser) -> None:
    parser.add_argument("--aragog-workload", default="", env_var="ARAGOG_LOADGEN_WORKLOAD",
                        help="JSONL/CSV workload file (workflow, input, expected, policy)")
    parser.add_argument("--aragog-policy", default="", env_var="ARAGOG_LOADGEN_POLICY",
                        help="routing policy for every request "
                             "(default: each item's, else the router's)")
    parser.add_argument("--aragog-timeout", type=float, default=120.0,
                        env_var="ARAGOG_LOADGEN_TIMEOUT_S",
                        help="deadline of one request, seconds")
    parser.add_argument("--aragog-ca", default="", env_var="ARAGOG_LOADGEN_CA_FILE",
                        help="PEM root certificate to trust: the router speaks TLS")


def workload(path: str) -> list[WorkItem]:
    """The workload file's items, read once per path (the web UI may change it between runs)."""
    if path not in _workloads:
        _workloads[path] = load_workload(os.path.expanduser(path)) if path else DEFAULT_WORKLOAD
    return _workloads[path]


class AragogUser(User):
    """Submits one request at a time to the router at --host and waits for its answer."""

    host = "127.0.0.1:50051"  # the router's default listen address
    wait_time = constant(0)

    def on_start(self) -> None:
        opts = self.environment.parsed_options
        self.items = workload(getattr(opts, "aragog_workload", "") or "")
        self.policy = getattr(opts, "aragog_policy", "") or None
        timeout_s = float(getattr(opts, "aragog_timeout", 120.0))
        ca = getattr(opts, "aragog_ca", "")
        root = open(ca, "rb").read() if ca else None  # noqa: SIM115 - read once, small
        self.client = RouterClient(self.host, timeout_s=timeout_s, tenant="locust",
                                   root_certificates=root)

    def on_stop(self) -> None:
        self.client.close()

    @task
    def submit(self) -> None:
        item = self.items[next(_turn) % len(self.items)]
        policy = self.policy or item.policy or ""
        rec = self.client.submit(item.workflow, item.input, policy=policy, expected=item.expected)
        self.environment.events.request.fire(
            request_type="grpc",
            name=f"{item.workflow}/{policy or 'default'}",
            response_time=rec.latency_s * 1000.0,
            response_length=len(rec.answer),
            exception=None if rec.status == "ok" else RuntimeError(
                f"{rec.status}: {rec.grpc_code + ' ' if rec.grpc_code else ''}{rec.error}"),
            context={"request_id": rec.request_id, "models": [s.model for s in rec.stages],
                     "correct": rec.correct, "gpu_seconds": rec.gpu_seconds},
            start_time=rec.sent_at,
        )
