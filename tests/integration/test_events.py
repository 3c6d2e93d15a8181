"""The router's event hub on a real Redis: many followers, few connections, no lost event."""

from __future__ import annotations

import asyncio
import time

import pytest

from aragog.common.store import Store, connect
from aragog.router.events import EventHub, RequestGone
from aragog.v1 import common_pb2, router_pb2

pytestmark = [pytest.mark.integration, pytest.mark.same_both_ways]


def stage_event(rid: str, i: int) -> bytes:
    return router_pb2.SubmitRequestResponse(
        request_id=rid, stage_finished=common_pb2.StageResult(stage=f"s{i}")
    ).SerializeToString()


def completed_event(rid: str) -> bytes:
    return router_pb2.SubmitRequestResponse(
        request_id=rid, completed=common_pb2.RequestStatus(request_id=rid)
    ).SerializeToString()


async def admitted(store: Store, *rids: str) -> None:
    """Give the requests a record: a follower ends when its request's record is gone."""
    async with store.r.pipeline(transaction=False) as p:
        for rid in rids:
            p.hset(store.k.req(rid), "state", common_pb2.REQUEST_STATE_QUEUED)
        await p.execute()


async def collect(hub: EventHub, rid: str, timeout_s: float = 20) -> list[str]:
    out = []
    async for event in hub.follow(rid, time.monotonic() + timeout_s):
        kind = event.WhichOneof("event")
        out.append(event.stage_finished.stage if kind == "stage_finished" else kind)
    return out


async def test_more_followers_than_connections_get_every_event_in_order(redis_url, namespace):
    """300 concurrent streams through a pool of 4 connections (redis-py's own default caps an
    unbounded pool at 100 and raises past it)."""
    store = Store(connect(redis_url, max_connections=4), namespace)
    hub = EventHub(store)
    await hub.start()
    try:
        rids = [f"r{i}" for i in range(300)]
        await admitted(store, *rids)
        followers = [asyncio.create_task(collect(hub, rid)) for rid in rids]
        await asyncio.sleep(0.2)
        for i in range(3):
            for rid in rids:
                async with store.r.pipeline(transaction=True) as p:
                    store.add_event(p, rid, stage_event(rid, i))
                    await p.execute()
        for rid in rids:
            async with store.r.pipeline(transaction=True) as p:
                store.add_event(p, rid, completed_event(rid))
                await p.execute()
        results = await asyncio.wait_for(asyncio.gather(*followers), 30)
        assert all(r == ["s0", "s1", "s2", "completed"] for r in results)
        assert not hub._followers  # every finished follower unregistered
    finally:
        await hub.stop()
        await store.r.aclose()


async def test_a_lost_notification_costs_delay_not_the_event(redis_url, namespace):
    """An event appended without its pub/sub wake-up (as when the hub was reconnecting) is
    still delivered, by the follower's periodic re-read."""
    store = Store(connect(redis_url), namespace)
    hub = EventHub(store, poll_s=0.2)
    await hub.start()
    try:
        await admitted(store, "quiet")
        follower = asyncio.create_task(collect(hub, "quiet"))
        await asyncio.sleep(0.1)
        await store.r.xadd(store.k.events("quiet"), {"e": completed_event("quiet")})
        assert await asyncio.wait_for(follower, 5) == ["completed"]
    finally:
        await hub.stop()
        await store.r.aclose()


async def test_follow_gives_up_at_the_deadline(redis_url, namespace):
    store = Store(connect(redis_url), namespace)
    hub = EventHub(store, poll_s=0.05)
    await hub.start()
    try:
        await admitted(store, "never")
        with pytest.raises(TimeoutError):
            await collect(hub, "never", timeout_s=0.3)
        assert not hub._followers
    finally:
        await hub.stop()
        await store.r.aclose()


async def test_follow_ends_when_the_record_is_gone(redis_url, namespace):
    """A request whose record disappears (Redis lost it in a crash) ends its followers with
    RequestGone at their next re-read, instead of keeping them to their deadline."""
    store = Store(connect(redis_url), namespace)
    hub = EventHub(store, poll_s=0.05)
    await hub.start()
    try:
        await admitted(store, "lost")
        follower = asyncio.create_task(collect(hub, "lost"))
        await asyncio.sleep(0.2)
        assert not follower.done()
        await store.r.delete(store.k.req("lost"))
        with pytest.raises(RequestGone):
            await asyncio.wait_for(follower, 5)
        assert not hub._followers
    finally:
        await hub.stop()
        await store.r.aclose()
