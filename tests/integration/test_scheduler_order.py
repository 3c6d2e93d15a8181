"""The meta-queue's order, in process against a real Redis: requests are served FIFO by
arrival, so a request's later stage goes before a newer request's first stage."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from aragog.common.settings import SchedulerSettings
from aragog.common.store import Store, connect, encode_configs
from aragog.common.workflow import parse_workflow
from aragog.scheduler.service import Scheduler
from aragog.stack import shipped_workflow

pytestmark = pytest.mark.integration


async def test_an_older_requests_next_stage_goes_before_a_newer_requests_first(
        redis_url, namespace, one_slot_pool):
    pool = one_slot_pool
    store = Store(connect(redis_url), namespace)
    scheduler = Scheduler(SchedulerSettings(namespace=namespace), store, pool)
    await scheduler.start()
    try:
        wf = parse_workflow(shipped_workflow("chain3"), pool.names)
        assert await store.put_workflow(wf)
        only_70b = encode_configs(np.array([wf.config_index(["llama3-70b"] * 3)]))
        for rid, created in (("holder", 1.0), ("old", 2.0), ("new", 3.0)):
            await store.r.hset(store.k.req(rid),
                               mapping={"workflow_id": wf.id, "created_at": created})
            await store.r.set(store.k.f(rid), only_70b)
            await store.r.set(store.k.owner(rid), "t")  # executor "t" claimed it

        # `old` runs its first stage and finishes it while `holder` keeps the 70B busy
        old_draft = await asyncio.wait_for(scheduler.acquire("old", "draft", "t"), 5)
        holder = asyncio.create_task(scheduler.acquire("holder", "draft", "t"))
        assert await scheduler.release(old_draft.lease_id, True)
        holder_lease = await asyncio.wait_for(holder, 5)

        # the newer request's first stage queues before the older one's second stage
        new_draft = asyncio.create_task(scheduler.acquire("new", "draft", "t"))
        await asyncio.sleep(0.1)
        old_critique = asyncio.create_task(scheduler.acquire("old", "critique", "t"))
        await asyncio.sleep(0.1)
        assert not new_draft.done() and not old_critique.done()

        assert await scheduler.release(holder_lease.lease_id, True)
        granted = await asyncio.wait_for(old_critique, 5)
        assert granted.model == "llama3-70b"
        assert not new_draft.done()  # the 70B's one slot went to the older request
        assert await scheduler.release(granted.lease_id, True)
        await asyncio.wait_for(new_draft, 5)
    finally:
        await scheduler.stop()
        await store.r.aclose()
