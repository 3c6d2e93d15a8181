"""Cancellation on the whole stack: CancelRequest, and cancel_on_disconnect."""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import threading
import time
import uuid

import grpc
import pytest
import redis
from aragog.stack import shipped_workflow
from aragog.v1 import common_pb2, router_pb2, router_pb2_grpc, scheduler_pb2, scheduler_pb2_grpc

pytestmark = pytest.mark.integration
CANCELLED = common_pb2.REQUEST_STATE_CANCELLED
SUCCEEDED = common_pb2.REQUEST_STATE_SUCCEEDED


@pytest.fixture(scope="module")
def chain(stack):
    return stack.register(shipped_workflow("chain3")).workflow.id


@pytest.fixture
def client(stack):
    c = redis.Redis.from_url(stack.redis_url)
    yield c
    c.close()


def cancel(stack, rid: str) -> common_pb2.RequestStatus:
    with stack.router() as r:
        return r.CancelRequest(router_pb2.CancelRequestRequest(request_id=rid), timeout=10).status


def scheduler_state(stack) -> scheduler_pb2.GetSchedulerStateResponse:
    with stack.channel(stack.scheduler_addr) as ch:
        return scheduler_pb2_grpc.SchedulerServiceStub(ch).GetSchedulerState(
            scheduler_pb2.GetSchedulerStateRequest(), timeout=5)


def events(client, stack, rid: str) -> list[str]:
    return [router_pb2.SubmitRequestResponse.FromString(f[b"e"]).WhichOneof("event")
            for _, f in client.xrange(f"{stack.namespace}:req:{rid}:events")]


def leases_of(client, stack, rid: str) -> list[dict]:
    leases = [json.loads(v) for v in client.hvals(f"{stack.namespace}:leases")]
    return [lz for lz in leases if lz["request_id"] == rid]


def wait_for(check, timeout_s: float = 30, what: str = ""):
    deadline = time.monotonic() + timeout_s
    while not (value := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what or check}"
        time.sleep(0.02)
    return value


@contextlib.contextmanager
def model_held(stack, rid: str, stage: str, model: str):
    """Take every free place of `model` with leases on a finished request's stage (its
    policy binds the stage to `model`), renewed until the block ends: new stages for
    `model` wait in the scheduler's queue meanwhile."""
    owner_key = f"{stack.namespace}:req:{rid}:owner"
    owner = redis.Redis.from_url(stack.redis_url)
    owner.set(owner_key, "holder")  # as if "holder" ran it (deleted when the block ends)
    ch = stack.channel(stack.scheduler_addr)
    stub = scheduler_pb2_grpc.SchedulerServiceStub(ch)
    state = stub.GetSchedulerState(scheduler_pb2.GetSchedulerStateRequest(), timeout=5)
    leases = []
    for _ in range(state.capacity[model] - state.leased[model]):
        grant = stub.AcquireStage(scheduler_pb2.AcquireStageRequest(
            request_id=rid, stage=stage, executor_id="holder"), timeout=10)
        assert grant.model == model
        leases.append(grant.lease_id)
    done = threading.Event()

    def renew() -> None:
        while not done.wait(0.5):
            for lease in leases:
                stub.RenewLease(scheduler_pb2.RenewLeaseRequest(lease_id=lease), timeout=5)

    renewer = threading.Thread(target=renew)
    renewer.start()
    try:
        yield
    finally:
        done.set()
        renewer.join()
        for lease in leases:
            stub.ReleaseStage(scheduler_pb2.ReleaseStageRequest(lease_id=lease, success=True),
                              timeout=5)
        ch.close()
        owner.delete(owner_key)
        owner.close()


def test_cancel_a_queued_request(stack, chain, client):
    """A request whose first stage waits in the scheduler's queue (its model is full): it
    ends CANCELLED, its stage leaves the queue, it never holds a lease, its tenant's place
    is freed; requests on other models, and after it on the same one, are unaffected."""
    held = stack.submit(chain, "holds the largest model", "largest")[0][-1].completed
    rid, tenant = f"queued-{uuid.uuid4().hex[:8]}", f"t{uuid.uuid4().hex[:6]}"
    with concurrent.futures.ThreadPoolExecutor(3) as pool, \
            model_held(stack, held.request_id, "draft", "llama3-70b"):
        def submit(**fields) -> list:
            with stack.router() as r:
                return list(r.SubmitRequest(router_pb2.SubmitRequestRequest(
                    workflow_id=chain, input="wait in line", **fields), timeout=120))

        queued = pool.submit(submit, policy="largest", request_id=rid, tenant=tenant)
        wait_for(lambda: scheduler_state(stack).queued_stages == 1, what="its stage queued")
        assert client.hget(f"{stack.namespace}:tenants", tenant) == b"1"
        behind = pool.submit(submit, policy="largest")
        wait_for(lambda: scheduler_state(stack).queued_stages == 2, what="the next one queued")
        elsewhere = pool.submit(submit, policy="cheapest")

        status = cancel(stack, rid)
        assert status.state == CANCELLED and status.error == "cancelled by CancelRequest"
        assert not status.answer and not status.stages
        final = queued.result(timeout=10)[-1]
        assert final.completed.state == CANCELLED, "its client gets the final event"
        wait_for(lambda: scheduler_state(stack).queued_stages == 1, what="its stage withdrawn")
        assert elsewhere.result(timeout=60)[-1].completed.state == SUCCEEDED
        assert not behind.done()
    assert behind.result(timeout=60)[-1].completed.state == SUCCEEDED
    assert events(client, stack, rid) == ["admitted", "completed"]
    assert leases_of(client, stack, rid) == []
    assert client.hget(f"{stack.namespace}:tenants", tenant) is None, "its place is free"
    assert cancel(stack, rid) == status, "cancelling again changes nothing"


def test_cancel_a_running_request(stack, slow_workflow, client):
    """Cancelled while its first (long) stage runs: its lease is freed at once, the model
    call's result is dropped and its second stage never starts."""
    rid = f"running-{uuid.uuid4().hex[:8]}"
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        follower = pool.submit(stack.submit, slow_workflow, "a long think", "", 60.0, rid)
        wait_for(lambda: "stage_started" in events(client, stack, rid), what="its stage started")
        assert leases_of(client, stack, rid)
        t0 = time.monotonic()
        status = cancel(stack, rid)
        assert status.state == CANCELLED
        assert follower.result(timeout=10)[0][-1].completed.state == CANCELLED
        wait_for(lambda: not leases_of(client, stack, rid), timeout_s=5, what="its lease freed")
        freed_s = time.monotonic() - t0
        assert scheduler_state(stack).leased["llama3-70b"] == 0
    time.sleep(6)  # the model call (~5 s) has ended by now: nothing of it is recorded
    assert events(client, stack, rid) == ["admitted", "stage_started", "completed"]
    assert client.hlen(f"{stack.namespace}:req:{rid}:stages") == 0
    assert int(client.hget(f"{stack.namespace}:req:{rid}", "state")) == CANCELLED
    assert scheduler_state(stack).queued_stages == 0
    print(f"\nlease freed {freed_s * 1000:.0f} ms after CancelRequest")


def test_cancel_answers_finished_unknown_and_bad_ids(stack, chain, client):
    done = stack.submit(chain, "finished first", "cheapest")[0][-1].completed
    key = f"{stack.namespace}:req:{done.request_id}"
    before = client.hgetall(key), client.xlen(f"{key}:events")
    assert cancel(stack, done.request_id) == done, "a finished request stays as it finished"
    assert (client.hgetall(key), client.xlen(f"{key}:events")) == before
    for rid, code in (("no-such-request", grpc.StatusCode.NOT_FOUND),
                      (f"{done.request_id}:stages", grpc.StatusCode.INVALID_ARGUMENT)):
        with pytest.raises(grpc.RpcError) as err:
            cancel(stack, rid)
        assert err.value.code() == code, err.value.details()
    assert not client.exists(f"{stack.namespace}:req:no-such-request")


def follow_until_started(stack, client, rid: str, **fields):
    """Open a SubmitRequest stream and read it until the request's first stage started;
    return the call (cancel() disconnects) and its channel."""
    ch = stack.channel(stack.router_addr)
    call = router_pb2_grpc.RouterServiceStub(ch).SubmitRequest(
        router_pb2.SubmitRequestRequest(request_id=rid, input="disconnect test", **fields),
        timeout=60)
    for event in call:
        if event.WhichOneof("event") == "stage_started":
            return call, ch
    raise AssertionError(f"{rid} ended before its first stage started")


def state_of(client, stack, rid: str) -> int:
    return int(client.hget(f"{stack.namespace}:req:{rid}", "state"))


def test_disconnect_cancels_only_with_the_flag(stack, slow_workflow, client):
    flagged, plain = (f"{what}-{uuid.uuid4().hex[:8]}" for what in ("flagged", "plain"))
    for rid, flag in ((flagged, True), (plain, False)):
        call, ch = follow_until_started(stack, client, rid, workflow_id=slow_workflow,
                                        cancel_on_disconnect=flag)
        call.cancel()  # the client goes away
        ch.close()
    wait_for(lambda: state_of(client, stack, flagged) == CANCELLED, timeout_s=5,
             what="the flagged request cancelled")
    with stack.router() as r:
        got = r.GetRequestStatus(router_pb2.GetRequestStatusRequest(request_id=flagged),
                                 timeout=5).status
    assert "cancel_on_disconnect" in got.error
    wait_for(lambda: not leases_of(client, stack, flagged), timeout_s=5, what="lease freed")
    assert state_of(client, stack, plain) == common_pb2.REQUEST_STATE_RUNNING, "runs on"
    again, _ = stack.submit(slow_workflow, "ignored", request_id=plain)  # re-attaching works
    assert again[-1].completed.state == SUCCEEDED


def test_disconnect_cancels_when_the_last_client_leaves(stack, slow_workflow, client):
    rid = f"two-{uuid.uuid4().hex[:8]}"
    first, ch1 = follow_until_started(stack, client, rid, workflow_id=slow_workflow,
                                      cancel_on_disconnect=True)
    second, ch2 = follow_until_started(stack, client, rid)  # re-attached
    first.cancel()
    ch1.close()
    time.sleep(1)
    assert state_of(client, stack, rid) == common_pb2.REQUEST_STATE_RUNNING, "one client is left"
    second.cancel()
    ch2.close()
    wait_for(lambda: state_of(client, stack, rid) == CANCELLED, timeout_s=5, what="cancelled")
