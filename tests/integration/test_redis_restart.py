"""A Redis restart under load, on a stack whose Redis keeps an append-only file.

The stack has its own durable Redis (the session's shared one runs without persistence)
and shares the session stack's Triton.
"""

from __future__ import annotations

import concurrent.futures
import glob
import os
import signal
import threading
import time
import urllib.parse

import grpc
import pytest
import redis
from aragog.stack import Stack, shipped_workflow
from aragog.v1 import common_pb2, router_pb2, scheduler_pb2, scheduler_pb2_grpc

pytestmark = pytest.mark.integration
STAGES = ["draft", "critique", "refine"]
CLIENTS = 4
DOWN_S = 3.0  # longer than the claim and lease timeouts below: they lapse while Redis is away
LOST_S = 1.0  # appendfsync everysec: what a machine crash can lose
SLOW_DOWN_S = 25.0  # longer than the Redis client's retries (aragog.common.store.connect)


@pytest.fixture(scope="module")
def durable_stack(stack, tmp_path_factory, tls_env):
    s = Stack(
        triton_url=stack.triton_url, triton_metrics_url=stack.triton_metrics_url, executors=2,
        namespace="durable", log_dir=str(tmp_path_factory.mktemp("durable-stack")),
        extra_env={
            "ARAGOG_LEASE_TTL_S": "3",
            "ARAGOG_CLAIM_IDLE_S": "1.5",
            "ARAGOG_SHUTDOWN_GRACE_S": "8",
            "ARAGOG_DEFAULT_POLICY": "largest",
            **tls_env,
        },
    )
    s.start(timeout_s=120)
    yield s
    s.stop()


def recorded_events(client: redis.Redis, ns: str, rid: str) -> list:
    return [router_pb2.SubmitRequestResponse.FromString(f[b"e"])
            for _, f in client.xrange(f"{ns}:req:{rid}:events")]


def under_load(s: Stack, wid: str, prefix: str, disrupt, resubmit: bool = False
               ) -> tuple[dict, float, float]:
    """CLIENTS clients submit chain3 requests one after another; after 4 s `disrupt()` stops
    Redis and starts it again, returning when it stopped; the load goes on for 8 s more.
    Returns {request id: (sent, done, events or RpcError)}, when Redis stopped and when it
    was back. `resubmit`: a client refused UNAVAILABLE before its first event submits again
    with the same request_id, as the refusal tells it to (its request may have been admitted
    when Redis went away; submitting again re-attaches to it); a stream that fails after an
    event stays a failure."""
    stop = threading.Event()
    results: dict[str, tuple[float, float, object]] = {}

    def follow(rid: str, text: str) -> list:
        events: list = []
        deadline = time.monotonic() + 120
        while True:
            try:
                with s.router() as r:
                    for e in r.SubmitRequest(router_pb2.SubmitRequestRequest(
                            workflow_id=wid, input=text, request_id=rid),
                            timeout=max(1.0, deadline - time.monotonic())):
                        events.append(e)
                return events
            except grpc.RpcError as e:
                if not (resubmit and not events and e.code() == grpc.StatusCode.UNAVAILABLE
                        and time.monotonic() < deadline):
                    raise
                time.sleep(1.0)

    def client(i: int) -> None:
        n = 0
        while not stop.is_set():
            rid, n = f"{prefix}-{i}-{n}", n + 1
            t0 = time.monotonic()
            try:
                outcome: object = follow(rid, f"{prefix} {i} {n}")
            except grpc.RpcError as e:
                outcome = e
            results[rid] = (t0, time.monotonic(), outcome)

    with concurrent.futures.ThreadPoolExecutor(CLIENTS) as pool:
        clients = [pool.submit(client, i) for i in range(CLIENTS)]
        time.sleep(4)
        t_stop = disrupt()
        t_up = time.monotonic()
        time.sleep(8)
        stop.set()
        for c in clients:
            c.result(timeout=180)
    return results, t_stop, t_up


def test_a_redis_restart_loses_and_repeats_nothing(durable_stack):
    """Four clients submit chain3 requests one after another; Redis is stopped (SIGTERM)
    and started again on its port and directory. Every request succeeds, is admitted once
    and runs each stage once; workflows stay registered; a request finished before the
    restart is answered from its record."""
    s = durable_stack
    wid = s.register(shipped_workflow("chain3")).workflow.id
    before, _ = s.submit(wid, "finished before the restart", request_id="before-restart")
    assert before[-1].completed.state == common_pb2.REQUEST_STATE_SUCCEEDED

    def restart() -> float:
        t_stop = time.monotonic()
        s.stop_redis()  # SIGTERM: a clean shutdown, the append-only file is complete
        time.sleep(DOWN_S)
        s.start_redis()
        return t_stop

    results, t_stop, t_up = under_load(s, wid, "restart", restart)
    failed = {rid: r[2] for rid, r in results.items() if isinstance(r[2], grpc.RpcError)}
    assert not failed, failed
    across = [r for r in results.values() if r[0] < t_stop < r[1]]
    assert across, "some requests were in flight during the restart"
    finished_after = max(r[1] for r in across) - t_up
    print(f"\n{len(results)} requests, {len(across)} in flight across the restart; Redis down "
          f"{t_up - t_stop:.1f}s; the last of those finished {finished_after:.1f}s after it was up")

    client = redis.Redis.from_url(s.redis_url)
    try:
        for rid, (_, _, events) in results.items():
            status = events[-1].completed
            assert status.state == common_pb2.REQUEST_STATE_SUCCEEDED, (rid, status.error)
            assert [st.stage for st in status.stages] == STAGES, rid
            kinds = [(e.WhichOneof("event"), e.stage_started.stage or e.stage_finished.stage)
                     for e in recorded_events(client, s.namespace, rid)]
            assert kinds.count(("admitted", "")) == 1, (rid, kinds)
            for stage in STAGES:
                assert kinds.count(("stage_started", stage)) == 1, (rid, kinds)  # ran once
                # KNOWN DEFECT (open, issue 16): an event append that redis-py retries across
                # the restart can land twice, so a client may see one stage_finished twice
                # (seen once in a full run on a loaded machine); the stage itself ran once.
                assert kinds.count(("stage_finished", stage)) >= 1, (rid, kinds)
            assert kinds.count(("completed", "")) == 1, (rid, kinds)
        assert client.xlen(f"{s.namespace}:work") == 0, "no unfinished work is left"
        assert client.hlen(f"{s.namespace}:leases") == 0
    finally:
        client.close()

    with s.router() as r:
        assert wid in [w.id for w in r.ListWorkflows(router_pb2.ListWorkflowsRequest(),
                                                     timeout=5).workflows]
    again, _ = s.submit(wid, "another input is ignored", request_id="before-restart")
    assert [e.SerializeToString() for e in again] == [e.SerializeToString() for e in before], \
        "a finished request is answered from its record, not run again"
    assert scheduler_view(s) == (0, 0)


def test_a_restart_slower_than_the_client_retries_fails_nothing(durable_stack):
    """Redis down longer than redis-py's retries (~15 s): calls fail meanwhile (as
    UNAVAILABLE), yet no request fails. A submission refused before its first event is
    submitted again with the same request_id, as the refusal says (it may have raced the
    stop: admitted, then refused); followers keep waiting; executors hand their
    requests back and resume them once Redis is back, so a stage that finished meanwhile
    (its record failed) may run again, but every request is admitted once and ends once,
    successfully."""
    s = durable_stack
    wid = s.register(shipped_workflow("chain3")).workflow.id

    refused: list[grpc.RpcError] = []

    def restart() -> float:
        t_stop = time.monotonic()
        s.stop_redis()
        with s.router() as r, pytest.raises(grpc.RpcError) as err:
            r.ListWorkflows(router_pb2.ListWorkflowsRequest(), timeout=SLOW_DOWN_S)
        refused.append(err.value)
        time.sleep(max(0.0, t_stop + SLOW_DOWN_S - time.monotonic()))
        s.start_redis()
        return t_stop

    results, t_stop, t_up = under_load(s, wid, "slow", restart, resubmit=True)
    assert refused[0].code() == grpc.StatusCode.UNAVAILABLE, refused[0].details()
    assert "Redis, which holds the cluster state, is unreachable" in refused[0].details()
    failed = {rid: r[2] for rid, r in results.items() if isinstance(r[2], grpc.RpcError)}
    assert not failed, failed
    across = [r for r in results.values() if r[0] < t_stop < r[1]]
    client = redis.Redis.from_url(s.redis_url)
    try:
        for rid, (_, _, events) in results.items():
            assert events[-1].completed.state == common_pb2.REQUEST_STATE_SUCCEEDED, rid
            kinds = [e.WhichOneof("event") for e in recorded_events(client, s.namespace, rid)]
            assert kinds.count("admitted") == 1 and kinds.count("completed") == 1, (rid, kinds)
        assert client.xlen(f"{s.namespace}:work") == 0
    finally:
        client.close()
    print(f"\nRedis down {t_up - t_stop:.1f}s: {len(across)} requests in flight across it "
          f"finished at most {max(r[1] for r in across) - t_up:.1f}s after it was back")
    assert scheduler_view(s) == (0, 0)


def scheduler_view(s: Stack) -> tuple[int, int]:
    """(stages queued, leases held) as the scheduler sees them."""
    with s.channel(s.scheduler_addr) as ch:
        view = scheduler_pb2_grpc.SchedulerServiceStub(ch).GetSchedulerState(
            scheduler_pb2.GetSchedulerStateRequest(), timeout=5)
    return view.queued_stages, sum(view.leased.values())


def aof_tail(redis_dir: str) -> str:
    """The append-only file Redis appends to now (Redis 7: the newest incr file)."""
    found = sorted(glob.glob(os.path.join(redis_dir, "appendonlydir", "*.incr.aof")))
    return found[-1] if found else os.path.join(redis_dir, "appendonly.aof")


def test_a_crash_that_loses_the_last_second(durable_stack):
    """Redis is killed and its append-only file cut back to where it was a second earlier,
    as a machine crash before the next fsync leaves it; then started again. What that costs
    (README, "Redis restarts"): requests admitted in that second are gone (a client still
    waiting for one gets UNAVAILABLE, and resubmitting runs it); stages recorded in it run
    again. No client waits for its deadline, no partial record is written back, and the
    leases recorded are those the scheduler holds."""
    s = durable_stack
    wid = s.register(shipped_workflow("chain3")).workflow.id

    def crash() -> float:
        aof, sizes = aof_tail(s.redis_dir), []
        for _ in range(125):
            sizes.append((time.monotonic(), os.path.getsize(aof)))
            time.sleep(0.02)
        t_kill = time.monotonic()
        s.stop_redis(signal.SIGKILL)
        os.truncate(aof, max(size for t, size in sizes if t <= t_kill - LOST_S))
        s.start_redis()
        return t_kill

    results, t_kill, _ = under_load(s, wid, "crash", crash)
    client = redis.Redis.from_url(s.redis_url)
    try:
        deadline = time.monotonic() + 30  # work whose end was lost is claimed and run again
        while client.xlen(f"{s.namespace}:work") and time.monotonic() < deadline:
            time.sleep(0.2)
        assert client.xlen(f"{s.namespace}:work") == 0
        gone, unavailable, rerun = [], [], []
        for rid, (t0, t1, outcome) in results.items():
            assert t1 - t0 < 30, (rid, "no client waits for its deadline")
            if isinstance(outcome, grpc.RpcError):
                assert outcome.code() == grpc.StatusCode.UNAVAILABLE, (rid, outcome)
                assert "submit it again with the same request_id" in outcome.details()
                unavailable.append(rid)
            else:
                assert outcome[-1].completed.state == common_pb2.REQUEST_STATE_SUCCEEDED, rid
            record = client.hgetall(f"{s.namespace}:req:{rid}")
            if not record:
                gone.append(rid)
                continue
            assert b"workflow_id" in record, (rid, "no partial record")
            assert int(record[b"state"]) == common_pb2.REQUEST_STATE_SUCCEEDED, rid
            kinds = [e.WhichOneof("event") for e in recorded_events(client, s.namespace, rid)]
            assert kinds.count("admitted") == 1, (rid, kinds)
            if kinds.count("stage_started") > len(STAGES):
                rerun.append(rid)
        assert set(unavailable) <= set(gone)
        assert client.hlen(f"{s.namespace}:leases") == 0
    finally:
        client.close()
    assert scheduler_view(s) == (0, 0)
    for rid in unavailable:
        events, _ = s.submit(wid, "run again", request_id=rid)
        assert events[0].WhichOneof("event") == "admitted", "admitted anew"
        assert events[-1].completed.state == common_pb2.REQUEST_STATE_SUCCEEDED
    told = max((results[rid][1] - results[rid][0] for rid in unavailable), default=0.0)
    print(f"\n{len(results)} requests; {len(gone)} admitted in the lost second are gone "
          f"(their clients: {len(unavailable)} got UNAVAILABLE at most {told:.1f}s after "
          f"sending, the others had their answer already); {len(rerun)} ran stages again")
    assert gone, "the lost second held admissions"


def test_the_stacks_own_redis_wants_its_password(durable_stack):
    """Other users of the host reach its loopback port too: without the password (in the
    services' ARAGOG_REDIS_URL and the data directory's redis.conf, never in a command
    line) Redis answers nothing."""
    from aragog.stack import redacted

    url = durable_stack.redis_url
    parts = urllib.parse.urlsplit(url)
    assert parts.password and len(parts.password) >= 24
    stranger = redis.Redis(host=parts.hostname, port=parts.port)
    with pytest.raises(redis.AuthenticationError):
        stranger.ping()
    stranger.close()
    assert redis.Redis.from_url(url).ping()
    redis_proc = next(p for p in durable_stack.procs if p.name == "redis")
    with open(f"/proc/{redis_proc.popen.pid}/cmdline", "rb") as f:
        assert parts.password.encode() not in f.read()
    assert parts.password not in redacted(url) and redacted(url).endswith(f":{parts.port}/0")
