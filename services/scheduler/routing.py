"""Routing refresh: the router's F(r) swapped into queued requests as soon as it is written.

The router admits a request with a placeholder F(r) (the largest configuration) and writes
the real one when its routing finishes, ~15 ms later at p99. Without this a stage queued on
the placeholder could only ever be placed on the largest model, however long it waited. A
stage is held back from rounds for at most routing_wait_s; past that it is placed from the
placeholder, so a slow or dead router costs GPU time, never a request. The placeholder
always holds the largest configuration, so whatever was placed from it stays consistent with
some configuration of the final F(r) that includes it.
"""

from __future__ import annotations

import asyncio
import time

import structlog
from aragog.common.store import Store
from aragog.scheduler.placement import CompiledWorkflow, Entry

log = structlog.get_logger("scheduler")

POLL_S = 0.005  # how often queued requests still being routed look for their F(r)


class RoutingRefresh:
    def __init__(self, store: Store, queue: dict[str, Entry],
                 workflows: dict[str, CompiledWorkflow], kick: asyncio.Event, wait_s: float):
        """`queue`, `workflows`: the scheduler's own (read, never replaced); `kick` wakes
        its round loop when a held-back request may be placed now."""
        self.store = store
        self.queue = queue
        self.workflows = workflows
        self.kick = kick
        self.wait_s = wait_s
        self.pending = asyncio.Event()  # set when some queued stage's request is being routed

    def held_back(self, entry: Entry, now: float) -> bool:
        """Still waiting for its F(r), and not yet for routing_wait_s."""
        return entry.partial and entry.seen > now - self.wait_s

    async def refresh(self, entries: list[Entry]) -> None:
        """Take the router's finished F(r) of any of `entries` (one Redis round trip)."""
        routings = await self.store.routings([e.request_id for e in entries])
        for entry, (pending, f_raw) in zip(entries, routings, strict=True):
            if not entry.partial or pending or f_raw is None:
                continue
            admitted = self.workflows[entry.workflow.id].admitted(f_raw)
            if admitted is not None:
                entry.admitted = admitted
                entry.renarrow()
            entry.partial = False

    async def run(self) -> None:
        while True:
            await self.pending.wait()
            await asyncio.sleep(POLL_S)
            pending = [e for e in self.queue.values() if e.partial and e.waiters]
            if not pending:
                self.pending.clear()
                continue
            try:
                await self.refresh(pending)
            except asyncio.CancelledError:
                raise
            except Exception:  # Redis away: the stages are placed from the placeholder
                log.exception("routing_refresh_failed")
            held_until = time.monotonic() - self.wait_s
            for e in pending:
                if not e.partial or (e.seen <= held_until and not e.hold_over):
                    e.hold_over = e.seen <= held_until
                    self.kick.set()
