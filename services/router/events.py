"""Following requests' event streams: one Redis pub/sub connection per router, not one each.

Every writer of a request's events stream also publishes the request id on `{ns}:events`
(`Store.add_event`). The hub listens on that channel and wakes the router's followers of
that request, which then read the new stream entries with a short XRANGE. A follower never
holds a Redis connection while it waits, so a router serves as many concurrent
SubmitRequest streams as it has memory for.

Pub/sub is at-most-once (a notification published while the hub reconnects is lost), so a
follower also re-reads its stream every `poll_s`: a lost wake-up costs delay, never an event.
When such a re-read finds nothing new, the follower checks that the request's record still
exists: a Redis that crashed loses its last second of writes, admissions included, and a
client must hear that its request is gone rather than wait for it to its deadline. While
Redis is unreachable (restarting) a follower keeps waiting, as the request does.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from aragog.common.store import REDIS_AWAY, Store
from aragog.v1 import router_pb2

READ_BATCH = 100


class RequestGone(Exception):
    """The request's record is no longer in Redis (lost in a Redis crash, or deleted)."""


class EventHub:
    def __init__(self, store: Store, poll_s: float = 1.0):
        self.store = store
        self.poll_s = poll_s
        self._followers: dict[str, set[asyncio.Event]] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        subscribed = asyncio.Event()
        self._task = asyncio.create_task(self._listen(subscribed))
        await subscribed.wait()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _listen(self, subscribed: asyncio.Event) -> None:
        async def on_subscribed() -> None:
            subscribed.set()
            self._wake_all()  # whatever was published while we were away

        await self.store.follow_events(self._wake, on_subscribed)

    def _wake(self, rid: bytes) -> None:
        for wake in self._followers.get(rid.decode(), ()):
            wake.set()

    async def _gone(self, rid: str) -> bool:
        try:
            return not await self.store.has_request(rid)
        except REDIS_AWAY:
            return False  # unknown yet

    def _wake_all(self) -> None:
        for wakes in self._followers.values():
            for wake in wakes:
                wake.set()

    async def follow(self, rid: str, deadline: float) -> AsyncIterator[router_pb2.SubmitRequestResponse]:
        """The request's events from the first, then as they come, until `completed`.

        Raises TimeoutError when time.monotonic() passes `deadline` first, RequestGone when
        the request's record disappears before its final event.
        """
        wake = asyncio.Event()
        self._followers.setdefault(rid, set()).add(wake)
        after = b"-"
        try:
            while True:
                wake.clear()  # before the read: a publish after it wakes the wait below
                try:
                    entries = await self.store.events(rid, after, READ_BATCH)
                except REDIS_AWAY:  # a slow Redis restart: the request waits too, so do we
                    entries = None
                for entry_id, event in entries or ():
                    after = entry_id  # the next read starts past it
                    yield event
                    if event.WhichOneof("event") == "completed":
                        return
                if entries is None or len(entries) < READ_BATCH:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise TimeoutError(rid)
                    try:
                        await asyncio.wait_for(wake.wait(), min(self.poll_s, remaining))
                    except TimeoutError:
                        if entries is not None and await self._gone(rid):
                            raise RequestGone(rid) from None
        finally:
            wakes = self._followers.get(rid)
            if wakes is not None:
                wakes.discard(wake)
                if not wakes:
                    del self._followers[rid]
