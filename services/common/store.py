"""Redis: the one place that knows Aragog's key layout.

Every key starts with the namespace `ns` (setting ARAGOG_NAMESPACE, default `aragog`):

| key | type | written by | holds |
|---|---|---|---|
| `{ns}:pool` | string | scheduler (start) | the model pool, PoolSpec JSON |
| `{ns}:pool:state` | hash | scheduler | model -> its deployment state (serving, draining, unloaded, loading, failed; absent: serving) |
| `{ns}:pool:changes` | stream, capped | scheduler | the pool's changes: at, by, action, model, state, detail |
| `{ns}:workflows` | hash | router | workflow id -> validated YAML (write-once per id) |
| `{ns}:outcomes:{workflow}` | hash | router | `{model}:n`, `{model}:reward`: outcomes reported (ReportOutcome), per model credited |
| `{ns}:workflows:deprecated` | hash | router | workflow id -> when it was deprecated (no new requests) |
| `{ns}:tenant-requests:{tenant}` | sorted set, TTL | router | the tenant's request ids by admission time (ListRequests), trimmed to the request TTL |
| `{ns}:req:{id}` | hash | router, executor | the request (fields below) |
| `{ns}:req:{id}:f` | string | router | F(r): sorted int64 config indices, or `*` for every configuration |
| `{ns}:req:{id}:chosen` | hash | scheduler | LLM stage -> model chosen so far (C(r) = F(r) narrowed by it) |
| `{ns}:req:{id}:stages` | hash | executor | stage -> StageResult (protobuf bytes) |
| `{ns}:req:{id}:events` | stream | router, executor | progress events (SubmitRequestResponse bytes) |
| `{ns}:req:{id}:clients` | set | router | the streams following it (if cancel_on_disconnect) |
| `{ns}:events` | pub/sub channel | router, executor | request id, published after each append to its events stream |
| `{ns}:cancelled` | pub/sub channel | router | id of a request just cancelled (for the scheduler) |
| `{ns}:req:{id}:owner` | string, TTL | executor | executor id running the request (heartbeat-renewed) |
| `{ns}:work` | stream | router, executor | the unfinished requests, {rid, tenant} each (below) |
| `{ns}:tenants` | hash | router, executor | tenant -> its unfinished requests (below) |
| `{ns}:leases` | hash | scheduler | lease id -> JSON {model, request, stage, executor, expires} |
| `{ns}:scheduler` | string, TTL | scheduler | id of the active scheduler (its leadership lease; standbys wait for it) |
| `{ns}:inflight:{executor}` | hash, TTL | executor | model -> stages in flight on it now |
| `{ns}:load` | string | load-monitor | newest LoadSnapshot (protobuf bytes) |

A request's hash holds workflow_id, policy, tenant, input, state, answer, error, times
(`created_at` also orders the scheduler's meta-queue), `routing` (`pending` until F(r) is
final), `work_id` (its work entry), `cancel_on_disconnect`, `stage_state` (bytes the
policy's stage role reads in the scheduler; aragog.policies.base). The clients following a
request that cancels on disconnect are in `{ns}:req:{id}:clients`, one token per stream.

The work stream holds exactly the unfinished requests (consumer group `executors`; never
trimmed): an entry goes when its request ends, so its length is what
ARAGOG_MAX_QUEUED_REQUESTS bounds. `{ns}:tenants` counts each tenant's entries ('' for no
tenant; ARAGOG_MAX_QUEUED_PER_TENANT bounds it): +1 at admission, -1 by whoever deletes
the entry, in the same script.

Finished requests' keys expire after the router's request_ttl_s. Ids inside keys follow
the one id rule (`aragog.common.bounds`: no ':'), so no id can name another record's key.

What happens to a request after admission (RUNNING, a recorded stage, its end) is written
by a script that first checks its record is there and has not ended: a request ends once,
and a record that Redis lost (a crash losing its last second of writes) or that expired is
never written back in part by an executor still running it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import redis.asyncio as aioredis
import structlog
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from aragog.common.pool import PoolSpec
from aragog.common.workflow import WorkflowDef, parse_workflow
from aragog.v1 import common_pb2, router_pb2

log = structlog.get_logger("store")
WORK_GROUP = "executors"
REDIS_AWAY = (RedisConnectionError, RedisTimeoutError)
"""What a Redis call raises when Redis stayed unreachable through the client's retries
(connect(): about 15 s), as during a slow restart."""
TERMINAL = (common_pb2.REQUEST_STATE_SUCCEEDED, common_pb2.REQUEST_STATE_FAILED,
            common_pb2.REQUEST_STATE_CANCELLED)
"""States a request never leaves."""

# Writes about a request that are refused once it has ended, or when its record is gone (a
# Redis that lost its last second of writes in a crash, or a deleted or expired record), so
# nothing runs on for a request that ended and no partial record is ever written back.
_TERMINAL_LUA = "local terminal = {" + ", ".join(f"['{s}'] = true" for s in TERMINAL) + "}\n"
_LIVE_LUA = _TERMINAL_LUA + (
    "local state = redis.call('HGET', KEYS[1], 'state')\n"
    "if not state or terminal[state] then return 0 end\n"
)
MARK_RUNNING_LUA = _LIVE_LUA + """
redis.call('HSET', KEYS[1], 'state', ARGV[1])
return 1
"""
# The executor's count of stages in flight on a model is written always; the event only
# while the request lives.
STAGE_STARTED_LUA = _TERMINAL_LUA + """
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
local state = redis.call('HGET', KEYS[1], 'state')
if not state or terminal[state] then return 0 end
redis.call('XADD', KEYS[3], '*', 'e', ARGV[3])
redis.call('PUBLISH', ARGV[4], ARGV[5])
return 1
"""
RECORD_STAGE_LUA = _LIVE_LUA + """
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('XADD', KEYS[3], '*', 'e', ARGV[3])
redis.call('PUBLISH', ARGV[4], ARGV[5])
return 1
"""
# A request holds a slot of its tenant's bound (`{ns}:tenants`) exactly as long as its work
# entry is in the stream: whoever deletes the entry (XDEL answers 1 once) frees the slot.
_RETIRE_LUA = """
local function retire(work, tenants, group, entry)
  local found = redis.call('XRANGE', work, entry, entry)
  redis.call('XACK', work, group, entry)
  if #found == 0 or redis.call('XDEL', work, entry) == 0 then return 0 end
  local fields = found[1][2]
  for i = 1, #fields, 2 do
    if fields[i] == 'tenant' and redis.call('HINCRBY', tenants, fields[i + 1], -1) <= 0 then
      redis.call('HDEL', tenants, fields[i + 1])
    end
  end
  return 1
end
"""
# Only an ended request's entry, or an orphan's: a Redis crash can lose a request's end while
# its executor goes on to retire the entry on the restarted Redis, which would strand the
# request unfinished with no work entry (its client waiting to the deadline).
RETIRE_LUA = _RETIRE_LUA + _TERMINAL_LUA + """
local state = redis.call('HGET', KEYS[3], 'state')
if state and not terminal[state] then return -1 end
return retire(KEYS[1], KEYS[2], ARGV[1], ARGV[2])
"""
FINISH_LUA = _RETIRE_LUA + _LIVE_LUA + """
if ARGV[7] == '1' and redis.call('SCARD', KEYS[5]) > 0 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 8))
redis.call('XADD', KEYS[2], '*', 'e', ARGV[1])
redis.call('PUBLISH', ARGV[2], ARGV[3])
if ARGV[6] ~= '' then redis.call('PUBLISH', ARGV[6], ARGV[3]) end
local entry = redis.call('HGET', KEYS[1], 'work_id')
if entry then retire(KEYS[3], KEYS[4], ARGV[5], entry) end
for i = 1, #KEYS do
  if i ~= 3 and i ~= 4 then redis.call('EXPIRE', KEYS[i], ARGV[4]) end
end
return 1
"""
# Each stream following a live request that cancels on disconnect adds its own token to the
# request's clients, and removes it when it ends: idempotent, so a stream cancelled in the
# middle of either step can always remove its token, and never someone else's.
ATTACH_LUA = _TERMINAL_LUA + """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return -1 end
if terminal[state] or redis.call('HGET', KEYS[1], 'cancel_on_disconnect') ~= '1' then return 0 end
redis.call('SADD', KEYS[2], ARGV[1])
return 1
"""
DETACH_LUA = """
redis.call('SREM', KEYS[2], ARGV[1])
""" + _LIVE_LUA + """
if redis.call('HGET', KEYS[1], 'cancel_on_disconnect') ~= '1' then return 0 end
return redis.call('SCARD', KEYS[2]) == 0 and 1 or 0
"""
# Admission: the id is free and the bounds hold, then everything is written, or nothing.
ADMIT_LUA = """
if redis.call('EXISTS', KEYS[1]) == 1 then return {'taken', 0} end
-- KEYS: req, f, events, work, tenants, clients, chosen, stages, tenant's index; ARGV: rid,
-- F(r), first event, channel, bounds (2), tenant, client token ('' unless it cancels on
-- disconnect), admission time, request TTL, fields
local limit = tonumber(ARGV[5])
if limit > 0 then
  local n = redis.call('XLEN', KEYS[4])
  if n >= limit then return {'requests', n} end
end
limit = tonumber(ARGV[6])
if limit > 0 then
  local n = tonumber(redis.call('HGET', KEYS[5], ARGV[7]) or 0)
  if n >= limit then return {'tenant', n} end
end
-- keys of an earlier request of this id whose record was lost (a crash of Redis) go with it
redis.call('DEL', KEYS[3], KEYS[6], KEYS[7], KEYS[8])
local entry = redis.call('XADD', KEYS[4], '*', 'rid', ARGV[1], 'tenant', ARGV[7])
redis.call('HSET', KEYS[1], 'work_id', entry, unpack(ARGV, 11))
if ARGV[8] ~= '' then redis.call('SADD', KEYS[6], ARGV[8]) end
redis.call('SET', KEYS[2], ARGV[2])
redis.call('XADD', KEYS[3], '*', 'e', ARGV[3])
redis.call('PUBLISH', ARGV[4], ARGV[1])
redis.call('HINCRBY', KEYS[5], ARGV[7], 1)
local now, ttl = tonumber(ARGV[9]), tonumber(ARGV[10])
redis.call('ZADD', KEYS[9], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[9], '-inf', '(' .. (now - ttl))
redis.call('EXPIRE', KEYS[9], ttl)
return {'admitted', 0}
"""

# A key one holder has at a time, with a TTL: a request's owner (an executor's heartbeat
# keeps it, or takes it back if the key lapsed in a Redis restart outlasting its TTL, but
# never takes another executor's) and the scheduler's leadership key. 1: ARGV[1] holds it.
HOLD_LUA = """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""
LET_GO_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# The scheduler's group commit: a batch of writes applied atomically, as one command (one
# reply to parse, not one per write), fenced by the leadership key. KEYS[1]/ARGV[1..2]: the
# key, the scheduler's id and the key's TTL. Held by another: refused. Lapsed with nobody
# else holding it (Redis was away longer than the TTL, or restarted without it): the
# scheduler is still the only active one, and takes the key back. Then ARGV from 3 holds
# the writes on KEYS[2..]: 'S' field value (HSET), 'D' field (HDEL), or 'R' field value:
# HSET on a request's key only while the request's record (the next key) exists. A Redis
# crash can lose a request's record while the scheduler still has it queued; writing its
# choice would bring back a record with nothing but that field, which its client would
# follow to the deadline instead of learning the request is gone.
COMMIT_LUA = """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then
  return redis.error_reply('NOTACTIVE this scheduler no longer holds the leadership key')
end
if not holder then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) end
local k, a = 2, 3
while k <= #KEYS do
  local op = ARGV[a]
  if op == 'S' then
    redis.call('HSET', KEYS[k], ARGV[a + 1], ARGV[a + 2]); k = k + 1; a = a + 3
  elseif op == 'D' then
    redis.call('HDEL', KEYS[k], ARGV[a + 1]); k = k + 1; a = a + 2
  else
    if redis.call('EXISTS', KEYS[k + 1]) == 1 then
      redis.call('HSET', KEYS[k], ARGV[a + 1], ARGV[a + 2])
    end
    k = k + 2; a = a + 3
  end
end
return 1
"""

ALL_CONFIGS = b"*"
ROUTING_PENDING = b"pending"
"""`routing` field of a request while the router still computes F(r): `:f` then holds a
placeholder with the largest configuration (see the router's admission)."""


POOL_CHANGES_KEPT = 1000  # the pool's change log keeps about this many entries


class Keys:
    """Key names under one namespace."""

    def __init__(self, ns: str):
        self.ns = ns
        self.pool = f"{ns}:pool"
        self.pool_state = f"{ns}:pool:state"
        self.pool_changes = f"{ns}:pool:changes"
        self.workflows = f"{ns}:workflows"
        self.deprecated = f"{ns}:workflows:deprecated"
        self.work = f"{ns}:work"
        self.leases = f"{ns}:leases"
        self.scheduler = f"{ns}:scheduler"
        self.tenants = f"{ns}:tenants"
        self.load = f"{ns}:load"
        self.event_channel = f"{ns}:events"
        self.cancel_channel = f"{ns}:cancelled"

    def outcomes(self, workflow_id: str) -> str:
        return f"{self.ns}:outcomes:{workflow_id}"

    def session(self, tenant: str, session_id: str) -> str:
        return f"{self.ns}:session:{tenant}:{session_id}"

    def tenant_requests(self, tenant: str) -> str:
        return f"{self.ns}:tenant-requests:{tenant}"

    def req(self, rid: str) -> str:
        return f"{self.ns}:req:{rid}"

    def f(self, rid: str) -> str:
        return f"{self.ns}:req:{rid}:f"

    def chosen(self, rid: str) -> str:
        return f"{self.ns}:req:{rid}:chosen"

    def stages(self, rid: str) -> str:
        return f"{self.ns}:req:{rid}:stages"

    def events(self, rid: str) -> str:
        return f"{self.ns}:req:{rid}:events"

    def clients(self, rid: str) -> str:
        return f"{self.ns}:req:{rid}:clients"

    def owner(self, rid: str) -> str:
        return f"{self.ns}:req:{rid}:owner"

    def request_keys(self, rid: str) -> list[str]:
        return [self.req(rid), self.f(rid), self.chosen(rid), self.stages(rid), self.events(rid),
                self.clients(rid)]

    def inflight(self, executor: str) -> str:
        return f"{self.ns}:inflight:{executor}"

    @property
    def inflight_pattern(self) -> str:
        return f"{self.ns}:inflight:*"


class NotActive(Exception):
    """The scheduler's commit was refused: another scheduler holds the leadership key."""


Write = tuple[Any, ...]
"""One write of a scheduler commit: ("S", key, field, value) is HSET, ("D", key, field) HDEL,
("R", key, field, value, record) HSET while the request's `record` exists (COMMIT_LUA).
Built by Store's `w_*` methods only: the keys are the store's business."""


@dataclasses.dataclass(frozen=True)
class SchedulingRecord:
    """What the scheduler reads of a request to queue its stages, in one round trip."""

    workflow_id: str | None  # None: no such request (never admitted, expired, or lost)
    f_raw: bytes | None  # F(r) as stored (encode_configs)
    routing_pending: bool  # F(r) is the router's placeholder still
    created_at: float
    state: int | None
    policy: str
    stage_state: bytes
    chosen: dict[str, str]  # LLM stage -> model chosen so far
    owner: str  # executor running it ('' if none)


class QueueFull(Exception):
    """Admission refused: `bound` ('requests' overall or 'tenant') holds `unfinished`
    requests already, its limit."""

    def __init__(self, bound: str, unfinished: int, limit: int):
        super().__init__(f"{bound}: {unfinished} unfinished requests, limit {limit}")
        self.bound = bound
        self.unfinished = unfinished
        self.limit = limit


def connect(url: str, max_connections: int = 64) -> aioredis.Redis:
    """An asyncio Redis client (bytes in, bytes out) with retries on connection loss.

    The pool is bounded and blocking: under a burst, callers wait for a free connection
    instead of failing with "Too many connections" (redis-py 8 caps an unbounded pool at 100).
    """
    from redis.asyncio.retry import Retry
    from redis.backoff import ExponentialBackoff

    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=30,
        decode_responses=False,
        health_check_interval=10,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=20),
        retry_on_error=[RedisConnectionError, RedisTimeoutError, ConnectionResetError],
    )
    return aioredis.Redis(connection_pool=pool)


def encode_configs(configs: np.ndarray | None) -> bytes:
    return ALL_CONFIGS if configs is None else np.ascontiguousarray(configs, np.int64).tobytes()


def decode_configs(raw: bytes, space_size: int) -> np.ndarray:
    if raw == ALL_CONFIGS:
        return np.arange(space_size, dtype=np.int64)
    return np.frombuffer(raw, dtype=np.int64).copy()


def s(v: bytes | None) -> str:
    return v.decode() if v is not None else ""


class Store:
    """Typed access to cluster state; services hold one each."""

    WORKFLOW_CACHE = 256

    def __init__(self, redis: aioredis.Redis, namespace: str):
        self.r = redis
        self.k = Keys(namespace)
        # parsed workflows by their stored YAML: admission must not re-parse YAML per request
        self._parsed: dict[bytes, WorkflowDef] = {}
        self._hold = redis.register_script(HOLD_LUA)
        self._let_go = redis.register_script(LET_GO_LUA)
        self._mark_running = redis.register_script(MARK_RUNNING_LUA)
        self._record_stage = redis.register_script(RECORD_STAGE_LUA)
        self._stage_started = redis.register_script(STAGE_STARTED_LUA)
        self._finish = redis.register_script(FINISH_LUA)
        self._retire = redis.register_script(RETIRE_LUA)
        self._admit = redis.register_script(ADMIT_LUA)
        self._attach = redis.register_script(ATTACH_LUA)
        self._detach = redis.register_script(DETACH_LUA)
        self._commit = redis.register_script(COMMIT_LUA)

    def _parse(self, raw: bytes) -> WorkflowDef:
        wf = self._parsed.get(raw)
        if wf is None:
            if len(self._parsed) >= self.WORKFLOW_CACHE:
                self._parsed.clear()
            wf = self._parsed[raw] = parse_workflow(raw.decode())
        return wf

    def add_event(self, pipe: Any, rid: str, event: bytes) -> None:
        """Queue, on `pipe`, an event for the request's stream and the wake-up of its followers."""
        pipe.xadd(self.k.events(rid), {"e": event})
        pipe.publish(self.k.event_channel, rid)

    async def uptime_s(self) -> int:
        """Seconds since Redis started (it restarts with its append-only file, not its clock:
        keys' TTLs and stream entries' idle times ran on while it was down)."""
        return int((await self.r.info("server"))["uptime_in_seconds"])

    # request ownership (executors) ----------------------------------------------------
    async def claim_owner(self, rid: str, executor_id: str, ttl_ms: int) -> bool:
        """Own the request unless a live executor does; True if `executor_id` owns it now."""
        return bool(await self.r.set(self.k.owner(rid), executor_id, nx=True, px=ttl_ms))

    async def heartbeat(self, executor_id: str, running: list[str], entries: list[bytes],
                        inflight: dict[str, int], owner_ttl_ms: int, inflight_ttl_s: int
                        ) -> list[bool]:
        """One executor's periodic refresh, in one round trip: renew its ownership of the
        `running` requests, reset its work `entries`' idle times (so no other executor claims
        them), rewrite its in-flight counts whole (a Redis restart may have lost them) and
        their TTL. Returns, per running request, whether it still owns it."""
        k = self.k
        async with self.r.pipeline(transaction=False) as p:
            for rid in running:
                await self._hold(keys=[k.owner(rid)], args=[executor_id, owner_ttl_ms], client=p)
            if entries:
                p.xclaim(k.work, WORK_GROUP, executor_id, 0, entries, justid=True)
            if inflight:
                p.hset(k.inflight(executor_id), mapping=inflight)
            p.expire(k.inflight(executor_id), inflight_ttl_s)
            replies = await p.execute()
        return [bool(r) for r in replies[:len(running)]]

    async def drop_owner(self, rid: str, executor_id: str) -> None:
        """Give up ownership of the request, if `executor_id` still has it."""
        await self._let_go(keys=[self.k.owner(rid)], args=[executor_id])

    # the scheduler's records: leadership, leases, choices ------------------------------
    async def hold_leadership(self, me: str, ttl_ms: int) -> bool:
        """Take or renew the leadership key for scheduler `me`; True if `me` holds it now."""
        return bool(await self._hold(keys=[self.k.scheduler], args=[me, ttl_ms]))

    async def resign_leadership(self, me: str) -> None:
        await self._let_go(keys=[self.k.scheduler], args=[me])

    async def leader(self) -> str:
        return s(await self.r.get(self.k.scheduler))

    def w_lease(self, lease_id: str, lease_json: str) -> list[Write]:
        return [("S", self.k.leases, lease_id, lease_json)]

    def w_no_lease(self, lease_id: str) -> list[Write]:
        return [("D", self.k.leases, lease_id)]

    def w_choice(self, rid: str, stage: str, model: str, viable: int) -> list[Write]:
        """The model chosen for the stage, and how many configurations C(r) still holds."""
        record = self.k.req(rid)
        return [("R", self.k.chosen(rid), stage, model, record),
                ("R", record, "viable", viable, record)]

    def w_no_choice(self, rid: str, stage: str) -> list[Write]:
        return [("D", self.k.chosen(rid), stage)]

    async def commit(self, me: str, ttl_ms: int, writes: list[Write]) -> None:
        """Apply `writes` at once if scheduler `me` holds the leadership key (retaking it if
        it lapsed with nobody holding it); NotActive if another holds it."""
        keys: list[str] = [self.k.scheduler]
        args: list[Any] = [me, ttl_ms]
        for w in writes:
            if w[0] == "R":
                keys += [w[1], w[4]]
                args += ["R", w[2], w[3]]
            else:
                keys.append(w[1])
                args += [w[0], *w[2:]]
        try:
            await self._commit(keys=keys, args=args)
        except Exception as e:
            if "NOTACTIVE" in str(e):
                raise NotActive(str(e)) from e
            raise

    async def recorded_leases(self) -> list[bytes]:
        """Every lease recorded (JSON each)."""
        return list((await self.r.hgetall(self.k.leases)).values())

    async def recorded_lease_ids(self) -> set[str]:
        return {lid.decode() for lid in await self.r.hkeys(self.k.leases)}

    async def scheduling_record(self, rid: str) -> SchedulingRecord:
        k = self.k
        async with self.r.pipeline(transaction=False) as p:
            p.hmget(k.req(rid), ["workflow_id", "routing", "created_at", "state", "policy",
                                 "stage_state"])
            p.get(k.f(rid))
            p.hgetall(k.chosen(rid))
            p.get(k.owner(rid))
            (wid, routing, created, state, policy, stage_state), f_raw, chosen, owner = \
                await p.execute()
        return SchedulingRecord(
            None if wid is None else wid.decode(), f_raw, routing == ROUTING_PENDING,
            float(created or 0.0), None if state is None else int(state), s(policy),
            stage_state or b"", {st.decode(): m.decode() for st, m in chosen.items()}, s(owner))

    async def owner(self, rid: str) -> str:
        """The executor running the request ('' if none)."""
        return s(await self.r.get(self.k.owner(rid)))

    async def routings(self, rids: list[str]) -> list[tuple[bool, bytes | None]]:
        """(routing still pending, F(r) as stored) of each request, in one round trip."""
        async with self.r.pipeline(transaction=False) as p:
            for rid in rids:
                p.hget(self.k.req(rid), "routing")
                p.get(self.k.f(rid))
            replies = await p.execute()
        return [(replies[i] == ROUTING_PENDING, replies[i + 1]) for i in range(0, len(replies), 2)]

    async def states(self, rids: list[str]) -> list[int | None]:
        """Each request's state (None: no record), in one round trip."""
        async with self.r.pipeline(transaction=False) as p:
            for rid in rids:
                p.hget(self.k.req(rid), "state")
            return [None if v is None else int(v) for v in await p.execute()]

    # the work stream and the in-flight counts (executors) -------------------------------
    async def ensure_work_group(self) -> None:
        """Create the executors' consumer group (and the stream) unless it exists."""
        try:
            await self.r.xgroup_create(self.k.work, WORK_GROUP, id="0", mkstream=True)
        except ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise

    async def read_work(self, executor_id: str, count: int, block_ms: int
                        ) -> list[tuple[bytes, str]]:
        """Up to `count` new work entries for `executor_id` as (entry id, request id),
        waiting up to `block_ms` for one. ResponseError NOGROUP: Redis restarted empty
        (ensure_work_group)."""
        res = await self.r.xreadgroup(WORK_GROUP, executor_id, {self.k.work: ">"}, count=count,
                                      block=block_ms)
        return [(entry_id, fields[b"rid"].decode())
                for _stream, entries in res or () for entry_id, fields in entries]

    async def claim_idle_work(self, executor_id: str, idle_ms: int, cursor: bytes, count: int
                              ) -> tuple[bytes, list[tuple[bytes, str]], int]:
        """Take over work entries idle for `idle_ms` (their executor died), walking the
        pending list from `cursor`: (next cursor, b"0-0" at its end; the entries taken as
        (entry id, request id); how many had been deleted while pending)."""
        cursor, claimed, deleted = await self.r.xautoclaim(
            self.k.work, WORK_GROUP, executor_id, idle_ms, start_id=cursor, count=count)
        return (cursor, [(entry_id, fields[b"rid"].decode())
                         for entry_id, fields in claimed if fields], len(deleted))

    async def set_inflight(self, executor_id: str, model: str, n: int) -> None:
        await self.r.hset(self.k.inflight(executor_id), model, n)

    async def clear_inflight(self, executor_id: str) -> None:
        await self.r.delete(self.k.inflight(executor_id))

    # cluster load (load-monitor) --------------------------------------------------------
    async def cluster_counts(self) -> tuple[dict[int, int], dict[str, int]]:
        """(leases held per model index, stages in flight per model name over every
        executor), read in one transaction: an executor counts a stage in flight only while
        it holds the stage's lease, and separate reads would catch stages started after the
        leases were read in flight without their leases."""
        k = self.k
        keys = [key async for key in self.r.scan_iter(match=k.inflight_pattern, count=200)]
        async with self.r.pipeline(transaction=True) as p:
            p.hgetall(k.leases)
            for key in keys:
                p.hgetall(key)
            leases, *per_executor = await p.execute()
        leased: dict[int, int] = {}
        for raw in leases.values():
            model = int(json.loads(raw)["model"])
            leased[model] = leased.get(model, 0) + 1
        inflight: dict[str, int] = {}
        for counts in per_executor:
            for model, n in counts.items():
                name = model.decode()
                inflight[name] = inflight.get(name, 0) + max(0, int(n))  # never trust blindly
        return leased, inflight

    async def load_snapshot(self) -> common_pb2.LoadSnapshot | None:
        raw = await self.r.get(self.k.load)
        return common_pb2.LoadSnapshot.FromString(raw) if raw else None

    async def put_load(self, timestamp: float, models: list[common_pb2.ModelLoad]
                       ) -> common_pb2.LoadSnapshot:
        """Publish the newest load snapshot under the next version number."""
        version = await self.r.incr(f"{self.k.load}:version")
        snap = common_pb2.LoadSnapshot(version=version, timestamp=timestamp, models=models)
        await self.r.set(self.k.load, snap.SerializeToString())
        return snap

    # pool and workflows -------------------------------------------------------------
    async def put_pool(self, pool: PoolSpec) -> None:
        await self.r.set(self.k.pool, pool.to_json())

    async def get_pool(self) -> PoolSpec | None:
        raw = await self.r.get(self.k.pool)
        return PoolSpec.from_json(raw.decode()) if raw else None

    async def model_states(self) -> dict[str, str]:
        """Each model's deployment state; a model not in the hash is serving."""
        raw = await self.r.hgetall(self.k.pool_state)
        return {k.decode(): v.decode() for k, v in raw.items()}

    async def change_model(self, model: str, state: str, action: str, by: str = "",
                           detail: str = "", pool: PoolSpec | None = None) -> None:
        """Record a model's new state and the change that made it (and, for an added model,
        the pool that now holds it), in one transaction."""
        async with self.r.pipeline(transaction=True) as p:
            if pool is not None:
                p.set(self.k.pool, pool.to_json())
            p.hset(self.k.pool_state, model, state)
            p.xadd(self.k.pool_changes, {"at": repr(time.time()), "by": by, "action": action,
                                         "model": model, "state": state, "detail": detail},
                   maxlen=POOL_CHANGES_KEPT, approximate=True)
            await p.execute()

    async def pool_changes(self, count: int) -> list[dict[str, str]]:
        """The pool's newest `count` changes, oldest first."""
        rows = await self.r.xrevrange(self.k.pool_changes, count=count)
        return [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in reversed(rows)]

    async def put_workflow(self, wf: WorkflowDef) -> bool:
        """Register `wf` unless its id is taken; True if it is now registered as given.

        Registered workflows never change: requests in flight and the scheduler's compiled
        spaces depend on them, so a new definition needs a new id.
        """
        text = wf.to_yaml()
        if await self.r.hsetnx(self.k.workflows, wf.id, text):
            return True
        return await self.r.hget(self.k.workflows, wf.id) == text.encode()

    async def get_workflow(self, wid: str) -> WorkflowDef | None:
        raw = await self.r.hget(self.k.workflows, wid)
        return self._parse(raw) if raw else None

    async def list_workflows(self) -> list[WorkflowDef]:
        raw = await self.r.hgetall(self.k.workflows)
        return sorted((self._parse(v) for v in raw.values()), key=lambda w: w.id)

    async def deprecated_workflows(self) -> set[str]:
        return {w.decode() for w in await self.r.hkeys(self.k.deprecated)}

    async def front_door_state(self, tenant: str = "", session_id: str = ""
                               ) -> tuple[list[WorkflowDef], set[str], dict[str, str], str]:
        """Registered workflows, the deprecated ones, the models' states and the session's
        workflow ('' without one), in one round trip: what the front door decides by."""
        async with self.r.pipeline(transaction=False) as p:
            p.hgetall(self.k.workflows)
            p.hkeys(self.k.deprecated)
            p.hgetall(self.k.pool_state)
            if session_id:
                p.get(self.k.session(tenant, session_id))
            wfs, dep, states, *session = await p.execute()
        return (sorted((self._parse(v) for v in wfs.values()), key=lambda w: w.id),
                {w.decode() for w in dep}, {k.decode(): v.decode() for k, v in states.items()},
                session[0].decode() if session and session[0] else "")

    async def set_session_workflow(self, tenant: str, session_id: str, workflow_id: str,
                                   ttl_s: int) -> None:
        """The workflow a session's last admitted request runs (kept `ttl_s` after it)."""
        await self.r.set(self.k.session(tenant, session_id), workflow_id, ex=max(1, ttl_s))

    async def workflow_for_admission(self, wid: str) -> tuple[WorkflowDef | None, bool]:
        """The workflow and whether it is deprecated, in one round trip."""
        async with self.r.pipeline(transaction=False) as p:
            p.hget(self.k.workflows, wid)
            p.hexists(self.k.deprecated, wid)
            raw, deprecated = await p.execute()
        return (self._parse(raw) if raw else None), bool(deprecated)

    async def deprecate_workflow(self, wid: str) -> WorkflowDef | None:
        """Flag the workflow deprecated (idempotent); None if it is not registered."""
        wf = await self.get_workflow(wid)
        if wf is not None:
            await self.r.hsetnx(self.k.deprecated, wid, time.time())
        return wf

    async def list_requests(self, tenant: str, limit: int, before: tuple[float, str] | None
                            ) -> tuple[list[router_pb2.RequestSummary], tuple[float, str] | None]:
        """The tenant's requests admitted before `before` (admission time, id), newest first,
        at most `limit`; and the cursor of the next page (None: this is the last). Requests
        whose record expired are dropped from the index as they are met."""
        key = self.k.tenant_requests(tenant)
        top = "+inf" if before is None else before[0]
        # ties at `before`'s time: those listed already are skipped below (ids descending)
        rows = await self.r.zrevrangebyscore(key, top, "-inf", start=0, num=limit + 65,
                                             withscores=True)
        if before is not None:
            rows = [(m, t) for m, t in rows if t < before[0] or m.decode() < before[1]]
        out: list[router_pb2.RequestSummary] = []
        gone: list[bytes] = []
        while rows and len(out) < limit:
            batch, rows = rows[:limit - len(out)], rows[limit - len(out):]
            async with self.r.pipeline(transaction=False) as p:
                for member, _ in batch:
                    p.hmget(self.k.req(member.decode()), ["workflow_id", "state", "policy"])
                records = await p.execute()
            for (member, score), (wid, state, policy) in zip(batch, records, strict=True):
                if wid is None:
                    gone.append(member)
                    continue
                out.append(router_pb2.RequestSummary(
                    request_id=member.decode(), workflow_id=wid.decode(),
                    state=int(state or 0), created_at=score, policy=(policy or b"").decode()))
        if gone:
            await self.r.zrem(key, *gone)
        more = bool(rows) or len(out) == limit and await self.r.zcount(
            key, "-inf", f"({out[-1].created_at}") > 0
        return out, ((out[-1].created_at, out[-1].request_id) if more and out else None)

    # requests -----------------------------------------------------------------------
    async def get_load(self) -> dict[str, common_pb2.ModelLoad]:
        """The newest load snapshot by model name (empty before the load-monitor's first)."""
        raw = await self.r.get(self.k.load)
        if not raw:
            return {}
        return {m.model: m for m in common_pb2.LoadSnapshot.FromString(raw).models}

    async def admit(self, rid: str, fields: dict[str, Any], f_r: bytes, first_event: bytes,
                    max_requests: int = 0, max_per_tenant: int = 0, client: str = "",
                    ttl_s: int = 86400) -> bool:
        """Write a new request (its record, F(r), first event, work entry, a slot of its
        tenant's count) in one atomic step, unless its id is taken: False if it was.

        Raises QueueFull, having written nothing, when `max_requests` requests are unfinished
        (the work stream holds exactly those) or the request's tenant has `max_per_tenant`
        (0: no bound). One script checks and writes, so submissions of one id that race admit
        it once, and concurrent admissions never overshoot a bound. `client`: the submitting
        stream's token, its first follower, when it cancels on disconnect (see attach()).
        """
        k = self.k
        tenant = str(fields.get("tenant", ""))
        outcome, unfinished = await self._admit(
            keys=[k.req(rid), k.f(rid), k.events(rid), k.work, k.tenants, k.clients(rid),
                  k.chosen(rid), k.stages(rid), k.tenant_requests(tenant)],
            args=[rid, f_r, first_event, k.event_channel, max_requests, max_per_tenant, tenant,
                  client, fields.get("created_at", time.time()), ttl_s,
                  *(x for kv in fields.items() for x in kv)])
        if outcome == b"requests":
            raise QueueFull("requests", unfinished, max_requests)
        if outcome == b"tenant":
            raise QueueFull("tenant", unfinished, max_per_tenant)
        return outcome == b"admitted"

    async def retire(self, entry_id: bytes, rid: str) -> int:
        """Drop request `rid`'s work entry if the request has ended or its record is gone
        (acknowledged and deleted: the stream holds only unfinished work). 1: this call
        deleted it, and so freed its tenant's slot; 0: it was gone already; -1: kept, the
        request is unfinished (a Redis crash lost its end): it stays pending, to be claimed
        and run again from its last recorded stage."""
        k = self.k
        return int(await self._retire(keys=[k.work, k.tenants, k.req(rid)],
                                      args=[WORK_GROUP, entry_id]))

    async def tenant_unfinished(self) -> dict[str, int]:
        """Unfinished requests per tenant ('' for requests without one)."""
        raw = await self.r.hgetall(self.k.tenants)
        return {t.decode(): int(n) for t, n in raw.items()}

    async def mark_running(self, rid: str) -> bool:
        """Mark the request RUNNING; False if it ended or its record is gone (do not run it)."""
        return bool(await self._mark_running(
            keys=[self.k.req(rid)], args=[common_pb2.REQUEST_STATE_RUNNING]))

    async def record_stage(self, rid: str, result: common_pb2.StageResult) -> bool:
        """Record a finished stage and announce it; False (nothing written) if the request
        ended or its record is gone meanwhile: its runner should stop."""
        event = router_pb2.SubmitRequestResponse(request_id=rid, stage_finished=result)
        k = self.k
        return bool(await self._record_stage(
            keys=[k.req(rid), k.stages(rid), k.events(rid)],
            args=[result.stage, result.SerializeToString(), event.SerializeToString(),
                  k.event_channel, rid]))

    async def stage_started(self, rid: str, executor: str, model: str, inflight: int,
                            event: bytes) -> bool:
        """Set `executor`'s count of stages in flight on `model` and, unless the request
        ended or its record is gone, announce the stage: False if it was not announced."""
        k = self.k
        return bool(await self._stage_started(
            keys=[k.req(rid), k.inflight(executor), k.events(rid)],
            args=[model, inflight, event, k.event_channel, rid]))

    async def finish(self, rid: str, state: int, answer: str, error: str,
                     ttl_s: int) -> common_pb2.RequestStatus | None:
        """End the request in `state` and send its `completed` event, exactly once: the final
        status, or None (nothing written) if it had ended already or its record is gone. Its
        work entry goes and its tenant's slot is freed in the same step; its keys expire
        after `ttl_s`."""
        return await self._end(rid, state, answer, error, ttl_s)

    async def cancel(self, rid: str, why: str, ttl_s: int, unfollowed: bool = False) -> bool:
        """finish() the request CANCELLED (`why` is its error) and publish its id on
        `{ns}:cancelled`, where the scheduler withdraws its stages and frees its leases.
        With `unfollowed`, only if no client follows it (see detach()). False if nothing was
        cancelled."""
        return await self._end(rid, common_pb2.REQUEST_STATE_CANCELLED, "", why, ttl_s,
                               notify=self.k.cancel_channel, unfollowed=unfollowed) is not None

    async def _end(self, rid: str, state: int, answer: str, error: str, ttl_s: int,
                   notify: str = "", unfollowed: bool = False) -> common_pb2.RequestStatus | None:
        status = await self.status(rid)  # the `completed` event carries it, so built first
        if status is None or status.state in TERMINAL:
            return None
        finished_at = time.time()
        status.state, status.answer, status.error = state, answer, error
        status.finished_at = finished_at
        event = router_pb2.SubmitRequestResponse(request_id=rid, completed=status)
        k = self.k
        first = [k.req(rid), k.events(rid), k.work, k.tenants, k.clients(rid)]
        ended = await self._finish(
            keys=[*first, *(key for key in k.request_keys(rid) if key not in first)],
            args=[event.SerializeToString(), k.event_channel, rid, ttl_s, WORK_GROUP, notify,
                  int(unfollowed), "state", state, "answer", answer, "error", error,
                  "finished_at", finished_at])
        return status if ended else None

    async def attach(self, rid: str, client: str) -> bool | None:
        """The stream with token `client` starts following the request: None if there is no
        such request; else True if the request cancels on disconnect and is unfinished, and
        the client is counted among its followers until detach()."""
        found = await self._attach(keys=[self.k.req(rid), self.k.clients(rid)], args=[client])
        return None if found < 0 else bool(found)

    async def detach(self, rid: str, client: str) -> bool:
        """The stream with token `client` stopped following the request (harmless if it never
        attached); True if the request cancels on disconnect, is unfinished, and no client
        follows it any more: the caller then cancel(..., unfollowed=True)s it."""
        return bool(await self._detach(keys=[self.k.req(rid), self.k.clients(rid)], args=[client]))

    async def follow_cancellations(self, on_message: Callable[[bytes], None],
                                   on_subscribed: Callable[[], Awaitable[None]]) -> None:
        """_subscribe to the ids of requests just cancelled (the scheduler)."""
        await self._subscribe(self.k.cancel_channel, on_message, on_subscribed)

    async def follow_events(self, on_message: Callable[[bytes], None],
                            on_subscribed: Callable[[], Awaitable[None]]) -> None:
        """_subscribe to the ids of requests whose event stream just grew (the router)."""
        await self._subscribe(self.k.event_channel, on_message, on_subscribed)

    async def _subscribe(self, channel: str, on_message: Callable[[bytes], None],
                         on_subscribed: Callable[[], Awaitable[None]]) -> None:
        """Pass each message of `channel` to `on_message`, resubscribing whenever the
        connection is lost (Redis restarting), until cancelled. Pub/sub is at-most-once:
        `on_subscribed` runs after every (re)subscription, to catch up on what was missed."""
        while True:
            try:
                async with self.r.pubsub(ignore_subscribe_messages=True) as ps:
                    await ps.subscribe(channel)
                    await on_subscribed()
                    async for msg in ps.listen():
                        on_message(msg["data"])
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("subscription_lost", channel=channel, error=str(e))
                await asyncio.sleep(0.5)

    async def has_request(self, rid: str) -> bool:
        return bool(await self.r.exists(self.k.req(rid)))

    async def state(self, rid: str) -> int | None:
        """The request's state (None: no record)."""
        raw = await self.r.hget(self.k.req(rid), "state")
        return None if raw is None else int(raw)

    async def tenant(self, rid: str) -> str | None:
        """The request's tenant ('' for none; None: no record)."""
        raw = await self.r.hget(self.k.req(rid), "tenant")
        return None if raw is None else raw.decode()

    async def routed(self, rid: str, f_r: np.ndarray) -> None:
        """The router's finished F(r), replacing the placeholder of admission (the request
        may have ended meanwhile: its record keeps its TTL)."""
        async with self.r.pipeline(transaction=True) as p:
            p.set(self.k.f(rid), encode_configs(f_r), keepttl=True)
            p.hset(self.k.req(rid), mapping={"routing": "done", "admitted": len(f_r)})
            await p.execute()

    async def events(self, rid: str, after: bytes, count: int
                     ) -> list[tuple[bytes, router_pb2.SubmitRequestResponse]]:
        """Up to `count` of the request's events after stream id `after` (b"-": from the
        first) as (stream id, event)."""
        start = b"-" if after == b"-" else b"(" + after
        return [(entry_id, router_pb2.SubmitRequestResponse.FromString(fields[b"e"]))
                for entry_id, fields in await self.r.xrange(self.k.events(rid), min=start,
                                                             count=count)]

    async def request_fields(self, rid: str) -> dict[str, str]:
        """The request's record as text (`stage_state`, a policy's bytes, is left out)."""
        raw = await self.r.hgetall(self.k.req(rid))
        return {k.decode(): v.decode() for k, v in raw.items() if k != b"stage_state"}

    async def stage_results(self, rid: str) -> dict[str, common_pb2.StageResult]:
        raw = await self.r.hgetall(self.k.stages(rid))
        out = {}
        for k, v in raw.items():
            out[k.decode()] = common_pb2.StageResult.FromString(v)
        return out

    async def chosen(self, rid: str) -> dict[str, str]:
        raw = await self.r.hgetall(self.k.chosen(rid))
        return {k.decode(): v.decode() for k, v in raw.items()}

    async def status(self, rid: str) -> common_pb2.RequestStatus | None:
        """The request's state as the API shows it, or None if unknown."""
        f = await self.request_fields(rid)
        if not f:
            return None
        results = await self.stage_results(rid)
        wf = await self.get_workflow(f.get("workflow_id", ""))
        order = [st.name for st in wf.stages] if wf else sorted(results)
        ordered = [results[n] for n in order if n in results]
        return common_pb2.RequestStatus(
            request_id=rid,
            workflow_id=f.get("workflow_id", ""),
            policy=f.get("policy", ""),
            tenant=f.get("tenant", ""),
            state=int(f.get("state", common_pb2.REQUEST_STATE_QUEUED)),
            stages=ordered,
            answer=f.get("answer", ""),
            error=f.get("error", ""),
            admitted_configurations=int(f.get("admitted", 0)),
            viable_configurations=int(f.get("viable", f.get("admitted", 0))),
            created_at=float(f.get("created_at", 0)),
            finished_at=float(f.get("finished_at", 0)),
        )

    async def record_outcome(self, rid: str, workflow_id: str, model: str, reward: float) -> bool:
        """Record the outcome of request `rid` (credited to `model`), once: False if it had
        one. The request's `outcome` field marks it; the workflow's tallies grow by it."""
        if not await self.r.hsetnx(self.k.req(rid), "outcome", repr(reward)):
            return False
        async with self.r.pipeline(transaction=True) as p:
            p.hincrby(self.k.outcomes(workflow_id), f"{model}:n", 1)
            p.hincrbyfloat(self.k.outcomes(workflow_id), f"{model}:reward", reward)
            await p.execute()
        return True

    async def outcomes(self, workflow_id: str) -> dict[str, tuple[int, float]]:
        """model -> (outcomes reported, their reward summed) for the workflow."""
        raw = await self.r.hgetall(self.k.outcomes(workflow_id))
        out: dict[str, tuple[int, float]] = {}
        for key, value in raw.items():
            model, _, what = key.decode().rpartition(":")
            n, total = out.get(model, (0, 0.0))
            out[model] = (int(value), total) if what == "n" else (n, float(value))
        return out

    async def snapshot(self) -> dict[bytes, Any]:
        """Every key under the namespace with its type and value (tests compare them)."""
        out: dict[bytes, Any] = {}
        async for key in self.r.scan_iter(match=f"{self.k.ns}:*", count=500):
            typ = await self.r.type(key)
            if typ == b"string":
                out[key] = await self.r.get(key)
            elif typ == b"hash":
                out[key] = await self.r.hgetall(key)
            elif typ == b"stream":
                out[key] = await self.r.xrange(key)
            else:
                out[key] = typ
        return out


def now() -> float:
    return time.time()
