"""The whole path on real Redis, a real Triton and the four services over real gRPC."""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import threading
import time
import uuid
import urllib.request

import grpc
import pytest
import redis
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from aragog.stack import shipped_workflow
from aragog.v1 import (
    common_pb2,
    executor_pb2,
    executor_pb2_grpc,
    load_monitor_pb2,
    load_monitor_pb2_grpc,
    router_pb2,
    router_pb2_grpc,
    scheduler_pb2,
    scheduler_pb2_grpc,
)

pytestmark = pytest.mark.integration
MODELS = {"llama3-3b", "llama3-8b", "llama3-70b"}


@pytest.fixture(scope="module")
def chain(stack):
    reg = stack.register(shipped_workflow("chain3"))
    assert reg.configurations == 27  # 3 stages x the 3 pool models
    return reg.workflow.id


def snapshot(stack) -> dict:
    """Every key of the stack's namespace with its value, except the load-monitor's own."""
    client = redis.Redis.from_url(stack.redis_url)
    out = {}
    for key in client.scan_iter(match=f"{stack.namespace}:*"):
        if b":load" in key or b":inflight:" in key:
            continue
        typ = client.type(key)
        out[key] = {
            b"string": client.get, b"hash": client.hgetall, b"stream": client.xrange,
        }.get(typ, lambda k, t=typ: t)(key)
    client.close()
    return out


def settled_snapshot(stack, wait_s: float = 0.2, tries: int = 50) -> dict:
    """snapshot() once the stack has stopped changing it: two readings `wait_s` apart alike.
    An earlier test's request may still be settling (its client has its answer before the
    executor drops its claim), which is not what a test that changes nothing measures."""
    last = snapshot(stack)
    for _ in range(tries):
        time.sleep(wait_s)
        now = snapshot(stack)
        if now == last:
            return now
        last = now
    return last


def final(events):
    assert events[-1].WhichOneof("event") == "completed"
    return events[-1].completed


def test_a_request_runs_end_to_end(stack, chain):
    events, _ = stack.submit(chain, "What is the capital of Australia?", policy="any")
    kinds = [e.WhichOneof("event") for e in events]
    assert kinds[0] == "admitted" and events[0].admitted.configurations == 27
    assert kinds.count("stage_started") == 3 and kinds.count("stage_finished") == 3
    status = final(events)
    assert status.state == common_pb2.REQUEST_STATE_SUCCEEDED, status.error
    assert [s.stage for s in status.stages] == ["draft", "critique", "refine"]
    assert all(s.model in MODELS for s in status.stages)
    assert status.answer == status.stages[-1].output and status.answer
    assert status.viable_configurations == 1
    # stages ran in dependency order: each started after the previous finished
    order = [(e.WhichOneof("event"), e.stage_started.stage or e.stage_finished.stage) for e in events[1:-1]]
    assert order == [("stage_started", "draft"), ("stage_finished", "draft"),
                     ("stage_started", "critique"), ("stage_finished", "critique"),
                     ("stage_started", "refine"), ("stage_finished", "refine")]
    with stack.router() as r:
        got = r.GetRequestStatus(router_pb2.GetRequestStatusRequest(request_id=status.request_id), timeout=5)
    assert got.status.answer == status.answer
    assert [s.model for s in got.status.stages] == [s.model for s in status.stages]


def test_bound_policies_get_their_configuration(stack, chain):
    for policy, models in [("largest", ["llama3-70b"] * 3), ("cheapest", ["llama3-3b"] * 3),
                           ("static:llama3-8b,llama3-70b,llama3-3b", ["llama3-8b", "llama3-70b", "llama3-3b"]),
                           ("per-workflow", ["llama3-70b", "llama3-8b", "llama3-70b"])]:
        status = final(stack.submit(chain, "Why is the sky blue?", policy=policy)[0])
        assert status.state == common_pb2.REQUEST_STATE_SUCCEEDED, status.error
        assert [s.model for s in status.stages] == models, policy
        assert status.admitted_configurations == 1


def test_resubmitting_an_id_reattaches(stack, chain):
    rid = f"re-{uuid.uuid4().hex[:8]}"
    first = final(stack.submit(chain, "first", request_id=rid)[0])
    again = final(stack.submit(chain, "second input is ignored", request_id=rid)[0])
    assert again.answer == first.answer and again.request_id == rid


def submit_with(stack, **fields):
    """SubmitRequest with any fields (stack.submit names only some)."""
    with stack.router() as r:
        return list(r.SubmitRequest(router_pb2.SubmitRequestRequest(**fields), timeout=30))


def alias_bomb(wid: str, field: str, levels: int = 7) -> str:
    """Billion laughs: each anchor names 9 copies of the one before; `field` holds 9**levels."""
    lines = [f"id: {wid}", "l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, levels)]
    lines += [f"{field}: *l{levels - 1}", "stages: [{name: a, prompt: '{input}'}]"]
    return "\n".join(lines) + "\n"


def live_executor(stack):
    return next(p for p in stack.executors if p.popen.poll() is None)


def test_list_workflows(stack, chain):
    with stack.router() as r:
        listed = r.ListWorkflows(router_pb2.ListWorkflowsRequest(), timeout=5)
    assert chain in [w.id for w in listed.workflows]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda s, c: s.submit("no-such-workflow", "hi"), "unknown workflow 'no-such-workflow'"),
        (lambda s, c: s.submit(c, "x" * 70_000), "the limit is 65536"),
        (lambda s, c: s.submit(c, ""), "input is empty"),
        (lambda s, c: s.submit(c, "hi", policy="fastest"), "unknown policy 'fastest'"),
        (lambda s, c: s.submit(c, "hi", policy="static:llama3-8b"), "3 LLM stages"),
        (lambda s, c: s.submit(c, "hi", request_id="bad id!"), "request_id must be"),
        (lambda s, c: s.submit(c, "hi", request_id="ok-id\n"), "request_id must be"),
        (lambda s, c: s.submit(c, "hi", request_id="ok-id:chosen"), "request_id must be"),
        (lambda s, c: s.submit(c + "\n", "hi"), "workflow_id must be"),
        (lambda s, c: submit_with(s, workflow_id=c, input="hi", tenant="t:1"), "tenant must be"),
        (lambda s, c: s.register(alias_bomb("bomb1", "description")), "anchors and aliases"),
        (lambda s, c: s.register(alias_bomb("bomb2", "kind")), "anchors and aliases"),
        (lambda s, c: s.register("id: deep\nstages: " + "[" * 100_000 + "]" * 100_000),
         "nested deeper than"),
        (lambda s, c: s.register(shipped_workflow("chain3").replace("id: chain3", "id: long")
                                 .replace("description:", "description: " + "x" * 2000, 1)),
         "`description` must be a string"),
        (lambda s, c: s.register("id: broken\nstages: [\n"), "does not parse"),
        (lambda s, c: s.register("id: w2\nstages:\n  - {name: a, prompt: '{input}', candidates: [gpt-5]}\n"),
         "not in the pool"),
    ],
    ids=["unknown-workflow", "oversized-input", "empty-input", "unknown-policy", "bad-static",
         "bad-request-id", "request-id-newline", "request-id-key-suffix", "workflow-id-newline",
         "bad-tenant", "alias-bomb-description", "alias-bomb-field", "deep-yaml",
         "long-description", "malformed-yaml", "unknown-model"],
)
def test_bad_input_is_rejected_and_changes_nothing(stack, chain, call, message):
    before = settled_snapshot(stack)
    with pytest.raises(grpc.RpcError) as err:
        call(stack, chain)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in err.value.details()
    assert len(err.value.details()) <= 500
    assert snapshot(stack) == before


def test_ids_naming_other_keys_are_refused_everywhere(stack, chain):
    """`<id>:stages` and `<id>:chosen` are keys of their own: every service refuses them as
    ids (INVALID_ARGUMENT) instead of reading them as requests; unknown requests and leases
    are NOT_FOUND at once. None of it changes Redis."""
    rid = final(stack.submit(chain, "key probe")[0]).request_id
    before = settled_snapshot(stack)
    rpcs = []
    with stack.router() as r:
        for bad in (f"{rid}:stages", f"{rid}:chosen", f"{rid}\n", ""):
            rpcs.append((lambda b=bad: r.GetRequestStatus(
                router_pb2.GetRequestStatusRequest(request_id=b), timeout=5), "INVALID_ARGUMENT"))
        with stack.channel(stack.scheduler_addr) as sch, \
                stack.channel(live_executor(stack).addr) as ex:
            sched = scheduler_pb2_grpc.SchedulerServiceStub(sch)
            run = executor_pb2_grpc.ExecutorServiceStub(ex).RunRequest
            rpcs += [
                (lambda: run(executor_pb2.RunRequestRequest(request_id=f"{rid}:chosen"), timeout=5),
                 "INVALID_ARGUMENT"),
                (lambda: run(executor_pb2.RunRequestRequest(request_id="no-such-request"),
                             timeout=5), "NOT_FOUND"),
                (lambda: sched.AcquireStage(scheduler_pb2.AcquireStageRequest(
                    request_id=f"{rid}:chosen", stage="draft"), timeout=5), "INVALID_ARGUMENT"),
                (lambda: sched.ReleaseStage(scheduler_pb2.ReleaseStageRequest(
                    lease_id=uuid.uuid4().hex), timeout=5), "NOT_FOUND"),
                (lambda: sched.ReleaseStage(scheduler_pb2.ReleaseStageRequest(
                    lease_id="a:b"), timeout=5), "INVALID_ARGUMENT"),
                (lambda: sched.RenewLease(scheduler_pb2.RenewLeaseRequest(
                    lease_id=uuid.uuid4().hex), timeout=5), "NOT_FOUND"),
            ]
            for i, (rpc, code) in enumerate(rpcs):
                with pytest.raises(grpc.RpcError) as err:
                    rpc()
                assert err.value.code().name == code, (i, err.value.details())
    assert snapshot(stack) == before


@pytest.mark.parametrize(
    ("service", "method", "streaming"),
    [
        ("router", "/aragog.v1.RouterService/GetRequestStatus", (False, False)),
        ("router", "/aragog.v1.RouterService/SubmitRequest", (False, True)),
        ("router", "/aragog.v1.RouterService/RegisterWorkflow", (False, False)),
        ("scheduler", "/aragog.v1.SchedulerService/StageSession", (True, True)),
        ("scheduler", "/aragog.v1.SchedulerService/ReleaseStage", (False, False)),
        ("executor", "/aragog.v1.ExecutorService/RunRequest", (False, False)),
    ],
    ids=["router-GetRequestStatus", "router-SubmitRequest", "router-RegisterWorkflow",
         "scheduler-StageSession", "scheduler-ReleaseStage", "executor-RunRequest"],
)
def test_undecodable_request_bytes_are_invalid_argument(stack, chain, service, method, streaming):
    addr = {"router": stack.router_addr, "scheduler": stack.scheduler_addr,
            "executor": live_executor(stack).addr}[service]
    garbage = b"\xff\xff\xff"  # a field tag that never ends: no protobuf message
    before = settled_snapshot(stack)
    with stack.channel(addr) as ch, pytest.raises(grpc.RpcError) as err:
        if streaming == (True, True):
            list(ch.stream_stream(method)(iter([garbage]), timeout=5))
        elif streaming == (False, True):
            list(ch.unary_stream(method)(garbage, timeout=5))
        else:
            ch.unary_unary(method)(garbage, timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    assert "protobuf message" in err.value.details()
    assert snapshot(stack) == before


def test_concurrent_submissions_of_one_id_admit_it_once(stack, chain):
    """5 clients submit one new id at the same instant (three times over): one admission (one
    `admitted` event, one run), the others re-attach; all get the same final answer."""
    trials, clients = 3, 5
    rids = [f"race-{uuid.uuid4().hex[:8]}" for _ in range(trials)]
    channels = [stack.channel(stack.router_addr) for _ in range(trials * clients)]
    try:
        for ch in channels:
            grpc.channel_ready_future(ch).result(timeout=10)
        start = threading.Barrier(len(channels))

        def submit(i: int) -> list:
            request = router_pb2.SubmitRequestRequest(
                workflow_id=chain, input=f"race input {i}", policy="cheapest",
                request_id=rids[i % trials])
            stub = router_pb2_grpc.RouterServiceStub(channels[i])
            start.wait()
            return list(stub.SubmitRequest(request, timeout=120))

        with concurrent.futures.ThreadPoolExecutor(len(channels)) as pool:
            results = list(pool.map(submit, range(len(channels))))
    finally:
        for ch in channels:
            ch.close()
    client = redis.Redis.from_url(stack.redis_url)
    try:
        for t, rid in enumerate(rids):
            finals = [final(results[i]) for i in range(t, len(results), trials)]
            assert len({f.SerializeToString() for f in finals}) == 1, "all get the same status"
            status = final(results[t])
            assert status.state == common_pb2.REQUEST_STATE_SUCCEEDED and status.request_id == rid
            kinds = [router_pb2.SubmitRequestResponse.FromString(fields[b"e"]).WhichOneof("event")
                     for _, fields in client.xrange(f"{stack.namespace}:req:{rid}:events")]
            assert kinds.count("admitted") == 1, kinds
            assert kinds.count("stage_started") == 3 and kinds.count("completed") == 1, kinds
    finally:
        client.close()


def test_scheduler_rejects_unknown_stage_and_request(stack, chain):
    def acquire(rid: str, stage: str, executor: str = "x"):
        with pytest.raises(grpc.RpcError) as err:
            stub.AcquireStage(scheduler_pb2.AcquireStageRequest(
                request_id=rid, stage=stage, executor_id=executor), timeout=5)
        return err.value

    client = redis.Redis.from_url(stack.redis_url)
    with stack.channel(stack.scheduler_addr) as ch:
        stub = scheduler_pb2_grpc.SchedulerServiceStub(ch)
        err = acquire("nope", "draft", "")
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "executor_id" in err.details()
        client.set(f"{stack.namespace}:req:nope:owner", "x")  # as if x had claimed it
        assert acquire("nope", "draft").code() == grpc.StatusCode.NOT_FOUND
        rid = final(stack.submit(chain, "stage check")[0]).request_id
        client.set(f"{stack.namespace}:req:{rid}:owner", "x")
        err = acquire(rid, "nostage")
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "LLM stages: draft, critique, refine" in err.details()
    client.delete(f"{stack.namespace}:req:nope:owner", f"{stack.namespace}:req:{rid}:owner")
    client.close()


def test_only_the_executor_running_a_request_places_its_stages(stack, chain):
    """No caller leases capacity for a request it does not run (issue 16, item 3): not for
    one an executor runs, not for one that ended."""
    rid = final(stack.submit(chain, "whose request")[0]).request_id

    def refused(executor: str) -> str:
        with pytest.raises(grpc.RpcError) as err:
            stub.AcquireStage(scheduler_pb2.AcquireStageRequest(
                request_id=rid, stage="draft", executor_id=executor), timeout=5)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        return err.value.details()

    with stack.channel(stack.scheduler_addr) as ch:
        stub = scheduler_pb2_grpc.SchedulerServiceStub(ch)
        client = redis.Redis.from_url(stack.redis_url)
        # its executor gives up ownership just after the request's end (which the client saw)
        deadline = time.monotonic() + 10
        while client.exists(f"{stack.namespace}:req:{rid}:owner") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "no executor does: it has ended" in refused("intruder")
        client.set(f"{stack.namespace}:req:{rid}:owner", "someone")  # as if running
        assert "(executor 'someone' does)" in refused("intruder")
        client.delete(f"{stack.namespace}:req:{rid}:owner")
        client.close()
        state = stub.GetSchedulerState(scheduler_pb2.GetSchedulerStateRequest(), timeout=5)
        assert state.queued_stages == 0


def test_every_service_serves_reflection_and_health(stack):
    expected = {
        stack.router_addr: "aragog.v1.RouterService",
        stack.scheduler_addr: "aragog.v1.SchedulerService",
        stack.load_monitor_addr: "aragog.v1.LoadMonitorService",
        stack.executors[0].addr: "aragog.v1.ExecutorService",
    }
    for addr, service in expected.items():
        with stack.channel(addr) as ch:
            stub = reflection_pb2_grpc.ServerReflectionStub(ch)
            responses = stub.ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5)
            names = {s.name for r in responses for s in r.list_services_response.service}
        assert {service, "grpc.health.v1.Health"} <= names, addr


def metrics_port(proc) -> int:
    with open(proc.log_path) as f:
        for line in f:
            if line.startswith("{") and '"serving"' in line:
                return json.loads(line)["metrics_port"]
    raise AssertionError(f"{proc.name} logged no serving line")


def test_services_log_json_and_expose_metrics(stack, chain):
    final(stack.submit(chain, "metrics please")[0])
    with stack.channel(stack.scheduler_addr) as ch:  # a unary call, counted when it ends
        scheduler_pb2_grpc.SchedulerServiceStub(ch).GetSchedulerState(
            scheduler_pb2.GetSchedulerStateRequest(), timeout=5)
    names = {"router": "aragog_router_admitted_total", "scheduler": "aragog_scheduler_rounds_total",
             "load-monitor": "aragog_load_utilization", "executor-0": "aragog_executor_"}
    for proc in stack.procs:
        if proc.name in names:
            body = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port(proc)}/metrics", timeout=5).read()
            assert names[proc.name].encode() in body, proc.name
            if proc.name == "router":  # every RPC counted by method and code
                handled = [line for line in body.decode().splitlines()
                           if line.startswith("aragog_grpc_server_handled_total{")]
                assert any('method="/aragog.v1.RouterService/SubmitRequest"' in line
                           and 'code="OK"' in line for line in handled), handled
            if proc.name == "scheduler":
                assert b'method="/aragog.v1.SchedulerService/' in body
    finished = 0.0  # every executor's end-to-end latency histogram, for the request above
    for proc in stack.procs:
        if proc.name.startswith("executor-"):
            body = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port(proc)}/metrics",
                                          timeout=5).read().decode()
            finished += sum(float(line.rsplit(" ", 1)[1]) for line in body.splitlines()
                            if line.startswith("aragog_request_seconds_count{")
                            and 'outcome="succeeded"' in line)
    assert finished >= 1, "a finished request is observed in aragog_request_seconds"
    with open(next(p for p in stack.procs if p.name == "router").log_path) as f:
        admitted = [json.loads(line) for line in f if '"admitted"' in line]
    assert admitted and all(a["request_id"] and a["service"] == "router" for a in admitted)


def test_scheduler_and_load_monitor_agree_under_load(stack, chain):
    """Sampled while 40 requests run: the load-monitor's per-model counts (executors' in-flight
    stages, scheduler leases in Redis) match the scheduler's own view and stay within capacity.

    A snapshot's leases are read from Redis some time after its timestamp (its Triton scrape
    runs first) and before it reaches the watcher, which on a busy machine can be late while
    20 leases come meanwhile: so each is compared with the scheduler's views polled
    from the last one before its timestamp to the first one after it arrived."""
    snaps, views = [], []
    done = threading.Event()

    def poll_scheduler() -> None:
        with stack.channel(stack.scheduler_addr) as sch:
            sched = scheduler_pb2_grpc.SchedulerServiceStub(sch)
            while not done.is_set():
                t0 = time.time()
                view = sched.GetSchedulerState(scheduler_pb2.GetSchedulerStateRequest(), timeout=5)
                views.append((t0, time.time(), view))
                time.sleep(0.02)

    with stack.channel(stack.load_monitor_addr) as mon, \
            concurrent.futures.ThreadPoolExecutor(41) as pool:
        load = load_monitor_pb2_grpc.LoadMonitorServiceStub(mon)
        watch = load.WatchLoad(load_monitor_pb2.WatchLoadRequest(), timeout=120)
        next(watch)  # the newest snapshot when the watch starts: it may predate the burst below
        poller = pool.submit(poll_scheduler)
        futures = [pool.submit(stack.submit, chain, f"load {i}", "largest" if i % 4 == 0 else "")
                   for i in range(40)]
        for update in watch:
            snaps.append((update.snapshot, time.time()))
            if all(f.done() for f in futures):
                break
        watch.cancel()
        statuses = [final(f.result()[0]) for f in futures]
        time.sleep(0.2)  # a view after the last snapshot arrived
        done.set()
        poller.result()
    assert all(s.state == common_pb2.REQUEST_STATE_SUCCEEDED for s in statuses)
    busy = compared = 0
    for snap, received in snaps:
        before = [i for i, (_, t1, _) in enumerate(views) if t1 < snap.timestamp]
        after = [i for i, (t0, _, _) in enumerate(views) if t0 > received]
        around = [v for _, _, v in views[before[-1]:after[0] + 1]] if before and after else []
        for m in snap.models:
            assert m.in_flight <= m.leased + 1, (m, "executors never run more than leased")
            assert m.leased <= m.capacity
            busy += m.leased
            if not around:
                continue
            compared += 1
            seen = [int(v.leased[m.model]) for v in around]
            assert all(v.capacity[m.model] == m.capacity for v in around)
            assert all(n <= m.capacity for n in seen)
            # the scheduler writes its leases to Redis as it grants and ends them
            assert min(seen) - 2 <= m.leased <= max(seen) + 2, (m.model, m.leased, seen)
    assert busy > 0, "the load was seen"
    # at rest both views are empty
    time.sleep(1.5)
    with stack.channel(stack.load_monitor_addr) as mon, stack.channel(stack.scheduler_addr) as sch:
        snap = load_monitor_pb2_grpc.LoadMonitorServiceStub(mon).GetLoad(
            load_monitor_pb2.GetLoadRequest(), timeout=5).snapshot
        view = scheduler_pb2_grpc.SchedulerServiceStub(sch).GetSchedulerState(
            scheduler_pb2.GetSchedulerStateRequest(), timeout=5)
    assert all(m.in_flight == 0 and m.leased == 0 for m in snap.models)
    assert sum(view.leased.values()) == 0 and view.queued_stages == 0
    assert compared > 0, "snapshots were compared with the scheduler's views"
    assert any(m.throughput_rps > 0 and m.latency_ms > 0 for s, _ in snaps for m in s.models), \
        "throughput and latency measured from Triton's metrics"
    client = redis.Redis.from_url(stack.redis_url)
    assert client.xlen(f"{stack.namespace}:work") == 0, "finished work leaves the stream"
    client.close()


def test_a_workflow_id_cannot_be_redefined(stack, chain):
    same = stack.register(shipped_workflow("chain3"))  # identical: idempotent
    assert same.workflow.id == chain
    before = settled_snapshot(stack)
    changed = shipped_workflow("chain3").replace("output_tokens: ", "output_tokens: 1", 1)
    assert changed != shipped_workflow("chain3")
    with pytest.raises(grpc.RpcError) as err:
        stack.register(changed)
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert "new id" in err.value.details()
    assert snapshot(stack) == before


async def test_stage_session_grants_releases_and_rejects(stack, chain):
    """The executors' StageSession, driven directly: a grant and its release, and the unary
    call's errors as StageErrors."""
    from aragog.common.rpc import RpcError
    from aragog.executor.scheduler_client import SchedulerClient

    events, _ = stack.submit(chain, "session probe", "largest")  # an admitted, finished request
    rid = events[0].request_id
    owners = redis.Redis.from_url(stack.redis_url)
    for r in (rid, "no-such-request"):  # as if this client had claimed them
        owners.set(f"{stack.namespace}:req:{r}:owner", "test-session")
    async with stack.aio_channel(stack.scheduler_addr) as ch:
        client = SchedulerClient(ch, "test-session")
        try:
            grant = await client.acquire(rid, "critique", timeout=10)
            assert grant.model == "llama3-70b" and grant.lease_id
            await client.renew(grant.lease_id, timeout=5)
            assert await client.release(grant.lease_id, True, timeout=5)
            with pytest.raises(RpcError) as err:
                await client.renew(grant.lease_id, timeout=5)
            assert err.value.code == grpc.StatusCode.NOT_FOUND
            # a lease already gone (expired, here released) is no error for the stage
            assert await client.release(grant.lease_id, True, timeout=5) is False
            with pytest.raises(RpcError) as err:
                await client.acquire("no-such-request", "draft", timeout=5)
            assert err.value.code == grpc.StatusCode.NOT_FOUND
            with pytest.raises(RpcError) as err:
                await client.acquire(rid, "nope", timeout=5)
            assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
            assert "LLM stages: draft, critique, refine" in err.value.details
        finally:
            await client.close()
            owners.delete(*(f"{stack.namespace}:req:{r}:owner" for r in (rid, "no-such-request")))
            owners.close()


def test_a_half_closed_stage_session_gets_its_replies_and_its_end(stack):
    """A client that sends one batch and half-closes gets every reply and the stream's end at
    once, however fast the ops were answered (the writer used to be cancelled mid-write,
    which left the call open until the caller's deadline). Found by test_fuzz_rpc."""
    ops = [
        [scheduler_pb2.StageOp(ticket=1, acquire=scheduler_pb2.AcquireStageRequest(
            request_id="", stage="draft", executor_id=""))],
        [scheduler_pb2.StageOp(ticket=2, acquire=scheduler_pb2.AcquireStageRequest(
            request_id="no-such", stage="draft", executor_id="x"))],
        [scheduler_pb2.StageOp(ticket=3, release=scheduler_pb2.ReleaseStageRequest(lease_id="zz")),
         scheduler_pb2.StageOp(ticket=4)],
    ]
    with stack.channel(stack.scheduler_addr) as ch:
        stub = scheduler_pb2_grpc.SchedulerServiceStub(ch)
        for _ in range(5):
            for batch in ops:
                replies = [r for msg in stub.StageSession(
                    iter([scheduler_pb2.StageSessionRequest(ops=batch)]), timeout=3)
                    for r in msg.replies]
                assert sorted(r.ticket for r in replies) == sorted(o.ticket for o in batch)
                assert all(r.WhichOneof("result") == "error" for r in replies)


def executor_of(stack, owner: str):
    """The live executor process whose id is `owner` (ids are <process name>-<test pid>)."""
    return next(p for p in stack.executors if owner.startswith(p.name + "-") and p.popen.poll() is None)


def owner_of(stack, rid: str) -> str | None:
    client = redis.Redis.from_url(stack.redis_url)
    try:
        raw = client.get(f"{stack.namespace}:req:{rid}:owner")
        return raw.decode() if raw else None
    finally:
        client.close()


def test_killed_executor_loses_no_request(stack, chain):
    """SIGKILL the executor running a request after its first stage; another finishes it."""
    rid = f"kill-{uuid.uuid4().hex[:8]}"
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        fut = pool.submit(stack.submit, chain, "survive a crash", "largest", 120.0, rid)
        owner = None
        client = redis.Redis.from_url(stack.redis_url)
        deadline = time.monotonic() + 30
        while owner is None and time.monotonic() < deadline:
            if client.hlen(f"{stack.namespace}:req:{rid}:stages") >= 1:
                owner = owner_of(stack, rid)
            time.sleep(0.01)
        client.close()
        assert owner, "the request never started"
        victim = executor_of(stack, owner)
        os.killpg(victim.popen.pid, signal.SIGKILL)
        victim.popen.wait()
        stack.add_executor()  # keep two executors for the tests that follow
        status = final(fut.result()[0])
    assert status.state == common_pb2.REQUEST_STATE_SUCCEEDED, status.error
    assert [s.stage for s in status.stages] == ["draft", "critique", "refine"]
    assert status.stages[0].executor_id == owner
    assert status.stages[-1].executor_id != owner, "another executor finished it"


def test_sigterm_drains_an_executor(stack, chain):
    """SIGTERM mid-request: the executor finishes what it runs, then exits 0."""
    rid = f"term-{uuid.uuid4().hex[:8]}"
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        fut = pool.submit(stack.submit, chain, "drain me", "largest", 120.0, rid)
        deadline = time.monotonic() + 30
        owner = None
        while owner is None and time.monotonic() < deadline:
            owner = owner_of(stack, rid)
            time.sleep(0.01)
        assert owner
        victim = executor_of(stack, owner)
        victim.popen.send_signal(signal.SIGTERM)
        assert victim.popen.wait(30) == 0
        stack.add_executor()
        status = final(fut.result()[0])
    assert status.state == common_pb2.REQUEST_STATE_SUCCEEDED
    assert {s.executor_id for s in status.stages} == {owner}, "finished by the draining executor"
