"""Cancellation in the scheduler, in process against a real Redis: a cancelled request's
waiting stages are refused, its leases freed for others, its later stages refused."""

from __future__ import annotations

import asyncio

import grpc
import numpy as np
import pytest
from aragog.common.settings import SchedulerSettings
from aragog.common.store import Store, connect, encode_configs
from aragog.common.workflow import parse_workflow
from aragog.scheduler.service import Scheduler, StageRejected
from aragog.stack import shipped_workflow
from aragog.v1 import common_pb2

pytestmark = pytest.mark.integration


async def test_a_cancel_withdraws_waiting_stages_and_frees_leases(
        redis_url, namespace, one_slot_pool):
    store = Store(connect(redis_url), namespace)
    scheduler = Scheduler(SchedulerSettings(namespace=namespace), store, one_slot_pool)
    await scheduler.start()
    try:
        wf = parse_workflow(shipped_workflow("chain3"), one_slot_pool.names)
        assert await store.put_workflow(wf)
        only_70b = encode_configs(np.array([wf.config_index(["llama3-70b"] * 3)]))
        for i, rid in enumerate(("holder", "waiter", "next")):
            await store.r.hset(store.k.req(rid), mapping={
                "workflow_id": wf.id, "created_at": float(i),
                "state": common_pb2.REQUEST_STATE_RUNNING})
            await store.r.set(store.k.f(rid), only_70b)
            await store.r.set(store.k.owner(rid), "t")  # executor "t" claimed it
        held = await asyncio.wait_for(scheduler.acquire("holder", "draft", "t"), 5)
        waiting = asyncio.create_task(scheduler.acquire("waiter", "draft", "t"))
        await asyncio.sleep(0.1)
        assert scheduler.state().queued_stages == 1

        assert await store.cancel("waiter", "test", 60)
        with pytest.raises(StageRejected) as err:
            await asyncio.wait_for(waiting, 5)
        assert err.value.code == grpc.StatusCode.FAILED_PRECONDITION
        assert "was cancelled" in err.value.message
        assert scheduler.state().queued_stages == 0

        after = asyncio.create_task(scheduler.acquire("next", "draft", "t"))
        await asyncio.sleep(0.1)
        assert not after.done(), "the 70B's one slot is held"
        assert await store.cancel("holder", "test", 60)
        granted = await asyncio.wait_for(after, 5)  # the holder's lease went to the next
        assert held.lease_id not in scheduler.leases
        assert not await store.r.hexists(store.k.leases, held.lease_id)
        with pytest.raises(StageRejected) as err:
            await scheduler.acquire("holder", "critique", "t")
        assert err.value.code == grpc.StatusCode.FAILED_PRECONDITION
        assert await scheduler.release(granted.lease_id, True)
    finally:
        await scheduler.stop()
        await store.r.aclose()


async def test_a_scheduler_refuses_a_request_cancelled_before_it_knew_it(
        redis_url, namespace, one_slot_pool):
    """Cancelled while no scheduler listened (a restart): refused from its record."""
    store = Store(connect(redis_url), namespace)
    wf = parse_workflow(shipped_workflow("chain3"), one_slot_pool.names)
    assert await store.put_workflow(wf)
    await store.r.hset(store.k.req("gone"), mapping={
        "workflow_id": wf.id, "created_at": 1.0, "state": common_pb2.REQUEST_STATE_QUEUED})
    await store.r.set(store.k.f("gone"), encode_configs(None))
    await store.r.set(store.k.owner("gone"), "t")
    assert await store.cancel("gone", "test", 60)
    scheduler = Scheduler(SchedulerSettings(namespace=namespace), store, one_slot_pool)
    await scheduler.start()
    try:
        with pytest.raises(StageRejected) as err:
            await scheduler.acquire("gone", "draft", "t")
        assert err.value.code == grpc.StatusCode.FAILED_PRECONDITION
        assert scheduler.state().queued_stages == 0 and not scheduler.leases
    finally:
        await scheduler.stop()
        await store.r.aclose()
