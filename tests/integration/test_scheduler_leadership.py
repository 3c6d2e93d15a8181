"""One active scheduler per pool, in process against a real Redis: a standby waits for the
leadership key, and a scheduler that lost it records nothing more (the fence)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from aragog.common.pool import load_pool
from aragog.common.settings import SchedulerSettings
from aragog.common.store import Store, connect, encode_configs
from aragog.common.workflow import parse_workflow
from aragog.scheduler.service import Scheduler, StageRejected
from aragog.stack import shipped_workflow

pytestmark = pytest.mark.integration


def scheduler(redis_url: str, namespace: str, lost: list) -> tuple[Scheduler, Store]:
    store = Store(connect(redis_url), namespace)
    settings = SchedulerSettings(namespace=namespace, leader_ttl_s=0.6)
    return Scheduler(settings, store, load_pool(None), on_lost=lambda: lost.append(1)), store


async def admitted(store: Store, rid: str) -> None:
    wf = parse_workflow(shipped_workflow("chain3"), load_pool(None).names)
    await store.put_workflow(wf)
    await store.r.hset(store.k.req(rid), mapping={"workflow_id": wf.id, "routing": "done"})
    await store.r.set(store.k.f(rid), encode_configs(np.array([0])))
    await store.r.set(store.k.owner(rid), "t")


async def test_a_standby_waits_refuses_and_takes_over_when_the_active_one_stops(redis_url, namespace):
    lost: list = []
    a, store = scheduler(redis_url, namespace, lost)
    b, _ = scheduler(redis_url, namespace, lost)
    await a.start()
    b_started = asyncio.create_task(b.start())
    try:
        await asyncio.sleep(0.5)
        assert not b_started.done() and not b.active, "the key is held: b is a standby"
        with pytest.raises(StageRejected) as err:
            await b.acquire("r1", "draft", "t")
        assert err.value.code.name == "UNAVAILABLE" and "standby" in err.value.message
        await admitted(store, "r1")
        grant = await asyncio.wait_for(a.acquire("r1", "draft", "t"), 5)
        await a.stop()  # resigns: b takes the key at its next poll, and a's lease with it
        await asyncio.wait_for(b_started, 2)
        assert b.active and list(b.leases) == [grant.lease_id]
        await b.release_stage(grant.lease_id, True)
        assert await store.r.hlen(store.k.leases) == 0
    finally:
        b_started.cancel()
        await b.stop()
        await store.r.aclose()
    assert not lost


async def test_a_scheduler_that_lost_the_key_records_nothing(redis_url, namespace):
    """Paused past its lease (here: the key handed to another by hand), the old active
    scheduler's next group commit is refused in Redis, it stops placing, and says so."""
    lost: list = []
    a, store = scheduler(redis_url, namespace, lost)
    await a.start()
    try:
        await admitted(store, "r1")
        await store.r.set(store.k.scheduler, "another-scheduler", px=60_000)
        before = await store.snapshot()
        acquire = asyncio.create_task(a.acquire("r1", "draft", "t"))
        await asyncio.sleep(1.0)
        assert not acquire.done(), "no grant is answered that Redis did not record"
        assert lost == [1] and not a.active
        assert await store.snapshot() == before, "nothing written after the key was lost"
        acquire.cancel()
    finally:
        await a.stop()
        await store.r.aclose()


async def test_a_lapsed_key_nobody_took_is_taken_back(redis_url, namespace):
    """Redis away longer than the key's TTL (or restarted without it): the active scheduler
    is still the only one, so its next commit takes the key back instead of stopping."""
    lost: list = []
    a, store = scheduler(redis_url, namespace, lost)
    await a.start()
    try:
        await admitted(store, "r1")
        await store.r.delete(store.k.scheduler)
        grant = await asyncio.wait_for(a.acquire("r1", "draft", "t"), 5)
        assert grant.model and not lost and a.active
        assert (await store.r.get(store.k.scheduler)).decode() == a.leadership.me
        assert await store.r.hexists(store.k.leases, grant.lease_id)
    finally:
        await a.stop()
        await store.r.aclose()
