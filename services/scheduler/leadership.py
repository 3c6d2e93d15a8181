"""One active scheduler per pool: whoever holds the `{ns}:scheduler` key in Redis.

The key's scripts are in aragog.common.store. Every scheduler starts as a standby: it answers RPCs with UNAVAILABLE (executors move on to
the next scheduler address) and its health is NOT_SERVING (a Kubernetes Service routes to
the active one only) while it waits for the key. The active one renews the key every third
of `leader_ttl_s`; if it dies, the key lapses and a standby takes it, reloads the leases from
Redis and serves. A stopping scheduler deletes the key at once, so a standby takes over
within a poll. Waiting acquires are not handed over: their executors re-send them, as after
any scheduler restart.

Fencing: the group commit writes only while Redis says this scheduler holds the key (the
check is in the same script as the writes), so a scheduler paused past its lease (a long GC,
a frozen VM) cannot record grants after a standby took over. One that finds it lost the key
stops (fail-stop); its supervisor starts it again as a standby.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid

import structlog

from aragog.common.store import Store

log = structlog.get_logger("scheduler")

class LeadershipLost(Exception):
    """Another scheduler holds the key: this one must stop placing."""


class Leadership:
    def __init__(self, store: Store, ttl_s: float, me: str = ""):
        self.store = store
        self.ttl_ms = max(1, int(ttl_s * 1000))
        self.period_s = ttl_s / 3
        self.me = me or f"{socket.gethostname()[:40]}-{os.getpid()}-{uuid.uuid4().hex[:6]}"

    async def hold(self) -> bool:
        """Take or renew the key; True if this scheduler holds it now."""
        return await self.store.hold_leadership(self.me, self.ttl_ms)

    async def acquire(self) -> None:
        """Wait until this scheduler is the active one."""
        waited = False
        while not await self._try_hold():
            if not waited:
                log.info("standby", active=await self.store.leader())
                waited = True
            await asyncio.sleep(self.period_s)
        log.info("active", scheduler=self.me, took_over=waited)

    async def keep(self) -> None:
        """Renew the key until cancelled; raise LeadershipLost if another took it."""
        while True:
            await asyncio.sleep(self.period_s)
            try:
                held = await self.hold()
            except asyncio.CancelledError:
                raise
            except Exception:  # Redis away: the commit's fence stops us if the key lapses
                log.exception("leadership_renew_failed")
                continue
            if not held:
                raise LeadershipLost(f"scheduler {self.me} lost the leadership key")

    async def resign(self) -> None:
        await self.store.resign_leadership(self.me)

    async def _try_hold(self) -> bool:
        try:
            return await self.hold()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("leadership_unreachable")
            return False
