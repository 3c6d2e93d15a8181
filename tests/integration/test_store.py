"""The store's admission bounds and per-tenant counts, on a real Redis (no services).

A request holds a slot of its tenant's count exactly as long as its work entry is in the
stream: admission adds both, whoever removes the entry (its end, or the executor retiring
an entry whose record is gone) frees the slot, once.
"""

from __future__ import annotations

import asyncio

import pytest
from aragog.common.store import WORK_GROUP, QueueFull, Store, connect
from aragog.v1 import common_pb2

pytestmark = [pytest.mark.integration, pytest.mark.same_both_ways]
SUCCEEDED, FAILED = common_pb2.REQUEST_STATE_SUCCEEDED, common_pb2.REQUEST_STATE_FAILED


@pytest.fixture
async def store(redis_url, namespace):
    s = Store(connect(redis_url), namespace)
    yield s
    await s.r.aclose()


async def admit(store: Store, rid: str, tenant: str, max_requests: int = 0,
                max_per_tenant: int = 0) -> bool:
    fields = {"workflow_id": "w", "tenant": tenant, "input": "x",
              "state": common_pb2.REQUEST_STATE_QUEUED, "created_at": 1.0}
    return await store.admit(rid, fields, b"*", b"", max_requests, max_per_tenant)


async def test_the_tenant_bound_refuses_and_writes_nothing(store):
    assert await admit(store, "a1", "acme", max_per_tenant=2)
    assert await admit(store, "a2", "acme", max_per_tenant=2)
    before = await store.snapshot()
    with pytest.raises(QueueFull) as refused:
        await admit(store, "a3", "acme", max_per_tenant=2)
    assert (refused.value.bound, refused.value.unfinished, refused.value.limit) == ("tenant", 2, 2)
    assert await store.snapshot() == before
    assert await admit(store, "b1", "other", max_per_tenant=2), "other tenants are not held up"
    assert await admit(store, "n1", "", max_per_tenant=2), "no tenant is a tenant of its own"
    assert await store.tenant_unfinished() == {"acme": 2, "other": 1, "": 1}


async def test_the_overall_bound_counts_unfinished_requests(store):
    for i in range(3):
        assert await admit(store, f"r{i}", f"t{i}", max_requests=3)
    before = await store.snapshot()
    with pytest.raises(QueueFull) as refused:
        await admit(store, "r3", "t3", max_requests=3)
    assert (refused.value.bound, refused.value.unfinished) == ("requests", 3)
    assert await store.snapshot() == before
    assert await store.finish("r0", SUCCEEDED, "answer", "", 60)
    assert await admit(store, "r3", "t3", max_requests=3), "an end frees a place"


async def test_an_id_already_taken_changes_no_count(store):
    assert await admit(store, "same", "acme")
    before = await store.snapshot()
    assert not await admit(store, "same", "acme")
    assert await store.snapshot() == before


async def test_racing_admissions_never_overshoot_a_bound(store):
    results = await asyncio.gather(
        *(admit(store, f"race{i}", "acme", max_per_tenant=5) for i in range(20)),
        return_exceptions=True)
    assert sum(r is True for r in results) == 5
    assert all(isinstance(r, QueueFull) for r in results if r is not True)
    assert await store.tenant_unfinished() == {"acme": 5}
    assert await store.r.xlen(store.k.work) == 5


async def test_an_end_frees_the_slot_exactly_once(store):
    for rid in ("ok", "bad"):
        assert await admit(store, rid, "acme")
    entry = (await store.r.hget(store.k.req("ok"), "work_id"))
    assert await store.finish("ok", SUCCEEDED, "answer", "", 60)
    assert not await store.finish("ok", FAILED, "", "a second end", 60), "a request ends once"
    assert await store.retire(entry, "ok") == 0, "its end removed the entry already"
    assert await store.finish("bad", FAILED, "", "stage failed", 60), "a failure frees it too"
    assert await store.tenant_unfinished() == {}
    assert await store.r.xlen(store.k.work) == 0
    status = await store.status("ok")
    assert status.state == SUCCEEDED and status.answer == "answer"
    assert 0 < await store.r.ttl(store.k.req("ok")) <= 60


async def test_an_entry_whose_record_is_gone_frees_its_slot_once(store):
    """A record deleted or lost (Redis crash) while its entry waits: the executor that meets
    the entry retires it, and that frees the slot."""
    assert await admit(store, "orphan", "acme")
    await store.r.xgroup_create(store.k.work, WORK_GROUP, id="0")
    [[_, [(entry, _)]]] = await store.r.xreadgroup(WORK_GROUP, "ex", {store.k.work: ">"})
    await store.r.delete(*store.k.request_keys("orphan"))
    assert not await store.finish("orphan", SUCCEEDED, "", "", 60), "nothing to end"
    assert await store.retire(entry, "orphan") == 1
    assert await store.retire(entry, "orphan") == 0
    assert await store.tenant_unfinished() == {}
    assert (await store.r.xpending(store.k.work, WORK_GROUP))["pending"] == 0


async def test_an_unfinished_request_keeps_its_entry(store):
    """A Redis crash lost the request's end (it is RUNNING again) while its executor, told
    the end succeeded, retires the entry on the restarted Redis: the entry stays pending, so
    the request is claimed and run again instead of stranded with its client waiting."""
    assert await admit(store, "lost-end", "acme")
    await store.r.xgroup_create(store.k.work, WORK_GROUP, id="0")
    [[_, [(entry, _)]]] = await store.r.xreadgroup(WORK_GROUP, "ex", {store.k.work: ">"})
    assert await store.mark_running("lost-end")
    before = await store.snapshot()
    assert await store.retire(entry, "lost-end") == -1
    assert await store.snapshot() == before
    assert (await store.r.xpending(store.k.work, WORK_GROUP))["pending"] == 1
    assert await store.tenant_unfinished() == {"acme": 1}


async def test_writes_about_an_ended_or_missing_request_are_refused(store):
    result = common_pb2.StageResult(stage="s", output="late")
    assert not await store.mark_running("nobody")
    assert not await store.record_stage("nobody", result)
    assert await store.r.exists(store.k.req("nobody"), store.k.stages("nobody")) == 0
    assert await admit(store, "done", "acme")
    assert await store.mark_running("done")
    assert await store.finish("done", SUCCEEDED, "answer", "", 60)
    assert not await store.mark_running("done")
    assert not await store.record_stage("done", result)
    assert (await store.status("done")).state == SUCCEEDED


async def test_a_cancel_ends_it_once_frees_its_slot_and_tells_the_scheduler(store):
    assert await admit(store, "c1", "acme")
    ps = store.r.pubsub()
    await ps.subscribe(store.k.cancel_channel)
    assert await store.cancel("c1", "cancelled by CancelRequest", 60)
    assert not await store.cancel("c1", "again", 60), "a request is cancelled once"
    status = await store.status("c1")
    assert status.state == common_pb2.REQUEST_STATE_CANCELLED
    assert status.error == "cancelled by CancelRequest"
    assert await store.tenant_unfinished() == {} and await store.r.xlen(store.k.work) == 0
    told = [await ps.get_message(ignore_subscribe_messages=True, timeout=1) for _ in range(2)]
    assert [m["data"] for m in told if m] == [b"c1"]
    await ps.aclose()
    assert await store.finish("c2", SUCCEEDED, "", "", 60) is None


async def test_a_disconnect_cancels_when_the_last_client_leaves(store):
    fields = {"workflow_id": "w", "tenant": "", "state": common_pb2.REQUEST_STATE_QUEUED,
              "cancel_on_disconnect": 1}  # as the router admits it
    assert await store.admit("d1", fields, b"*", b"", client="first")
    assert await store.attach("d1", "second") is True
    assert not await store.detach("d1", "first"), "one client is left"
    assert not await store.detach("d1", "first"), "leaving twice, or never having come, is no-op"
    assert await store.detach("d1", "second")
    assert await store.attach("d1", "late") is True  # comes back before the cancel lands
    assert not await store.cancel("d1", "left", 60, unfollowed=True), "followed again"
    assert (await store.status("d1")).state == common_pb2.REQUEST_STATE_QUEUED
    assert await store.detach("d1", "late")
    assert await store.cancel("d1", "left", 60, unfollowed=True)
    assert (await store.status("d1")).state == common_pb2.REQUEST_STATE_CANCELLED
    assert await store.attach("d1", "after") is False, "an ended request counts no one"
    assert 0 < await store.r.ttl(store.k.clients("d1")) <= 60 or not await store.r.exists(
        store.k.clients("d1"))
    assert await admit(store, "plain", "")
    assert await store.attach("plain", "x") is False, "not counted without the flag"
    assert not await store.detach("plain", "x")
    assert await store.attach("nobody", "x") is None
    assert not await store.detach("nobody", "x")
    assert not await store.r.exists(store.k.clients("plain"), store.k.clients("nobody"))


async def test_a_schedulers_choice_never_brings_back_a_lost_request(store):
    """A Redis crash lost the request's record while the scheduler still had it queued: the
    commit of its stage's choice writes nothing about it (a record holding only `viable`
    would keep its client following it to the deadline), and the lease is still recorded."""
    me = "scheduler-a"
    await store.commit(me, 5000, store.w_lease("L1", "{}") + store.w_choice("lost", "s", "m", 3))
    assert await store.r.exists(store.k.req("lost"), store.k.chosen("lost")) == 0
    assert await store.recorded_lease_ids() == {"L1"}
    assert await admit(store, "live", "acme")
    await store.commit(me, 5000, store.w_choice("live", "s", "m", 3))
    assert await store.r.hget(store.k.req("live"), "viable") == b"3"
    assert await store.r.hgetall(store.k.chosen("live")) == {b"s": b"m"}
    await store.commit(me, 5000, store.w_no_choice("live", "s") + store.w_no_lease("L1"))
    assert await store.r.exists(store.k.chosen("live")) == 0
    assert await store.recorded_lease_ids() == set()
