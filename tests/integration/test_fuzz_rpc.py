"""Every public RPC of the four services, fuzzed through real gRPC against the live stack.

Generated calls (hypothesis; ARAGOG_FUZZ_CALLS of them, 10,000 by default) mix plausible and
hostile fields: ids with separators, control characters and kilobytes of text; workflow YAML
that is random text, random documents, a valid workflow with one field broken, alias bombs
and deep nesting; unknown policies and tenants; lease ids nobody holds; StageSession batches;
and raw bytes that are not a protobuf at all. Each call must:

- answer with a status a client can act on: never UNKNOWN or INTERNAL, within 1 s;
- say why in a bounded message (at most 2 KiB);
- if refused, change nothing: the Redis records the call could touch are as before.
"""

from __future__ import annotations

import os
import time

import grpc
import pytest
import redis
import yaml
from aragog.stack import shipped_workflow
from aragog.v1 import (
    executor_pb2,
    executor_pb2_grpc,
    load_monitor_pb2,
    load_monitor_pb2_grpc,
    router_pb2,
    router_pb2_grpc,
    scheduler_pb2,
    scheduler_pb2_grpc,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.integration

CALLS = int(os.environ.get("ARAGOG_FUZZ_CALLS", "10000"))
SLOW_S = 1.0
MAX_MESSAGE = 2048
NEVER = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL, grpc.StatusCode.DEADLINE_EXCEEDED}

CHAIN = yaml.safe_load(shipped_workflow("chain3"))

# --- strategies -------------------------------------------------------------------------

HOSTILE_IDS = ["", " ", "a" * 300, "x" * 5000, "r:chosen", "r:stages", "r\n", "\x00", "../..",
               "*", "{ns}", "é", "🕷", "r:f", "req", "-1", "0" * 64]
ids = st.one_of(
    st.sampled_from(HOSTILE_IDS),
    st.text(min_size=0, max_size=80),
    st.text(alphabet="abcdefghij0123456789-_:.", min_size=1, max_size=40),
)
free_text = st.one_of(st.text(max_size=200), st.sampled_from(["", "x" * 70000]))
policies = st.one_of(
    st.sampled_from(["", "largest", "cheapest", "any", "aragog", "per-input", "per-input:router",
                     "static:llama3-8b", "static:nope", "routellm:mf@2", "routellm:zz@0.5",
                     "flowcompile:acc>=2", "flowcompile:-1", "agentrouter:x", "largest:extra"]),
    st.text(max_size=40),
)
scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70),
                    st.floats(allow_nan=True), st.text(max_size=30))
documents = st.recursive(
    scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                     st.dictionaries(st.text(max_size=10), inner, max_size=4)),
    max_leaves=12)


@st.composite
def broken_workflow(draw) -> str:
    """The shipped chain with one field broken (or a stage added that breaks it)."""
    spec = yaml.safe_load(yaml.safe_dump(CHAIN))
    spec["id"] = draw(st.one_of(st.just("fz-" + draw(st.text(
        alphabet="abcdefghij0123456789", min_size=1, max_size=12))), ids))
    where = draw(st.sampled_from(["top", "stage"]))
    target = spec if where == "top" else spec["stages"][draw(st.integers(0, 2))]
    key = draw(st.sampled_from(sorted(target) + ["extra", "candidates", "depends_on"]))
    action = draw(st.sampled_from(["drop", "set", "cycle", "unknown_model"]))
    if action == "drop":
        target.pop(key, None)
    elif action == "set":
        target[key] = draw(documents)
    elif action == "cycle":
        spec["stages"][0]["depends_on"] = [spec["stages"][-1]["name"]]
    else:
        target["candidates"] = [draw(st.text(max_size=12))]
    return yaml.safe_dump(spec, allow_unicode=True)


ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=True))
yaml_specs = st.one_of(
    st.text(max_size=300),
    documents.map(lambda d: yaml.safe_dump(d, allow_unicode=True)),
    broken_workflow(),
    st.sampled_from([
        ALIAS_BOMB,
        "description: *i\n" + ALIAS_BOMB,
        "[" * 5000 + "]" * 5000,
        "{a: " * 3000 + "1" + "}" * 3000,
        "id: x\n" * 10,
        "\x00\x01\x02",
        "x" * (2 * 1024 * 1024),
    ]),
)


def _call(kind: str, **fields):
    return (kind, fields)


calls = st.one_of(
    st.builds(lambda y: _call("register", yaml_spec=y), yaml_specs),
    st.just(_call("list_workflows")),
    st.builds(lambda w, i, t, p, r: _call("submit", workflow_id=w, input=i, tenant=t, policy=p,
                                          request_id=r),
              st.one_of(ids, st.just("chain3")), free_text, st.one_of(ids, st.just("")),
              policies, st.one_of(ids, st.just(""))),
    st.builds(lambda r: _call("status", request_id=r), ids),
    st.builds(lambda r: _call("cancel", request_id=r), ids),
    st.builds(lambda r, s, e: _call("acquire", request_id=r, stage=s, executor_id=e),
              ids, st.one_of(ids, st.sampled_from(["draft", "critique", "refine"])), ids),
    st.builds(lambda lease: _call("renew", lease_id=lease), ids),
    st.builds(lambda lease, ok: _call("release", lease_id=lease, success=ok), ids, st.booleans()),
    st.builds(lambda ops: _call("session", ops=ops), st.lists(st.tuples(
        st.integers(0, 2**64 - 1), st.sampled_from(["acquire", "release", "renew", "cancel", "none"]),
        ids), max_size=5)),
    st.just(_call("scheduler_state")),
    st.just(_call("load")),
    st.just(_call("watch_load")),
    st.builds(lambda r: _call("run", request_id=r), ids),
    st.builds(lambda m, b: _call("raw", method=m, body=b), st.sampled_from([
        "/aragog.v1.RouterService/RegisterWorkflow", "/aragog.v1.RouterService/GetRequestStatus",
        "/aragog.v1.RouterService/CancelRequest", "/aragog.v1.SchedulerService/AcquireStage",
        "/aragog.v1.SchedulerService/ReleaseStage", "/aragog.v1.SchedulerService/RenewLease",
        "/aragog.v1.ExecutorService/RunRequest", "/aragog.v1.LoadMonitorService/GetLoad",
    ]), st.binary(max_size=64)),
)


# --- the harness --------------------------------------------------------------------------

class Harness:
    """Channels to every service, and the Redis records a refused call must leave alone."""

    def __init__(self, stack):
        self.stack = stack
        self.channels = {name: stack.channel(addr) for name, addr in (
            ("router", stack.router_addr), ("scheduler", stack.scheduler_addr),
            ("load", stack.load_monitor_addr), ("executor", stack.executors[0].addr))}
        self.router = router_pb2_grpc.RouterServiceStub(self.channels["router"])
        self.scheduler = scheduler_pb2_grpc.SchedulerServiceStub(self.channels["scheduler"])
        self.load = load_monitor_pb2_grpc.LoadMonitorServiceStub(self.channels["load"])
        self.executor = executor_pb2_grpc.ExecutorServiceStub(self.channels["executor"])
        self.r = redis.Redis.from_url(stack.redis_url)
        self.k = stack.namespace
        self.codes: dict[str, int] = {}

    def close(self) -> None:
        for ch in self.channels.values():
            ch.close()
        self.r.close()

    def state(self, fields: dict) -> tuple:
        """What a refused call could have changed: the workflows, the work stream, the
        leases, the tenants' counts, and every record of a request id the call names."""
        p = self.r.pipeline(transaction=False)
        p.hgetall(f"{self.k}:workflows")
        p.xlen(f"{self.k}:work")
        p.hgetall(f"{self.k}:leases")
        p.hgetall(f"{self.k}:tenants")
        rid = fields.get("request_id")
        if isinstance(rid, str) and rid:
            for suffix in ("", ":f", ":chosen", ":stages", ":owner"):
                p.dump(f"{self.k}:req:{rid}{suffix}")
        return tuple(p.execute())

    def quiet(self, timeout_s: float = 60.0) -> None:
        """Wait until no lease is held (no request of an earlier test still runs)."""
        deadline = time.monotonic() + timeout_s
        while self.r.hlen(f"{self.k}:leases") and time.monotonic() < deadline:
            time.sleep(0.2)

    def run(self, kind: str, fields: dict) -> grpc.StatusCode:
        """Make the call; returns its status code (OK when it succeeded)."""
        t = 2 * SLOW_S
        try:
            if kind == "register":
                self.router.RegisterWorkflow(router_pb2.RegisterWorkflowRequest(**fields), timeout=t)
            elif kind == "list_workflows":
                self.router.ListWorkflows(router_pb2.ListWorkflowsRequest(), timeout=t)
            elif kind == "submit":
                stream = self.router.SubmitRequest(router_pb2.SubmitRequestRequest(
                    cancel_on_disconnect=True, **fields), timeout=60)
                t0 = time.monotonic()
                first = next(stream)
                assert time.monotonic() - t0 < SLOW_S, ("slow first event", fields)
                # admitted: drain it, so a running request changes no later call's state
                for _ in stream:
                    pass
                assert first.WhichOneof("event") == "admitted"
            elif kind == "status":
                self.router.GetRequestStatus(router_pb2.GetRequestStatusRequest(**fields), timeout=t)
            elif kind == "cancel":
                self.router.CancelRequest(router_pb2.CancelRequestRequest(**fields), timeout=t)
            elif kind == "acquire":
                self.scheduler.AcquireStage(scheduler_pb2.AcquireStageRequest(**fields), timeout=t)
            elif kind == "renew":
                self.scheduler.RenewLease(scheduler_pb2.RenewLeaseRequest(**fields), timeout=t)
            elif kind == "release":
                self.scheduler.ReleaseStage(scheduler_pb2.ReleaseStageRequest(**fields), timeout=t)
            elif kind == "session":
                self._session(fields["ops"], t)
            elif kind == "scheduler_state":
                self.scheduler.GetSchedulerState(scheduler_pb2.GetSchedulerStateRequest(), timeout=t)
            elif kind == "load":
                self.load.GetLoad(load_monitor_pb2.GetLoadRequest(), timeout=t)
            elif kind == "watch_load":
                stream = self.load.WatchLoad(load_monitor_pb2.WatchLoadRequest(), timeout=t)
                next(stream)
                stream.cancel()
            elif kind == "run":
                self.executor.RunRequest(executor_pb2.RunRequestRequest(**fields), timeout=t)
            elif kind == "raw":
                service = fields["method"].split("/")[1]
                channel = self.channels[{"aragog.v1.RouterService": "router",
                                         "aragog.v1.SchedulerService": "scheduler",
                                         "aragog.v1.ExecutorService": "executor",
                                         "aragog.v1.LoadMonitorService": "load"}[service]]
                channel.unary_unary(fields["method"])(fields["body"], timeout=t)
            else:  # pragma: no cover - the strategy names every kind above
                raise AssertionError(kind)
        except grpc.RpcError as e:
            details = e.details() or ""
            assert e.code() not in NEVER, (kind, fields, e.code(), details[:300])
            assert details, (kind, "a refusal says why")
            assert len(details.encode()) <= MAX_MESSAGE, (kind, len(details))
            return e.code()
        return grpc.StatusCode.OK

    def _session(self, ops, t: float) -> None:
        """One batch of stage operations on a StageSession; read its replies, then close."""
        batch = []
        for ticket, op, value in ops:
            o = scheduler_pb2.StageOp(ticket=ticket)
            if op == "acquire":
                o.acquire.CopyFrom(scheduler_pb2.AcquireStageRequest(
                    request_id=value, stage="draft", executor_id=value))
            elif op == "release":
                o.release.CopyFrom(scheduler_pb2.ReleaseStageRequest(lease_id=value))
            elif op == "renew":
                o.renew.CopyFrom(scheduler_pb2.RenewLeaseRequest(lease_id=value))
            elif op == "cancel":
                o.cancel.CopyFrom(scheduler_pb2.CancelAcquire(acquire_ticket=ticket))
            batch.append(o)
        stream = self.scheduler.StageSession(iter([scheduler_pb2.StageSessionRequest(ops=batch)]),
                                             timeout=t)
        for reply in stream:
            for r in reply.replies:
                if r.WhichOneof("result") == "error":
                    assert r.error.code not in (grpc.StatusCode.UNKNOWN.value[0],
                                                grpc.StatusCode.INTERNAL.value[0]), r
                    assert len(r.error.message.encode()) <= MAX_MESSAGE


@pytest.fixture(scope="module")
def harness(stack):
    stack.register(shipped_workflow("chain3"))
    h = Harness(stack)
    h.quiet()
    yield h
    print(f"fuzz status codes: {h.codes}")
    h.close()


def test_every_public_rpc_answers_fuzzed_calls_with_an_actionable_status(harness):
    slow: list[tuple[str, float]] = []

    @settings(max_examples=CALLS, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(call=calls)
    def one(call):
        kind, fields = call
        before = harness.state(fields)
        t0 = time.monotonic()
        code = harness.run(kind, fields)
        took = time.monotonic() - t0
        harness.codes[code.name] = harness.codes.get(code.name, 0) + 1
        if kind != "submit" or code != grpc.StatusCode.OK:
            if took > SLOW_S:
                slow.append((kind, took))
        if code != grpc.StatusCode.OK:
            assert harness.state(fields) == before, (kind, fields, code, "a refused call changed state")

    one()
    assert sum(harness.codes.values()) >= CALLS
    assert not slow, slow[:10]
