"""The scheduler's group commit: its Redis writes, batched and fenced.

A round's grants and the releases and renewals that arrived since the previous round go out
in one transaction (aragog.common.store's COMMIT_LUA), and each caller is answered once that
transaction succeeded: a grant is never returned before it is recorded. If Redis fails, the
batch is kept and retried on the next kick; callers wait meanwhile. The transaction runs only
while this scheduler holds the leadership key (leadership.py): one that lost it raises
LeadershipLost and records nothing more.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aragog.common.store import NotActive, Store, Write
from aragog.scheduler.leadership import Leadership, LeadershipLost


class GroupCommit:
    def __init__(self, store: Store, leadership: Leadership, kick: asyncio.Event):
        """`kick` wakes the loop that calls `flush` (the scheduler's round loop)."""
        self.store = store
        self.leadership = leadership
        self._kick = kick
        self._writes: list[Write] = []
        self._after: list[Callable[[], None]] = []

    def add(self, writes: list[Write]) -> None:
        """Queue `writes` (Store's w_* methods) for the next flush."""
        self._writes += writes

    def then(self, callback: Callable[[], None]) -> None:
        """Call `callback` once everything queued so far is recorded."""
        self._after.append(callback)

    async def recorded(self, writes: list[Write]) -> None:
        """Queue `writes`, wake the flush and wait until Redis has them."""
        done = asyncio.get_running_loop().create_future()
        self.add(writes)
        self.then(lambda: done.done() or done.set_result(None))
        self._kick.set()
        await asyncio.shield(done)  # a caller that leaves does not take the write with it

    async def flush(self) -> None:
        """Send every queued write in one transaction, then run the callbacks waiting on them.

        On failure the batch goes back to the front of the queue (retried on the next flush).
        """
        if not self._writes and not self._after:
            return
        writes, after = self._writes, self._after
        self._writes, self._after = [], []
        try:
            if writes:
                await self.store.commit(self.leadership.me, self.leadership.ttl_ms, writes)
        except BaseException as e:
            self._writes[:0], self._after[:0] = writes, after
            if isinstance(e, NotActive):
                raise LeadershipLost(str(e)) from e
            raise
        for done in after:
            done()
