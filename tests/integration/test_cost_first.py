"""The cost-first round, in process against a real Redis (one slot per model): a request runs
its cheapest plan, takes a dearer model of its F(r) only when nobody queued wants that model,
and does take it then. The work-conserving round is run beside it on the same situation, so
each test shows what the cost-first round changes."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from aragog.common.settings import SchedulerSettings
from aragog.common.store import Store, connect, encode_configs
from aragog.common.workflow import parse_workflow
from aragog.scheduler.service import ESCALATED, Scheduler
from aragog.stack import shipped_workflow

pytestmark = pytest.mark.integration

SMALL, MID, LARGE = "llama3-3b", "llama3-8b", "llama3-70b"
RIDS = ("r", "holder", "holder8", "holder70", "flexible", "rigid")


async def _setup(redis_url: str, namespace: str, pool, placement: str):
    store = Store(connect(redis_url), namespace)
    scheduler = Scheduler(SchedulerSettings(namespace=namespace, placement=placement), store, pool)
    await scheduler.start()
    wf = parse_workflow(shipped_workflow("chain3"), pool.names)
    assert await store.put_workflow(wf)
    return store, scheduler, wf


async def _admit(store: Store, wf, rid: str, created: float, configs: list[list[str]]) -> None:
    f = np.array(sorted(wf.config_index(c) for c in configs), dtype=np.int64)
    await store.r.hset(store.k.req(rid), mapping={"workflow_id": wf.id, "created_at": created})
    await store.r.set(store.k.f(rid), encode_configs(f))
    await store.r.set(store.k.owner(rid), "t")


async def _cleanup(store: Store, scheduler: Scheduler) -> None:
    await scheduler.stop()
    await store.r.delete(*[store.k.owner(rid) for rid in RIDS])
    await store.r.aclose()


@pytest.mark.parametrize(("placement", "first_model"), [
    ("cost-first", MID), ("work-conserving", SMALL)])
async def test_the_first_stage_follows_the_cheapest_plan_not_the_fastest_model(
        redis_url, namespace, one_slot_pool, placement, first_model):
    """F(r) = {3B then two 70Bs, three 8Bs}: the 3B adds the most throughput now, but three
    8Bs cost a fraction of the GPU-seconds. The work-conserving round takes the 3B (and
    commits the request to two 70B stages); the cost-first round runs the 8B plan."""
    store, scheduler, wf = await _setup(redis_url, namespace, one_slot_pool, placement)
    try:
        await _admit(store, wf, "r", 1.0, [[SMALL, LARGE, LARGE], [MID, MID, MID]])
        granted = await asyncio.wait_for(scheduler.acquire("r", "draft", "t"), 5)
        assert granted.model == first_model
    finally:
        await _cleanup(store, scheduler)


@pytest.mark.parametrize("placement", ["cost-first", "work-conserving"])
async def test_a_stage_moves_to_an_idle_larger_model_when_its_cheap_one_is_full(
        redis_url, namespace, one_slot_pool, placement):
    """The 8B is saturated (its one slot held); the request's F(r) also allows the 70B for
    its first stage, and no queued stage wants the 70B: both rounds take it rather than
    wait, and the rest of the request keeps its cheap plan."""
    store, scheduler, wf = await _setup(redis_url, namespace, one_slot_pool, placement)
    try:
        await _admit(store, wf, "holder", 1.0, [[MID, MID, MID]])
        await _admit(store, wf, "r", 2.0, [[MID, MID, MID], [LARGE, MID, MID]])
        held = await asyncio.wait_for(scheduler.acquire("holder", "draft", "t"), 5)
        assert held.model == MID
        before = ESCALATED.labels(LARGE)._value.get()
        granted = await asyncio.wait_for(scheduler.acquire("r", "draft", "t"), 5)
        assert granted.model == LARGE
        assert ESCALATED.labels(LARGE)._value.get() == before + (placement == "cost-first")
        assert await scheduler.release(granted.lease_id, True)
        assert await scheduler.release(held.lease_id, True)
        nxt = await asyncio.wait_for(scheduler.acquire("r", "critique", "t"), 5)
        assert nxt.model == MID
    finally:
        await _cleanup(store, scheduler)


@pytest.mark.parametrize(("placement", "large_goes_to"), [
    ("cost-first", "rigid"), ("work-conserving", "flexible")])
async def test_a_dearer_model_is_not_taken_from_a_request_that_needs_it(
        redis_url, namespace, one_slot_pool, placement, large_goes_to):
    """The 8B is saturated; the older `flexible` request could escalate its first stage to the
    70B, the newer `rigid` one can only run there. Work-conserving, FIFO hands the 70B to the
    older request and the newer waits for it; cost-first gives it to the request that needs
    it, and the flexible one waits for its 8B."""
    store, scheduler, wf = await _setup(redis_url, namespace, one_slot_pool, placement)
    try:
        await _admit(store, wf, "holder8", 1.0, [[MID, MID, MID]])
        await _admit(store, wf, "holder70", 1.5, [[LARGE, MID, MID]])
        await _admit(store, wf, "flexible", 2.0, [[MID, MID, MID], [LARGE, MID, MID]])
        await _admit(store, wf, "rigid", 3.0, [[LARGE, LARGE, LARGE]])
        held8 = await asyncio.wait_for(scheduler.acquire("holder8", "draft", "t"), 5)
        held70 = await asyncio.wait_for(scheduler.acquire("holder70", "draft", "t"), 5)
        assert (held8.model, held70.model) == (MID, LARGE)
        flexible = asyncio.create_task(scheduler.acquire("flexible", "draft", "t"))
        rigid = asyncio.create_task(scheduler.acquire("rigid", "draft", "t"))
        await asyncio.sleep(0.3)
        assert not flexible.done() and not rigid.done()  # both queued, nothing free

        assert await scheduler.release(held70.lease_id, True)  # one round sees both
        done, _ = await asyncio.wait({flexible, rigid}, timeout=5,
                                     return_when=asyncio.FIRST_COMPLETED)
        await asyncio.sleep(0.2)
        assert len(done) == 1 and not (flexible.done() and rigid.done())
        winner, loser = (rigid, flexible) if large_goes_to == "rigid" else (flexible, rigid)
        assert done == {winner}
        assert winner.result().model == LARGE

        assert await scheduler.release(held8.lease_id, True)
        if large_goes_to == "rigid":  # the flexible request runs on its freed 8B
            assert (await asyncio.wait_for(loser, 5)).model == MID
        else:  # the rigid request still waits for the 70B the flexible one took
            await asyncio.sleep(0.2)
            assert not loser.done()
            assert await scheduler.release(winner.result().lease_id, True)
            assert (await asyncio.wait_for(loser, 5)).model == LARGE
    finally:
        await _cleanup(store, scheduler)
