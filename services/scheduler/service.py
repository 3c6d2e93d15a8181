"""Scheduler: the FIFO meta-queue, each model's capacity, leases, and the scheduling round.

An executor's AcquireStage waits in the meta-queue until a round places its stage on a
model; the round runs whenever something changes (a stage arrives, a lease is released or
expires), over every queued request, and only ever places within free capacity
(capacity = profiled saturation batch x instances, minus leases held). By default a round
is cost-first: each request's cheapest configurations, then escalations into what that left
free (views.py says why). A placement
records the chosen model (narrowing C(r)) and the lease in Redis before it is returned,
so a restarted scheduler reloads its leases and no choice is forgotten.

Writes to Redis are group-committed: a round's grants and the releases and renewals that
arrived since the previous round go out in one transaction, and each caller is answered
once that transaction succeeded (a grant is never returned before it is recorded). If
Redis fails, the batch is kept and retried; callers wait meanwhile.

Failure modes: an executor that dies while holding a lease stops renewing it and the lease
expires after lease_ttl_s; a caller that gives up (deadline, cancel) leaves the queue, and
a lease granted to it in the same instant is released at once.

A cancelled request (its id arrives on `{ns}:cancelled`) has its waiting stages refused
(FAILED_PRECONDITION), its leases freed at once (a model call in flight may still finish;
the executor's record of it is refused) and its later stages refused. Pub/sub may drop a
message while the subscription reconnects; after each (re)subscription the requests that
hold a place here are checked in Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import signal
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from operator import attrgetter
from typing import Any

import grpc
import numpy as np
import structlog
from aragog import policies
from aragog.common.bounds import clip, id_error, quote
from aragog.common.pool import PoolSpec
from aragog.common.settings import SchedulerSettings
from aragog.common.store import ALL_CONFIGS, ROUTING_PENDING, Store, decode_configs
from aragog.common.workflow import WorkflowDef, parse_workflow
from aragog.scheduler import views
from aragog.scheduler.health import ModelHealth
from aragog.scheduler.leadership import Leadership, LeadershipLost
from aragog.scheduler_ext import ROUND_IMPL, RoundRequest, WorkflowSpace, schedule_round
from aragog.v1 import common_pb2, scheduler_pb2
from prometheus_client import Counter, Gauge, Histogram

log = structlog.get_logger("scheduler")

QUEUED = Gauge("aragog_scheduler_queued_stages", "Stages waiting in the meta-queue")
LEASED = Gauge("aragog_scheduler_leased", "Leases held per model", ["model"])
ROUNDS = Counter("aragog_scheduler_rounds_total", "Scheduling rounds run")
PLACED = Counter("aragog_scheduler_placements_total", "Stages placed", ["model"])
EXPIRED = Counter("aragog_scheduler_leases_expired_total", "Leases freed by expiry")
STAGE_POLICY = Counter(
    "aragog_scheduler_stage_policy_total",
    "Stage-role decisions of requests' policies (picked: placed where it said; deferred: "
    "left to the round; overruled: a model outside C(r); failed: it raised)", ["outcome"])
ESCALATED = Counter(
    "aragog_scheduler_escalations_total",
    "Stages placed on a dearer model than their request's cheapest plan, into capacity no "
    "queued stage wanted at its cheapest (the cost-first round's second pass)", ["model"])
ROUND_SECONDS = Histogram(
    "aragog_scheduler_round_seconds", "Time of one round's computation",
    buckets=(1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 5e-2),
)


ROUTING_POLL_S = 0.005  # how often queued requests still being routed look for their F(r)

Write = tuple[Any, ...]
"""A queued Redis write: ("S", key, field, value) is HSET, ("D", key, field) is HDEL."""

# Applies a batch of writes atomically, as one command (one reply to parse, not one per write).
# KEYS[1]/ARGV[1..2]: the leadership key, this scheduler's id and the key's TTL (the fence:
# leadership.py). Held by another: refused. Lapsed with nobody else holding it (Redis was
# away longer than the TTL, or restarted without it): this scheduler is still the only
# active one, and takes the key back.
COMMIT_LUA = """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then
  return redis.error_reply('NOTACTIVE this scheduler no longer holds the leadership key')
end
if not holder then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) end
local a = 3
for i = 2, #KEYS do
  if ARGV[a] == 'S' then
    redis.call('HSET', KEYS[i], ARGV[a + 1], ARGV[a + 2]); a = a + 3
  else
    redis.call('HDEL', KEYS[i], ARGV[a + 1]); a = a + 2
  end
end
return #KEYS - 1
"""


class StageRejected(Exception):
    """A call the scheduler refuses: the status code a caller gets, and why."""

    def __init__(self, code: grpc.StatusCode, message: str):
        message = clip(message)  # it may quote what the caller sent
        super().__init__(message)
        self.code = code
        self.message = message


@dataclasses.dataclass
class Lease:
    lease_id: str
    model: int
    request_id: str
    stage: str
    executor_id: str
    expires: float

    def to_json(self) -> str:
        return json.dumps({"lease_id": self.lease_id, "model": self.model, "request_id": self.request_id,
                           "stage": self.stage, "executor_id": self.executor_id, "expires": self.expires})


@dataclasses.dataclass
class Waiter:
    stage: str
    stage_index: int
    executor_id: str
    enqueued: float
    future: asyncio.Future[scheduler_pb2.AcquireStageResponse]
    lease: Lease | None = None


@dataclasses.dataclass
class Entry:
    """A request the scheduler knows: F(r), the choices so far, C(r) and the stages it waits for.

    The same RoundRequest object lives on across the request's stages, so the round's cached
    per-request state stays warm and no stage reloads the request from Redis.
    """

    request_id: str
    workflow: WorkflowDef
    admitted: np.ndarray  # F(r)
    chosen: dict[int, int]  # LLM stage index -> candidate index chosen for it
    round_request: RoundRequest
    waiters: dict[int, Waiter]
    choice_lease: dict[str, str] = dataclasses.field(default_factory=dict)  # stage -> lease that chose
    # LLM stage index -> candidates whose model call failed for it: its retry goes elsewhere
    # when C(r) allows (kept in memory only: a reloaded entry may try such a model again)
    avoid: dict[int, set[int]] = dataclasses.field(default_factory=dict)
    partial: bool = False  # F(r) is the router's placeholder until its routing finishes
    seen: float = dataclasses.field(default_factory=time.monotonic)  # when this entry was made
    hold_over: bool = False  # its wait for the router's F(r) has run out
    arrival: float = 0.0  # admission time (created_at): its place in the FIFO meta-queue
    policy: policies.Policy | None = None  # the request's policy, if it has a stage role
    stage_state: bytes = b""  # what that policy stored at admission for its stage role
    # GPU-seconds per stage and candidate (views.stage_costs): the cost-first round's two
    # views of C(r) (see views.py); None: the work-conserving round sees C(r) whole
    costs: np.ndarray | None = None
    cheap: RoundRequest = dataclasses.field(init=False)  # C(r)'s cheapest configurations
    _escalation: tuple[tuple[int, ...], RoundRequest | None] | None = dataclasses.field(
        default=None, init=False)  # (ready stages it was built for, the view)

    def __post_init__(self) -> None:
        self.cheap = self.round_request
        self._views()

    def renarrow(self) -> None:
        """C(r) = F(r) narrowed by every choice still standing, then, for each stage not yet
        placed, without the models that failed it, unless no configuration would be left."""
        space = self.round_request.space
        configs = self.admitted
        for stage, cand in self.chosen.items():
            configs = configs[(configs // space.strides[stage]) % space.radices[stage] == cand]
        for stage, cands in self.avoid.items():
            if stage not in self.chosen:
                at = (configs // space.strides[stage]) % space.radices[stage]
                kept = configs[~np.isin(at, list(cands))]
                if len(kept):
                    configs = kept
        self.set_configs(configs)

    def narrow(self, stage: int, cand: int) -> None:
        """C(r) without the configurations that disagree with the model just chosen."""
        rr = self.round_request
        self.set_configs(rr.configs[(rr.configs // rr.space.strides[stage])
                                    % rr.space.radices[stage] == cand])

    def set_configs(self, configs: np.ndarray) -> None:
        self.round_request.configs = configs
        self._views()

    def _views(self) -> None:
        rr = self.round_request
        self._escalation = None
        low = rr.configs if self.costs is None else views.cheapest(rr.configs, rr.space, self.costs)
        if low is rr.configs:
            self.cheap = rr
        elif self.cheap is rr:
            self.cheap = RoundRequest(rr.space, low, rr.ready)  # shares the ready list
        else:
            self.cheap.configs = low

    def escalation(self) -> RoundRequest | None:
        """C(r) as the escalation pass sees it for the stages ready now; None when it holds
        nothing dearer than the cheapest plan for them."""
        rr = self.round_request
        if self.cheap is rr:
            return None
        ready = tuple(sorted(rr.ready))
        if self._escalation is None or self._escalation[0] != ready:
            wide = views.escalations(rr.configs, self.cheap.configs, rr.space, rr.ready)
            view = None if len(wide) == len(self.cheap.configs) else RoundRequest(
                rr.space, wide, rr.ready)
            self._escalation = (ready, view)
        return self._escalation[1]


@dataclasses.dataclass(frozen=True)
class CompiledWorkflow:
    workflow: WorkflowDef
    space: WorkflowSpace
    every: np.ndarray  # every configuration index, read-only, shared
    costs: np.ndarray  # GPU-seconds per stage and candidate (views.stage_costs)


class Scheduler:
    """The meta-queue and capacity; one instance per pool."""

    def __init__(self, settings: SchedulerSettings, store: Store, pool: PoolSpec,
                 on_lost: Callable[[], None] | None = None):
        """`on_lost`: what to do once another scheduler is active (default: SIGTERM to this
        process, whose supervisor starts it again as a standby)."""
        self.settings = settings
        self._on_lost = on_lost or (lambda: signal.raise_signal(signal.SIGTERM))
        self.store = store
        self.pool = pool
        self.model_ids = {m.name: i for i, m in enumerate(pool.models)}
        self.capacity = np.array([m.capacity for m in pool.models], dtype=np.int32)
        self.occupancy = np.zeros(len(pool.models), dtype=np.int32)
        self.health = ModelHealth(pool.names, settings.eject_after_failures, settings.eject_s)
        self.leadership = Leadership(store, settings.leader_ttl_s)
        self.active = False  # holds the leadership key and serves; a standby until then
        curves = [m.throughput_curve() for m in pool.models]
        width = max(len(c) for c in curves) + 1
        self.curves = np.array([c + [c[-1]] * (width - len(c)) for c in curves], dtype=np.float64)
        self.queue: dict[str, Entry] = {}
        # requests seen recently but waiting for nothing now (least recently used first)
        self.known: OrderedDict[str, Entry] = OrderedDict()
        self.leases: dict[str, Lease] = {}
        self.rounds = 0
        self._kick = asyncio.Event()
        self._routing_pending = asyncio.Event()  # some queued stage's request is being routed
        # the group commit: Redis writes not yet sent, and what to do once they are recorded
        self._writes: list[Write] = []
        self._commit_script = store.r.register_script(COMMIT_LUA)
        self._after: list[Callable[[], None]] = []
        self._workflows: dict[str, CompiledWorkflow] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[Any]] = set()
        self._leased_gauges = [LEASED.labels(m.name) for m in pool.models]
        self._cancelled: OrderedDict[str, None] = OrderedDict()  # recently cancelled requests
        self._stage_policies: dict[str, policies.Policy | None] = {}  # policy spec -> stage role
        self._owners: OrderedDict[str, str] = OrderedDict()  # request -> executor seen to own it

    # lifecycle ----------------------------------------------------------------------
    async def start(self) -> None:
        """Wait to be the active scheduler (leadership.py); then publish the pool, reload the
        leases a previous scheduler left, start the loops."""
        await self.leadership.acquire()
        await self.store.put_pool(self.pool)
        for lease_id, raw in (await self.store.r.hgetall(self.store.k.leases)).items():
            lease = Lease(**json.loads(raw))
            if lease.model < len(self.capacity):
                self.leases[lease_id.decode()] = lease
                self.occupancy[lease.model] += 1
        self._publish_gauges()
        log.info("scheduler_started", models=self.pool.names, capacity=self.capacity.tolist(),
                 reloaded_leases=len(self.leases))
        subscribed = asyncio.Event()
        self._tasks = [asyncio.create_task(self._round_loop()), asyncio.create_task(self._expiry_loop()),
                       asyncio.create_task(self._routing_loop()),
                       asyncio.create_task(self._cancel_loop(subscribed)),
                       asyncio.create_task(self._keep_leadership())]
        await subscribed.wait()
        self.active = True

    async def stop(self) -> None:
        """Stop the loops, record what is still queued for Redis, drop the waiting acquires
        (their executors retry against the next scheduler)."""
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if not self.active:
            return  # a standby: nothing placed, nothing to record
        try:
            await self._commit()
        except Exception:
            log.exception("final_commit_failed")
        for entry in list(self.queue.values()):
            for w in entry.waiters.values():
                if not w.future.done():
                    w.future.cancel()
        self.active = False
        try:
            await self.leadership.resign()  # a standby takes over at its next poll
        except Exception:
            log.exception("resign_failed")  # the key lapses on its own

    async def _keep_leadership(self) -> None:
        try:
            await self.leadership.keep()
        except LeadershipLost:
            self._lost()

    def _lost(self) -> None:
        """Another scheduler is active: stop placing and shut down (fail-stop)."""
        if self.active:
            log.error("leadership_lost", scheduler=self.leadership.me)
            self.active = False
            self._on_lost()

    def check_active(self) -> None:
        if not self.active:
            raise StageRejected(
                grpc.StatusCode.UNAVAILABLE,
                "this scheduler is a standby (or stopping): send stage traffic to the active "
                "one (executors try each address of ARAGOG_SCHEDULER_ADDR in turn)")

    # the API ------------------------------------------------------------------------
    async def _compiled(self, wid: str) -> CompiledWorkflow | None:
        """The workflow's configuration space, built once: registered workflows never change
        (the router refuses to redefine an id), so the id is a safe cache key."""
        cw = self._workflows.get(wid)
        if cw is None:
            raw = await self.store.r.hget(self.store.k.workflows, wid)
            if raw is None:
                return None
            wf = parse_workflow(raw.decode())
            llm = wf.llm_stages
            depths = wf.depths()
            space = WorkflowSpace.from_candidates(
                [[self.model_ids[m] for m in s.candidates] for s in llm],
                [depths[s.name] for s in llm],
            )
            every = np.arange(space.size, dtype=np.int64)
            every.flags.writeable = False
            cw = self._workflows[wid] = CompiledWorkflow(
                wf, space, every, views.stage_costs(wf, self.pool, space))
        return cw

    async def _load_entry(self, rid: str, executor_id: str) -> tuple[Entry | None, str]:
        """Build a queue entry from Redis: C(r) = F(r) narrowed by the models chosen so far.
        Checks first, in the same round trip, that `executor_id` owns the request."""
        k = self.store.k
        async with self.store.r.pipeline(transaction=False) as p:
            p.hmget(k.req(rid), ["workflow_id", "routing", "created_at", "state", "policy",
                                 "stage_state"])
            p.get(k.f(rid))
            p.hgetall(k.chosen(rid))
            p.get(k.owner(rid))
            (wid, routing, created, state, spec, stage_state), f_raw, chosen, owner = \
                await p.execute()
        self._owned(rid, executor_id, (owner or b"").decode())
        if wid is None or f_raw is None:
            return None, f"no admitted request {rid!r}"
        if state is not None and int(state) == common_pb2.REQUEST_STATE_CANCELLED:
            raise _cancelled(rid)
        cw = await self._compiled(wid.decode())
        if cw is None:
            return None, f"workflow {wid.decode()!r} of request {rid!r} is not registered"
        space = cw.space
        admitted = _admitted_configs(f_raw, cw)
        if admitted is None:
            return None, f"F(r) of request {rid!r} does not fit workflow {cw.workflow.id}"
        choices: dict[int, int] = {}
        for stage_raw, model_raw in chosen.items():
            try:
                s = cw.workflow.llm_index(stage_raw.decode())
                choices[s] = list(space.stage_models[s]).index(self.model_ids[model_raw.decode()])
            except (KeyError, ValueError):
                continue
        entry = Entry(rid, cw.workflow, admitted, choices,
                      RoundRequest(space=space, configs=admitted, ready=[]), {},
                      partial=routing == ROUTING_PENDING, arrival=float(created or 0.0),
                      policy=self._stage_policy(spec.decode()) if spec else None,
                      stage_state=stage_state or b"",
                      costs=cw.costs if self.settings.placement == "cost-first" else None)
        entry.renarrow()
        return entry, ""

    async def _refresh_partial(self, entry: Entry) -> None:
        """Replace a placeholder F(r) by the router's finished one, if it is there now.

        The placeholder always holds the largest configuration, so whatever was placed from
        it stays consistent with some configuration of the final F(r) that includes it.
        """
        k = self.store.k
        async with self.store.r.pipeline(transaction=False) as p:
            p.hget(k.req(entry.request_id), "routing")
            p.get(k.f(entry.request_id))
            routing, f_raw = await p.execute()
        self._apply_routing(entry, routing, f_raw)

    def _apply_routing(self, entry: Entry, routing: bytes | None, f_raw: bytes | None) -> None:
        if not entry.partial or routing == ROUTING_PENDING or f_raw is None:
            return
        cw = self._workflows[entry.workflow.id]
        admitted = _admitted_configs(f_raw, cw)
        if admitted is not None:
            entry.admitted = admitted
            entry.renarrow()
        entry.partial = False

    def _forget(self, entry: Entry) -> None:
        """The request waits for nothing now: keep it warm among the recently known."""
        self.queue.pop(entry.request_id, None)
        self.known[entry.request_id] = entry
        self.known.move_to_end(entry.request_id)
        while len(self.known) > self.settings.request_cache_size:
            self.known.popitem(last=False)

    async def acquire(self, rid: str, stage: str, executor_id: str) -> scheduler_pb2.AcquireStageResponse:
        """Queue the stage and wait until a round places it; raise StageRejected if it cannot be."""
        bad = (id_error("request_id", rid) or id_error("executor_id", executor_id)
               or (None if stage else "stage is required"))
        if bad:
            raise StageRejected(grpc.StatusCode.INVALID_ARGUMENT, bad)
        self.check_active()
        structlog.contextvars.bind_contextvars(request_id=rid, stage=stage)
        if rid in self._cancelled:
            raise _cancelled(rid)
        if self._owners.get(rid) != executor_id and (rid in self.queue or rid in self.known):
            await self._check_owner(rid, executor_id)  # known here, not yet to this executor
        entry = self.queue.get(rid) or self.known.pop(rid, None)
        if entry is not None and not entry.waiters and _stage_or_none(entry.workflow, stage) is None:
            entry = None  # a cached request whose id was admitted again for another workflow
        if entry is None:
            loaded, err = await self._load_entry(rid, executor_id)
            # While we read Redis, another acquire of this request may have loaded it and a
            # round placed its stages (moving it to `known`): keep one entry per request, or
            # the choices made on one are invisible to the other and the request runs a
            # configuration outside F(r).
            entry = self.queue.get(rid) or self.known.pop(rid, None) or loaded
            if entry is None:
                raise StageRejected(grpc.StatusCode.NOT_FOUND, err)
            if rid in self._cancelled:  # cancelled while we read Redis
                raise _cancelled(rid)
        entry = self.queue.setdefault(rid, entry)
        if entry.partial:
            await self._refresh_partial(entry)
            if rid in self._cancelled:
                raise _cancelled(rid)
            # while we waited, a round may have placed the request's other stages and moved
            # it to `known`: a waiter on an entry outside the queue would never be placed
            if self.known.get(rid) is entry:
                del self.known[rid]
            entry = self.queue.setdefault(rid, entry)
        sdef = _stage_or_none(entry.workflow, stage)
        if sdef is None or sdef.kind != "llm":
            if not entry.waiters:
                self._forget(entry)
            raise StageRejected(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"workflow {entry.workflow.id} has no LLM stage {quote(stage)} "
                f"(LLM stages: {', '.join(s.name for s in entry.workflow.llm_stages)})",
            )
        index = entry.workflow.llm_index(stage)
        if index in entry.waiters:
            raise StageRejected(grpc.StatusCode.ALREADY_EXISTS, f"stage {stage} of {rid} is already waiting")
        if len(entry.round_request.configs) == 0:
            if not entry.waiters:
                self._forget(entry)
            raise StageRejected(grpc.StatusCode.FAILED_PRECONDITION,
                                f"request {rid} has no viable configuration left")
        if entry.policy is not None and index not in entry.chosen:
            self._apply_stage_role(entry, index)
        waiter = Waiter(stage, index, executor_id, time.monotonic(),
                        asyncio.get_running_loop().create_future())
        entry.waiters[index] = waiter
        entry.round_request.ready.append(index)
        QUEUED.inc()
        if entry.partial:
            self._routing_pending.set()
        self._kick.set()
        try:
            return await waiter.future
        except asyncio.CancelledError:
            self._abandon(entry, waiter)
            raise

    async def _check_owner(self, rid: str, executor_id: str) -> None:
        """_owned, reading the owner key alone (for a request this scheduler has loaded)."""
        self._owned(rid, executor_id,
                    (await self.store.r.get(self.store.k.owner(rid)) or b"").decode())

    def _owned(self, rid: str, executor_id: str, owner: str) -> None:
        """Only the executor running a request (its owner key, set when it claimed it) may
        place its stages: no caller leases capacity for another's request, or for one that
        ended. Checked when the request is loaded and when another executor asks; an
        executor seen to own it is remembered, so its later stages read nothing."""
        if self._owners.get(rid) == executor_id:
            self._owners.move_to_end(rid)
            return
        if owner != executor_id:
            raise StageRejected(
                grpc.StatusCode.PERMISSION_DENIED,
                f"executor {quote(executor_id)} does not run request {rid}"
                + (f" (executor {quote(owner)} does)" if owner else
                   " (no executor does: it has ended, or none has claimed it yet)")
                + ": only the executor that claimed a request places its stages")
        self._owners[rid] = owner
        while len(self._owners) > self.settings.request_cache_size:
            self._owners.popitem(last=False)

    def _stage_policy(self, spec: str) -> policies.Policy | None:
        """The policy `spec` if it has a stage role, else None (built once per spec)."""
        if spec not in self._stage_policies:
            try:
                policy: policies.Policy | None = policies.make(spec)
            except policies.PolicyError as e:  # one only the router knows (aragog-profiled)
                log.info("policy_without_stage_role_here", policy=clip(spec, 80), why=clip(str(e)))
                policy = None
            if len(self._stage_policies) >= 1024:  # specs carry arguments: bound the cache
                self._stage_policies.clear()
            self._stage_policies[spec] = policy if policy and policy.decides_stages else None
        return self._stage_policies[spec]

    def _apply_stage_role(self, entry: Entry, index: int) -> None:
        """Ask the request's policy for this stage's model and narrow C(r) to it; a model
        outside C(r), or a policy that fails, leaves the stage to the round."""
        space = entry.round_request.space
        configs = entry.round_request.configs
        allowed = np.unique((configs // space.strides[index]) % space.radices[index])
        candidates = entry.workflow.llm_stages[index].candidates
        view = policies.StageView(
            entry.request_id, entry.workflow, self.pool, entry.workflow.llm_stages[index].name,
            index,
            tuple(candidates[int(c)] for c in allowed),
            {m.name: (int(self.occupancy[i]), int(self.capacity[i]))
             for i, m in enumerate(self.pool.models)},
            entry.stage_state)
        try:
            model = entry.policy.stage(view)  # type: ignore[union-attr]
        except Exception:
            log.exception("stage_policy_failed", policy=entry.policy.name)  # type: ignore[union-attr]
            STAGE_POLICY.labels("failed").inc()
            return
        if model is None:
            STAGE_POLICY.labels("deferred").inc()
            return
        if model not in view.options:
            log.warning("stage_policy_overruled", model=clip(str(model), 80), options=view.options)
            STAGE_POLICY.labels("overruled").inc()
            return
        entry.chosen[index] = list(candidates).index(model)
        entry.renarrow()
        STAGE_POLICY.labels("picked").inc()

    def _abandon(self, entry: Entry, waiter: Waiter) -> None:
        """The caller left: drop its wait, or give back a lease granted in the same instant."""
        if waiter.lease is not None:
            log.info("lease_abandoned", request_id=entry.request_id, stage=waiter.stage)
            task = asyncio.get_running_loop().create_task(self.release(waiter.lease.lease_id, False))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
            return
        if entry.waiters.get(waiter.stage_index) is waiter:
            del entry.waiters[waiter.stage_index]
            entry.round_request.ready.remove(waiter.stage_index)
            QUEUED.dec()
            if not entry.waiters:
                self._forget(entry)

    async def _recorded(self, *writes: Write) -> None:
        """Queue `writes` for the next group commit and wait until Redis has them."""
        done = asyncio.get_running_loop().create_future()
        self._writes.extend(writes)
        self._after.append(lambda: done.done() or done.set_result(None))
        self._kick.set()
        await asyncio.shield(done)  # a caller that leaves does not take the write with it

    async def renew(self, lease_id: str) -> float:
        """Extend the lease; return its TTL (s). StageRejected if it is malformed or gone."""
        lease = self.leases.get(_checked_lease(lease_id))
        self.check_active()
        if lease is None:
            raise _lease_gone(lease_id)
        lease.expires = time.time() + self.settings.lease_ttl_s
        await self._recorded(("S", self.store.k.leases, lease_id, lease.to_json()))
        return self.settings.lease_ttl_s

    async def release_stage(self, lease_id: str, success: bool, model_failed: bool = False) -> None:
        """release() for a caller: StageRejected if the lease is malformed or gone (expired:
        its capacity is free again and its choice undone, so there is nothing to release)."""
        lease_id = _checked_lease(lease_id)
        self.check_active()
        if not await self.release(lease_id, success, model_failed):
            raise _lease_gone(lease_id)

    async def release(self, lease_id: str, success: bool, model_failed: bool = False) -> bool:
        """Free the lease (undo its choice unless `success`); False if it was not held.

        `model_failed`: the model call failed (not the executor): the model's health counts
        it and the stage's retry avoids that model where C(r) allows (health.py)."""
        lease = self.leases.pop(lease_id, None)
        if lease is None:
            return False
        self.occupancy[lease.model] -= 1
        entry = self.queue.get(lease.request_id) or self.known.get(lease.request_id)
        if success:
            self.health.succeeded(lease.model)
        elif model_failed:
            if self.health.failed(lease.model, time.monotonic()):
                log.warning("model_ejected", model=self.pool.models[lease.model].name,
                            ejected_s=self.health.seconds_left(time.monotonic()))
            if entry is not None:
                index = entry.workflow.llm_index(lease.stage)
                cand = list(entry.round_request.space.stage_models[index]).index(lease.model)
                entry.avoid.setdefault(index, set()).add(cand)
        # Only the lease that made the stage's choice may undo it: a lease that expired after
        # a resumed executor placed the stage again must not erase the newer choice.
        undo = not success and (entry is None or entry.choice_lease.get(lease.stage) == lease_id)
        if undo and entry is not None:
            entry.chosen.pop(entry.workflow.llm_index(lease.stage), None)
            entry.choice_lease.pop(lease.stage, None)
            entry.renarrow()
        k = self.store.k
        writes: list[Write] = [("D", k.leases, lease_id)]
        if undo:
            # let a retry of the stage pick any model again (the chosen one may be down)
            writes.append(("D", k.chosen(lease.request_id), lease.stage))
        self._publish_gauges()
        await self._recorded(*writes)
        return True

    def cancel(self, rid: str) -> None:
        """The request was cancelled: refuse its waiting stages and those to come, free its
        leases (capacity goes to others in the next round)."""
        self._cancelled[rid] = None
        self._cancelled.move_to_end(rid)
        while len(self._cancelled) > self.settings.request_cache_size:
            self._cancelled.popitem(last=False)
        withdrawn = 0
        for entry in (self.queue.pop(rid, None), self.known.pop(rid, None)):
            for waiter in entry.waiters.values() if entry else ():
                if not waiter.future.done():
                    waiter.future.set_exception(_cancelled(rid))
                QUEUED.dec()
                withdrawn += 1
            if entry:
                entry.waiters.clear()
                entry.round_request.ready.clear()
        leases = [lz.lease_id for lz in self.leases.values() if lz.request_id == rid]
        for lease_id in leases:
            task = asyncio.get_running_loop().create_task(self.release(lease_id, True))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        if withdrawn or leases:
            log.info("request_cancelled", request_id=rid, withdrawn=withdrawn, freed=len(leases))

    async def _cancel_loop(self, subscribed: asyncio.Event) -> None:
        async def catch_up() -> None:
            """Cancellations published while we were not subscribed: the requests holding a
            place here, checked in Redis."""
            rids = list({*self.queue, *(lz.request_id for lz in self.leases.values())})
            async with self.store.r.pipeline(transaction=False) as p:
                for rid in rids:
                    p.hget(self.store.k.req(rid), "state")
                states = await p.execute()
            for rid, state in zip(rids, states, strict=True):
                if state is not None and int(state) == common_pb2.REQUEST_STATE_CANCELLED:
                    self.cancel(rid)
            subscribed.set()

        await self.store.subscribe(self.store.k.cancel_channel,
                                   lambda rid: self.cancel(rid.decode()), catch_up)

    def _grant(self, future: asyncio.Future[Any], response: scheduler_pb2.AcquireStageResponse,
               rid: str) -> None:
        """Answer a placed stage once its lease is recorded, unless the request was cancelled
        meanwhile (its lease is gone then)."""
        if future.done():
            return
        if response.lease_id in self.leases:
            future.set_result(response)
        else:
            future.set_exception(_cancelled(rid))

    # rounds -------------------------------------------------------------------------
    async def _round_loop(self) -> None:
        while True:
            lapse = self.health.next_lapse(time.monotonic())
            if lapse is None:
                await self._kick.wait()
            else:  # an ejected model comes back then: its capacity is free to place on
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._kick.wait(),
                                           max(0.0, lapse - time.monotonic()) + 0.001)
            self._kick.clear()
            try:
                self._round()
                await self._commit()
            except LeadershipLost:
                self._lost()
                return
            except Exception:
                log.exception("round_failed")
                await asyncio.sleep(0.05)
                self._kick.set()

    async def _commit(self) -> None:
        """Send every queued write in one transaction, then answer the callers waiting on them.

        On failure the batch goes back to the front of the queue (retried on the next kick).
        """
        if not self._writes and not self._after:
            return
        writes, after = self._writes, self._after
        self._writes, self._after = [], []
        try:
            if writes:
                keys = [self.leadership.key, *(w[1] for w in writes)]
                args: list[str | int] = [self.leadership.me, self.leadership.ttl_ms]
                for w in writes:
                    args.append(w[0])
                    args.extend(w[2:])
                await self._commit_script(keys=keys, args=args)
        except BaseException as e:
            self._writes[:0], self._after[:0] = writes, after
            if "NOTACTIVE" in str(e):
                raise LeadershipLost(str(e)) from e
            raise
        for done in after:
            done()

    def _round(self) -> None:
        """Place what fits now; queue the placements' writes and the grants for the commit.

        Cost-first (the default; views.py says why): every request at its cheapest first,
        then escalations into what that left free. Work-conserving: C(r) whole, one pass."""
        held_until = time.monotonic() - self.settings.routing_wait_s
        entries = [e for e in self.queue.values()
                   if e.waiters and not (e.partial and e.seen > held_until)]
        if not entries or not (self._free() > 0).any():
            return
        # FIFO by request arrival, not by when a stage became ready: a request's later stage
        # goes before newer requests' first stages, so under overload requests finish in
        # order instead of all progressing a little and all timing out. (The dict holds
        # entries by last enqueue: a few sorted runs, which the stable sort merges cheaply.)
        entries.sort(key=attrgetter("arrival"))
        self.rounds += 1
        ROUNDS.inc()
        if self.settings.placement != "cost-first":
            self._place(entries, [e.round_request for e in entries], whole=True)
            return
        self._place(entries, [e.cheap for e in entries], whole=False)
        if not (self._free() > 0).any():
            return
        wider = [(e, view) for e in entries if e.waiters
                 for view in (e.escalation(),) if view is not None]
        if wider:
            self._place([e for e, _ in wider], [v for _, v in wider], whole=False,
                        escalated=True)

    def _place(self, entries: list[Entry], requests: list[RoundRequest], *, whole: bool,
               escalated: bool = False) -> None:
        """One kernel call over `requests` (one view of each entry's C(r), `whole` if C(r)
        itself) within the free capacity; apply and record its placements."""
        free = self._free()
        t0 = time.perf_counter()
        result = schedule_round(requests, free, self.occupancy.copy(), self.curves,
                                self.settings.beam_width)
        ROUND_SECONDS.observe(time.perf_counter() - t0)
        if not result.placements:
            return
        k = self.store.k
        expires = time.time() + self.settings.lease_ttl_s
        if whole:
            for pos, configs in result.configs.items():
                entries[pos].set_configs(configs)
        for pl in result.placements:
            entry = entries[pl.request]
            waiter = entry.waiters.pop(pl.stage)
            entry.round_request.ready.remove(pl.stage)
            space = entry.round_request.space
            cand = list(space.stage_models[pl.stage]).index(pl.model)
            entry.chosen[pl.stage] = cand
            if not whole:
                entry.narrow(pl.stage, cand)
            QUEUED.dec()
            model = self.pool.models[pl.model].name
            lease = Lease(uuid.uuid4().hex, pl.model, entry.request_id, waiter.stage,
                          waiter.executor_id, expires)
            waiter.lease = lease
            entry.choice_lease[waiter.stage] = lease.lease_id
            self.leases[lease.lease_id] = lease
            self.occupancy[pl.model] += 1
            PLACED.labels(model).inc()
            if escalated:
                ESCALATED.labels(model).inc()
            viable = len(entry.round_request.configs)
            self._writes += [
                ("S", k.leases, lease.lease_id, lease.to_json()),
                ("S", k.chosen(entry.request_id), waiter.stage, model),
                ("S", k.req(entry.request_id), "viable", viable),
            ]
            response = scheduler_pb2.AcquireStageResponse(
                model=model, lease_id=lease.lease_id,
                lease_ttl_ms=int(self.settings.lease_ttl_s * 1000),
                queued_ms=(time.monotonic() - waiter.enqueued) * 1000.0,
                viable_configurations=viable,
            )
            self._after.append(functools.partial(self._grant, waiter.future, response,
                                                 entry.request_id))
            if not entry.waiters:
                self._forget(entry)
        self._publish_gauges()

    def _free(self) -> np.ndarray:
        """Free capacity per model; none on a model ejected for failing (health.py)."""
        free = np.maximum(self.capacity - self.occupancy, 0).astype(np.int32)
        free[self.health.ejected(time.monotonic())] = 0
        return free

    async def _routing_loop(self) -> None:
        """Swap the router's F(r) into queued requests as soon as it is written.

        Without this a stage queued on the placeholder F(r) could only ever be placed on the
        largest model, however long it waited for it. A stage is held back from rounds for
        at most routing_wait_s (the router's p99 is ~15 ms); past that it is placed from the
        placeholder, so a slow or dead router costs GPU time, never a request.
        """
        while True:
            await self._routing_pending.wait()
            await asyncio.sleep(ROUTING_POLL_S)
            pending = [e for e in self.queue.values() if e.partial and e.waiters]
            if not pending:
                self._routing_pending.clear()
                continue
            try:
                await self._refresh_many(pending)
            except asyncio.CancelledError:
                raise
            except Exception:  # Redis away: the stages are placed from the placeholder
                log.exception("routing_refresh_failed")
            held_until = time.monotonic() - self.settings.routing_wait_s
            for e in pending:
                if not e.partial or (e.seen <= held_until and not e.hold_over):
                    e.hold_over = e.seen <= held_until
                    self._kick.set()

    async def _refresh_many(self, entries: list[Entry]) -> None:
        """_refresh_partial for many requests in one Redis round trip."""
        k = self.store.k
        async with self.store.r.pipeline(transaction=False) as p:
            for e in entries:
                p.hget(k.req(e.request_id), "routing")
                p.get(k.f(e.request_id))
            replies = await p.execute()
        for i, entry in enumerate(entries):
            self._apply_routing(entry, replies[2 * i], replies[2 * i + 1])

    async def _expiry_loop(self) -> None:
        period = max(0.05, self.settings.lease_ttl_s / 4)
        while True:
            await asyncio.sleep(period)
            now = time.time()
            try:
                for lease in [lz for lz in self.leases.values() if lz.expires < now]:
                    log.warning("lease_expired", request_id=lease.request_id, stage=lease.stage,
                                executor=lease.executor_id)
                    EXPIRED.inc()
                    await self.release(lease.lease_id, False)
                await self.store.put_pool(self.pool)  # back after a Redis restart lost it
                await self._sync_leases()
            except asyncio.CancelledError:
                raise
            except Exception:  # Redis away: leases expire on a later pass
                log.exception("expiry_pass_failed")

    async def _sync_leases(self) -> None:
        """Make the leases recorded in Redis those held, whatever Redis lost: restarted after
        a crash, it may have back leases released in its last second, or lack some granted
        then (the load-monitor and a restarted scheduler read them). Corrections go through
        the group commit, in order with the grants and releases queued meanwhile."""
        stored = {lid.decode() for lid in await self.store.r.hkeys(self.store.k.leases)}
        k = self.store.k
        writes: list[Write] = [("D", k.leases, lid) for lid in stored - self.leases.keys()]
        writes += [("S", k.leases, lid, lease.to_json())
                   for lid, lease in self.leases.items() if lid not in stored]
        if writes:
            log.warning("leases_resynced", dropped=len(stored - self.leases.keys()),
                        restored=len(self.leases.keys() - stored))
            self._writes.extend(writes)
            self._kick.set()

    def _publish_gauges(self) -> None:
        for gauge, occupied in zip(self._leased_gauges, self.occupancy.tolist(), strict=True):
            gauge.set(occupied)

    def state(self) -> scheduler_pb2.GetSchedulerStateResponse:
        return scheduler_pb2.GetSchedulerStateResponse(
            queued_stages=sum(len(e.waiters) for e in self.queue.values()),
            leased={m.name: int(self.occupancy[i]) for i, m in enumerate(self.pool.models)},
            capacity={m.name: int(self.capacity[i]) for i, m in enumerate(self.pool.models)},
            rounds=self.rounds,
            round_impl=ROUND_IMPL,
            ejected_s=self.health.seconds_left(time.monotonic()),
        )


def _checked_lease(lease_id: str) -> str:
    bad = id_error("lease_id", lease_id)
    if bad:
        raise StageRejected(grpc.StatusCode.INVALID_ARGUMENT, bad)
    return lease_id


def _lease_gone(lease_id: str) -> StageRejected:
    return StageRejected(grpc.StatusCode.NOT_FOUND, f"no lease {lease_id!r} (expired or released)")


def _stage_or_none(workflow: WorkflowDef, stage: str):
    try:
        return workflow.stage(stage)
    except KeyError:
        return None


def _admitted_configs(f_raw: bytes, cw: CompiledWorkflow) -> np.ndarray | None:
    """F(r) as stored by the router, or None if it does not fit the workflow's space.

    F(r) = every configuration is shared by all such requests (1e6 configs = 8 MB each)."""
    size = cw.space.size
    admitted = cw.every if f_raw == ALL_CONFIGS else decode_configs(f_raw, size)
    if admitted.size and (admitted[0] < 0 or admitted[-1] >= size
                          or (admitted.size > 1 and not (np.diff(admitted) > 0).all())):
        return None
    return admitted


def _cancelled(rid: str) -> StageRejected:
    return StageRejected(grpc.StatusCode.FAILED_PRECONDITION,
                         f"request {rid} was cancelled: none of its stages runs any more")
