"""The scheduler and a request still being routed (placeholder F(r)), in process against a
real Redis: a stage waits a bounded time for the router's F(r), then falls back."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from aragog.common.pool import load_pool
from aragog.common.settings import SchedulerSettings
from aragog.common.store import ROUTING_PENDING, Store, connect, encode_configs
from aragog.common.workflow import parse_workflow
from aragog.scheduler.service import Scheduler
from aragog.stack import shipped_workflow

pytestmark = pytest.mark.integration


async def routed_request(redis_url: str, namespace: str, wait_s: float):
    """A running in-process scheduler and a chain3 request admitted with the placeholder F(r)
    (the largest configuration) and routing pending, as the router leaves it at admission."""
    pool = load_pool(None)
    store = Store(connect(redis_url), namespace)
    settings = SchedulerSettings(namespace=namespace, routing_wait_s=wait_s)
    scheduler = Scheduler(settings, store, pool)
    await scheduler.start()
    wf = parse_workflow(shipped_workflow("chain3"), pool.names)
    assert await store.put_workflow(wf)
    largest = wf.config_index(["llama3-70b"] * 3)
    await store.r.hset(store.k.req("r1"),
                       mapping={"workflow_id": wf.id, "routing": ROUTING_PENDING})
    await store.r.set(store.k.f("r1"), encode_configs(np.array([largest])))
    await store.r.set(store.k.owner("r1"), "t")  # executor "t" claimed it
    return scheduler, store, wf


async def test_a_stage_waits_for_the_routers_f_instead_of_taking_the_largest(redis_url, namespace):
    scheduler, store, wf = await routed_request(redis_url, namespace, wait_s=30.0)
    try:
        grant = asyncio.create_task(scheduler.acquire("r1", "draft", "t"))
        await asyncio.sleep(0.3)
        assert not grant.done()  # the 70B is free, yet the stage waits for F(r)
        cheap = [wf.config_index(["llama3-3b"] * 3), wf.config_index(["llama3-70b"] * 3)]
        async with store.r.pipeline(transaction=True) as p:
            p.set(store.k.f("r1"), encode_configs(np.array(cheap)))
            p.hset(store.k.req("r1"), "routing", "done")
            await p.execute()
        assert (await asyncio.wait_for(grant, 5)).model == "llama3-3b"
    finally:
        await scheduler.stop()
        await store.r.aclose()


async def test_a_stage_whose_routing_never_finishes_runs_on_the_placeholder(redis_url, namespace):
    scheduler, store, _ = await routed_request(redis_url, namespace, wait_s=0.2)
    try:
        grant = await asyncio.wait_for(scheduler.acquire("r1", "draft", "t"), 5)
        assert grant.model == "llama3-70b"
    finally:
        await scheduler.stop()
        await store.r.aclose()
