"""Services crash under load and come back: no request fails, none runs twice.

A stack of its own (it shares the session's Redis, under its own namespace, and Triton).
"""

from __future__ import annotations

import concurrent.futures
import signal
import threading
import time
import uuid

import grpc
import pytest
import redis
from aragog.stack import Stack, shipped_workflow
from aragog.v1 import common_pb2, router_pb2, router_pb2_grpc, scheduler_pb2, scheduler_pb2_grpc

pytestmark = pytest.mark.integration
CLIENTS = 4
STAGES = ["draft", "critique", "refine"]


@pytest.fixture(scope="module")
def fault_stack(stack, tmp_path_factory, tls_env):
    s = Stack(
        redis_url=stack.redis_url, triton_url=stack.triton_url,
        triton_metrics_url=stack.triton_metrics_url, executors=2,
        namespace=f"f{uuid.uuid4().hex[:8]}", log_dir=str(tmp_path_factory.mktemp("fault-stack")),
        extra_env={"ARAGOG_LEASE_TTL_S": "3", "ARAGOG_CLAIM_IDLE_S": "1.5",
                   "ARAGOG_DEFAULT_POLICY": "largest", **tls_env},
    )
    s.start(timeout_s=120)
    yield s
    s.stop()


def under_load(s: Stack, wid: str, prefix: str, fault) -> tuple[dict, tuple[float, float]]:
    """CLIENTS clients submit requests one after another; after 3 s `fault()` runs; the
    load goes on 6 s more. Returns {request id: (sent, done, events or RpcError)} and when
    the fault began and ended."""
    stop = threading.Event()
    results: dict[str, tuple[float, float, object]] = {}

    def client(i: int) -> None:
        n = 0
        while not stop.is_set():
            rid, n = f"{prefix}-{i}-{n}", n + 1
            t0 = time.monotonic()
            try:
                outcome: object = s.submit(wid, f"{prefix} {i} {n}", request_id=rid,
                                           timeout_s=90)[0]
            except grpc.RpcError as e:
                outcome = e
            results[rid] = (t0, time.monotonic(), outcome)

    with concurrent.futures.ThreadPoolExecutor(CLIENTS) as pool:
        clients = [pool.submit(client, i) for i in range(CLIENTS)]
        time.sleep(3)
        t0 = time.monotonic()
        fault()
        window = (t0, time.monotonic())
        time.sleep(6)
        stop.set()
        for c in clients:
            c.result(timeout=120)
    return results, window


def across(results: dict, window: tuple[float, float]) -> list:
    """The requests in flight at some time during the fault."""
    return [r for r in results.values() if r[0] < window[1] and r[1] > window[0]]


@pytest.fixture(scope="module")
def ha_stack(stack, tmp_path_factory, tls_env):
    """An active scheduler and a standby."""
    s = Stack(
        redis_url=stack.redis_url, triton_url=stack.triton_url,
        triton_metrics_url=stack.triton_metrics_url, executors=2, schedulers=2,
        namespace=f"ha{uuid.uuid4().hex[:8]}", log_dir=str(tmp_path_factory.mktemp("ha-stack")),
        extra_env={"ARAGOG_LEASE_TTL_S": "3", "ARAGOG_CLAIM_IDLE_S": "1.5",
                   "ARAGOG_LEADER_TTL_S": "2", "ARAGOG_DEFAULT_POLICY": "largest",
                   **tls_env},
    )
    s.start(timeout_s=120)
    yield s
    s.stop()


def check_every_request_ran_once(s: Stack, results: dict) -> None:
    failed = {rid: r[2] for rid, r in results.items() if isinstance(r[2], grpc.RpcError)}
    assert not failed, failed
    client = redis.Redis.from_url(s.redis_url)
    try:
        for rid, (_, _, events) in results.items():
            status = events[-1].completed
            assert status.state == common_pb2.REQUEST_STATE_SUCCEEDED, (rid, status.error)
            assert [st.stage for st in status.stages] == STAGES, rid
            kinds = [router_pb2.SubmitRequestResponse.FromString(f[b"e"]).WhichOneof("event")
                     for _, f in client.xrange(f"{s.namespace}:req:{rid}:events")]
            assert kinds.count("admitted") == 1 and kinds.count("completed") == 1, (rid, kinds)
        deadline = time.monotonic() + 10  # leases of the killed scheduler's grants: released
        while client.hlen(f"{s.namespace}:leases") and time.monotonic() < deadline:
            time.sleep(0.2)
        assert client.hlen(f"{s.namespace}:leases") == 0, "no lease outlives its stage"
        assert client.xlen(f"{s.namespace}:work") == 0
    finally:
        client.close()
    with s.channel(s.scheduler_addr) as ch:
        view = scheduler_pb2_grpc.SchedulerServiceStub(ch).GetSchedulerState(
            scheduler_pb2.GetSchedulerStateRequest(), timeout=5)
    assert view.queued_stages == 0 and sum(view.leased.values()) == 0


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["crash", "stop"])
def test_a_scheduler_restart_under_load_fails_nothing(fault_stack, sig):
    """The scheduler is killed (or stopped) while stages wait in its queue and hold leases,
    and started again on its address: executors re-send their waiting acquires and their
    releases to the new one, which reloaded the leases from Redis."""
    s = fault_stack
    wid = s.register(shipped_workflow("chain3")).workflow.id
    results, window = under_load(s, wid, f"sched-{sig.name}",
                                 lambda: s.restart("scheduler", sig))
    print(f"\n{len(results)} requests; scheduler back in {window[1] - window[0]:.1f}s; "
          f"slowest {max(r[1] - r[0] for r in results.values()):.1f}s")
    assert across(results, window), "some requests were in flight across the restart"
    check_every_request_ran_once(s, results)
    for proc in s.executors:
        with open(proc.log_path) as f:
            lost = [line for line in f if '"release_failed"' in line]
        assert not lost, ("every release reaches a scheduler, none is left to expire", lost[:2])


def test_executors_killed_one_after_another_lose_nothing(fault_stack):
    """Executors are killed (SIGKILL) and started again in turn, 5 times: the requests one
    ran are claimed by the other once idle and resumed from their last recorded stage."""
    s = fault_stack
    wid = s.register(shipped_workflow("chain3")).workflow.id

    def kill_each() -> None:
        for k in range(5):
            s.restart(s.executors[k % len(s.executors)].name, signal.SIGKILL)
            time.sleep(0.5)

    results, window = under_load(s, wid, "exec", kill_each)
    print(f"\n{len(results)} requests; 5 executor kills over {window[1] - window[0]:.1f}s")
    assert across(results, window)
    check_every_request_ran_once(s, results)


def scheduler_state(s: Stack, addr: str) -> scheduler_pb2.GetSchedulerStateResponse:
    with s.channel(addr) as ch:
        return scheduler_pb2_grpc.SchedulerServiceStub(ch).GetSchedulerState(
            scheduler_pb2.GetSchedulerStateRequest(), timeout=5)


def test_a_standby_scheduler_takes_over_when_the_active_one_dies(ha_stack):
    """The active scheduler is killed (SIGKILL) under load: the standby takes its key once
    it lapses, reloads the leases, and the executors find it; nothing fails. The killed one,
    started again, is the standby."""
    s = ha_stack
    active, standby = s.schedulers[0].addr, s.schedulers[1].addr
    assert s.active_scheduler() == active
    with pytest.raises(grpc.RpcError) as err:
        scheduler_state(ha_stack, standby)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE and "standby" in err.value.details()
    wid = s.register(shipped_workflow("chain3")).workflow.id
    results, window = under_load(s, wid, "ha", lambda: s.kill("scheduler"))
    assert across(results, window)
    t0 = time.monotonic()
    assert s.active_scheduler() == standby
    print(f"\n{len(results)} requests across the takeover; slowest "
          f"{max(r[1] - r[0] for r in results.values()):.1f}s")
    check_every_request_ran_once(s, results)
    s.restart("scheduler", wait=False)
    time.sleep(1.5)
    assert s.active_scheduler() == standby, "the restarted one does not take the key back"
    with pytest.raises(grpc.RpcError) as err:
        scheduler_state(ha_stack, active)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert time.monotonic() - t0 < 30


def test_a_router_stopped_mid_stream_loses_nothing(fault_stack):
    """Clients stream requests through one router, which is stopped (SIGTERM) and started
    again under them; a client whose stream ends early re-attaches through a second router
    with the same request id. Every request ends once, successfully."""
    s = fault_stack
    wid = s.register(shipped_workflow("chain3")).workflow.id
    other = s.add_router()
    reattached: list[str] = []

    def submit_or_reattach(rid: str, text: str) -> list:
        try:
            return s.submit(wid, text, request_id=rid, timeout_s=90)[0]
        except grpc.RpcError:
            reattached.append(rid)
            with s.channel(other.addr) as ch:
                stub = router_pb2_grpc.RouterServiceStub(ch)
                return list(stub.SubmitRequest(router_pb2.SubmitRequestRequest(
                    workflow_id=wid, input=text, request_id=rid), timeout=90))

    results: dict[str, tuple[float, float, object]] = {}
    stop = threading.Event()

    def client(i: int) -> None:
        n = 0
        while not stop.is_set():
            rid, n = f"router-{i}-{n}", n + 1
            t0 = time.monotonic()
            results[rid] = (t0, 0.0, submit_or_reattach(rid, f"router {i} {n}"))
            results[rid] = (t0, time.monotonic(), results[rid][2])

    with concurrent.futures.ThreadPoolExecutor(CLIENTS) as pool:
        clients = [pool.submit(client, i) for i in range(CLIENTS)]
        time.sleep(3)
        t0 = time.monotonic()
        s.restart("router", signal.SIGTERM)
        window = (t0, time.monotonic())
        time.sleep(4)
        stop.set()
        for c in clients:
            c.result(timeout=120)
    print(f"\n{len(results)} requests; router back in {window[1] - window[0]:.1f}s; "
          f"{len(reattached)} re-attached through the other router")
    assert across(results, window)
    check_every_request_ran_once(s, results)
