"""Scheduler: the FIFO meta-queue, each model's capacity, leases, and the scheduling round.

An executor's AcquireStage waits in the meta-queue until a round places its stage on a
model; the round runs whenever something changes (a stage arrives, a lease is released or
expires), over every queued request, and only ever places within free capacity
(capacity = profiled saturation batch x instances, minus leases held). The service is split
by role, one module each:

- placement.py: the queue's entries (F(r), the choices so far, C(r)) and the round (no I/O:
  what a simulator runs unchanged); views.py: the cost-first round's views of C(r);
- leases.py: the leases held and the occupancy they make;
- commit.py: the group commit (a placement is recorded in Redis, the chosen model narrowing
  C(r) and the lease, before it is returned, so a restarted scheduler forgets no choice);
- routing.py: the router's F(r) swapped into queued requests as soon as it is written;
- leadership.py: one active scheduler per pool; health.py: models ejected for failing.

This module ties them together and answers the API.

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
from typing import Any

import grpc
import numpy as np
import structlog
from aragog import policies
from aragog.common import tracing
from aragog.common.bounds import clip, id_error, quote
from aragog.common.pool import ModelProfile, PoolSpec, PoolSpecError
from aragog.common.settings import SchedulerSettings
from aragog.common.store import Store
from aragog.common.workflow import WorkflowDef
from aragog.scheduler import deployment
from aragog.scheduler.commit import GroupCommit
from aragog.scheduler.deployment import Deployment, WindowDeployer, make_control
from aragog.scheduler.health import ModelHealth
from aragog.scheduler.leadership import Leadership, LeadershipLost
from aragog.scheduler.leases import Lease, Leases
from aragog.scheduler.placement import (
    CompiledWorkflow,
    Entry,
    Placement,
    Round,
    apply_stage_role,
)
from aragog.scheduler.routing import RoutingRefresh
from aragog.scheduler_ext import ROUND_IMPL
from aragog.v1 import common_pb2, scheduler_pb2
from prometheus_client import Counter, Gauge, Histogram

log = structlog.get_logger("scheduler")

MAX_PROFILE_BYTES = 4096  # an AddModel profile: one pool-file entry
POOL_CHANGES_SHOWN = 50  # GetSchedulerState's newest pool changes
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


class StageRejected(Exception):
    """A call the scheduler refuses: the status code a caller gets, and why."""

    def __init__(self, code: grpc.StatusCode, message: str):
        message = clip(message)  # it may quote what the caller sent
        super().__init__(message)
        self.code = code
        self.message = message


@dataclasses.dataclass
class Waiter:
    stage: str
    stage_index: int
    executor_id: str
    enqueued: float
    future: asyncio.Future[scheduler_pb2.AcquireStageResponse]
    lease: Lease | None = None


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
        self.leases = Leases(len(pool.models))
        self.health = ModelHealth(pool.names, settings.eject_after_failures, settings.eject_s)
        self.leadership = Leadership(store, settings.leader_ttl_s)
        self.active = False  # holds the leadership key and serves; a standby until then
        self.deployment = Deployment(store, make_control(settings), pool,
                                     lambda: self.leases.occupancy, self._placeable_changed)
        self.round = Round(pool, cost_first=settings.placement == "cost-first",
                           beam_width=settings.beam_width,
                           unplaceable=self.deployment.unplaceable)
        self.queue: dict[str, Entry] = {}
        # requests seen recently but waiting for nothing now (least recently used first)
        self.known: OrderedDict[str, Entry] = OrderedDict()
        self.rounds = 0
        self._kick = asyncio.Event()
        self.commit = GroupCommit(store, self.leadership, self._kick)
        self._workflows: dict[str, CompiledWorkflow] = {}
        self.routing = RoutingRefresh(store, self.queue, self._workflows, self._kick,
                                      settings.routing_wait_s)
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[Any]] = set()
        self._leased_gauges = [LEASED.labels(m.name) for m in pool.models]
        self._cancelled: OrderedDict[str, None] = OrderedDict()  # recently cancelled requests
        self._stage_policies: dict[str, policies.Policy | None] = {}  # policy spec -> stage role
        self._owners: OrderedDict[str, str] = OrderedDict()  # request -> executor seen to own it

    @property
    def occupancy(self) -> np.ndarray:
        return self.leases.occupancy

    # lifecycle ----------------------------------------------------------------------
    async def start(self) -> None:
        """Wait to be the active scheduler (leadership.py); then publish the pool, reload the
        leases a previous scheduler left, start the loops."""
        await self.leadership.acquire()
        stored = await self.store.get_pool()
        for m in stored.models if stored else ():  # added while a scheduler served
            if m.name not in self.model_ids:
                self._grow(m)
        await self.store.put_pool(self.pool)
        await self.deployment.restore()
        for raw in await self.store.recorded_leases():
            lease = Lease.from_json(raw)
            if lease.model < len(self.capacity):
                self.leases.add(lease)
        self._publish_gauges()
        log.info("scheduler_started", models=self.pool.names, capacity=self.capacity.tolist(),
                 reloaded_leases=len(self.leases))
        subscribed = asyncio.Event()
        self._tasks = [asyncio.create_task(self._round_loop()), asyncio.create_task(self._expiry_loop()),
                       asyncio.create_task(self.routing.run()),
                       asyncio.create_task(self._cancel_loop(subscribed)),
                       asyncio.create_task(self._keep_leadership())]
        if self.settings.deployment_window_s > 0:
            deployer = WindowDeployer(
                self.store, self.deployment, lambda: self.pool, self.unload_model,
                self.load_model, self.settings.deployment_window_s, self.settings.max_deployed,
                self.settings.deployment_budget)
            self._tasks.append(asyncio.create_task(deployer.run()))
        await subscribed.wait()
        self.active = True

    async def stop(self) -> None:
        """Stop the loops, record what is still queued for Redis, drop the waiting acquires
        (their executors retry against the next scheduler)."""
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.deployment.stop()  # a drain or load in flight resumes in the next scheduler
        if not self.active:
            return  # a standby: nothing placed, nothing to record
        try:
            await self.commit.flush()
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
            wf = await self.store.get_workflow(wid)
            if wf is None:
                return None
            cw = self._workflows[wid] = CompiledWorkflow.build(wf, self.pool)
        return cw

    async def _load_entry(self, rid: str, executor_id: str) -> tuple[Entry | None, str]:
        """Build a queue entry from Redis: C(r) = F(r) narrowed by the models chosen so far.
        Checks first, in the same round trip, that `executor_id` owns the request."""
        rec = await self.store.scheduling_record(rid)
        self._owned(rid, executor_id, rec.owner)
        if rec.workflow_id is None or rec.f_raw is None:
            return None, f"no admitted request {rid!r}"
        if rec.state == common_pb2.REQUEST_STATE_CANCELLED:
            raise _cancelled(rid)
        cw = await self._compiled(rec.workflow_id)
        if cw is None:
            return None, f"workflow {rec.workflow_id!r} of request {rid!r} is not registered"
        space = cw.space
        admitted = cw.admitted(rec.f_raw)
        if admitted is None:
            return None, f"F(r) of request {rid!r} does not fit workflow {cw.workflow.id}"
        choices: dict[int, int] = {}
        for stage, model in rec.chosen.items():
            try:
                s = cw.workflow.llm_index(stage)
                choices[s] = list(space.stage_models[s]).index(self.model_ids[model])
            except (KeyError, ValueError):
                continue
        entry = self.round.entry(
            cw, rid, admitted, choices, partial=rec.routing_pending, seen=time.monotonic(),
            arrival=rec.created_at,
            policy=self._stage_policy(rec.policy) if rec.policy else None,
            stage_state=rec.stage_state)
        return entry, ""

    def _forget(self, entry: Entry) -> None:
        """The request waits for nothing now: keep it warm among the recently known."""
        self.queue.pop(entry.request_id, None)
        self.known[entry.request_id] = entry
        self.known.move_to_end(entry.request_id)
        while len(self.known) > self.settings.request_cache_size:
            self.known.popitem(last=False)

    async def acquire(self, rid: str, stage: str, executor_id: str, traceparent: str = ""
                      ) -> scheduler_pb2.AcquireStageResponse:
        """Queue the stage and wait until a round places it; raise StageRejected if it cannot be.
        `traceparent`: the executor's span of the stage (tracing on): the wait is its child."""
        if not traceparent:
            return await self._acquire(rid, stage, executor_id)
        with tracing.tracer.start_as_current_span(
                "meta-queue", context=tracing.parent(traceparent),
                attributes={"aragog.request_id": rid, "aragog.stage": stage}) as span:
            granted = await self._acquire(rid, stage, executor_id)
            span.set_attribute("aragog.model", granted.model)
            return granted

    async def _acquire(self, rid: str, stage: str, executor_id: str
                       ) -> scheduler_pb2.AcquireStageResponse:
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
            await self.routing.refresh([entry])
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
            STAGE_POLICY.labels(apply_stage_role(entry, index, self.pool, self.leases.occupancy,
                                                 self.capacity)).inc()
        waiter = Waiter(stage, index, executor_id, time.monotonic(),
                        asyncio.get_running_loop().create_future())
        entry.waiters[index] = waiter
        entry.round_request.ready.append(index)
        QUEUED.inc()
        if entry.partial:
            self.routing.pending.set()
        self._kick.set()
        try:
            return await waiter.future
        except asyncio.CancelledError:
            self._abandon(entry, waiter)
            raise

    async def _check_owner(self, rid: str, executor_id: str) -> None:
        """_owned, reading the owner key alone (for a request this scheduler has loaded)."""
        self._owned(rid, executor_id, await self.store.owner(rid))

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

    async def renew(self, lease_id: str) -> float:
        """Extend the lease; return its TTL (s). StageRejected if it is malformed or gone."""
        lease = self.leases.get(_checked_lease(lease_id))
        self.check_active()
        if lease is None:
            raise _lease_gone(lease_id)
        lease.expires = time.time() + self.settings.lease_ttl_s
        await self.commit.recorded(self.store.w_lease(lease_id, lease.to_json()))
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
        lease = self.leases.pop(lease_id)
        if lease is None:
            return False
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
        writes = self.store.w_no_lease(lease_id)
        if undo:
            # let a retry of the stage pick any model again (the chosen one may be down)
            writes += self.store.w_no_choice(lease.request_id, lease.stage)
        self._publish_gauges()
        await self.commit.recorded(writes)
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
        leases = [lz.lease_id for lz in self.leases.of_request(rid)]
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
            rids = list({*self.queue, *self.leases.requests()})
            for rid, state in zip(rids, await self.store.states(rids), strict=True):
                if state == common_pb2.REQUEST_STATE_CANCELLED:
                    self.cancel(rid)
            subscribed.set()

        await self.store.follow_cancellations(lambda rid: self.cancel(rid.decode()), catch_up)

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
                await self.commit.flush()
            except LeadershipLost:
                self._lost()
                return
            except Exception:
                log.exception("round_failed")
                await asyncio.sleep(0.05)
                self._kick.set()

    def _round(self) -> None:
        """Place what fits now (placement.Round); take the leases, queue their writes and
        the grants for the commit."""
        now = time.monotonic()
        entries = [e for e in self.queue.values()
                   if e.waiters and not self.routing.held_back(e, now)]
        free = self._free()
        if not entries or not (free > 0).any():
            return
        self.rounds += 1
        ROUNDS.inc()
        t0 = time.perf_counter()
        placed = self.round.run(entries, free, self.leases.occupancy)
        ROUND_SECONDS.observe(time.perf_counter() - t0)
        placed_at = time.time()
        expires = placed_at + self.settings.lease_ttl_s
        for placement in placed:
            self._take(placement, placed_at, expires)
        if placed:
            self._publish_gauges()

    def _take(self, placement: Placement, placed_at: float, expires: float) -> None:
        """A placed stage's lease, recorded with its choice; its caller answered once Redis
        has them."""
        entry = placement.entry
        waiter = entry.waiters.pop(placement.stage)
        QUEUED.dec()
        model = self.pool.models[placement.model].name
        lease = Lease(uuid.uuid4().hex, placement.model, entry.request_id, waiter.stage,
                      waiter.executor_id, expires)
        waiter.lease = lease
        entry.choice_lease[waiter.stage] = lease.lease_id
        self.leases.add(lease)
        PLACED.labels(model).inc()
        if placement.escalated:
            ESCALATED.labels(model).inc()
        viable = len(entry.round_request.configs)
        self.commit.add(self.store.w_lease(lease.lease_id, lease.to_json())
                        + self.store.w_choice(entry.request_id, waiter.stage, model, viable))
        response = scheduler_pb2.AcquireStageResponse(
            model=model, lease_id=lease.lease_id,
            lease_ttl_ms=int(self.settings.lease_ttl_s * 1000),
            queued_ms=(time.monotonic() - waiter.enqueued) * 1000.0,
            viable_configurations=viable, placed_at=placed_at,
        )
        self.commit.then(functools.partial(self._grant, waiter.future, response,
                                           entry.request_id))
        if not entry.waiters:
            self._forget(entry)

    def _free(self) -> np.ndarray:
        """Free capacity per model; none on a model ejected for failing (health.py)."""
        free = np.maximum(self.capacity - self.leases.occupancy, 0).astype(np.int32)
        free[self.health.ejected(time.monotonic())] = 0
        free[self.deployment.unplaceable.gone] = 0
        return free

    async def _expiry_loop(self) -> None:
        period = max(0.05, self.settings.lease_ttl_s / 4)
        while True:
            await asyncio.sleep(period)
            try:
                for lease in self.leases.expired(time.time()):
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
        stored = await self.store.recorded_lease_ids()
        held = self.leases.held
        dropped = stored - held.keys()
        restored = held.keys() - stored
        if dropped or restored:
            log.warning("leases_resynced", dropped=len(dropped), restored=len(restored))
            for lid in dropped:
                self.commit.add(self.store.w_no_lease(lid))
            for lid in restored:
                self.commit.add(self.store.w_lease(lid, held[lid].to_json()))
            self._kick.set()

    def _publish_gauges(self) -> None:
        for gauge, occupied in zip(self._leased_gauges, self.leases.occupancy.tolist(), strict=True):
            gauge.set(occupied)

    def state(self) -> scheduler_pb2.GetSchedulerStateResponse:
        occupancy = self.leases.occupancy
        return scheduler_pb2.GetSchedulerStateResponse(
            queued_stages=sum(len(e.waiters) for e in self.queue.values()),
            leased={m.name: int(occupancy[i]) for i, m in enumerate(self.pool.models)},
            capacity={m.name: int(self.capacity[i]) for i, m in enumerate(self.pool.models)},
            rounds=self.rounds,
            round_impl=ROUND_IMPL,
            ejected_s=self.health.seconds_left(time.monotonic()),
            model_state=self.deployment.state,
        )

    # the pool while it serves (deployment.py) ------------------------------------------
    def _placeable_changed(self) -> None:
        """Models left or joined placement: every known request's C(r) again from its F(r)
        (placement.Unplaceable), then a round."""
        for entry in (*self.queue.values(), *self.known.values()):
            entry.renarrow()
        self._kick.set()

    def _grow(self, profile: ModelProfile) -> None:
        """Append a model to the pool; the others keep their index (leases name it)."""
        self.pool = dataclasses.replace(self.pool, models=(*self.pool.models, profile))
        self.model_ids[profile.name] = len(self.model_ids)
        self.capacity = np.append(self.capacity, profile.capacity).astype(np.int32)
        self.leases.grow()
        self.health.grow(profile.name)
        self.round.set_pool(self.pool)
        self.deployment.grow(profile)
        self._leased_gauges.append(LEASED.labels(profile.name))

    def _model(self, name: str) -> str:
        self.check_active()
        if name not in self.model_ids:
            raise StageRejected(grpc.StatusCode.NOT_FOUND, f"no model {quote(name)} in the "
                                f"pool ({', '.join(self.pool.names)})")
        return name

    async def unload_model(self, name: str, by: str) -> tuple[str, str]:
        """Drain `name` and unload it (deployment.py); refused if a registered workflow
        would be left with an LLM stage no serving model can take."""
        name = self._model(name)
        if self.deployment.state[name] not in (deployment.DRAINING, deployment.UNLOADED):
            left = {n for n, st in self.deployment.state.items()
                    if st == deployment.SERVING and n != name}
            for wf in await self.store.list_workflows():
                for stage in wf.llm_stages:
                    if name in stage.candidates and not left.intersection(stage.candidates):
                        raise StageRejected(
                            grpc.StatusCode.FAILED_PRECONDITION,
                            f"unloading {name} would leave stage {stage.name!r} of workflow "
                            f"{wf.id!r} no serving model ({', '.join(stage.candidates)}): "
                            "load or add one of them first")
        return name, await self.deployment.unload(name, by)

    async def load_model(self, name: str, by: str) -> tuple[str, str]:
        name = self._model(name)
        return name, await self.deployment.load(name, by)

    async def add_model(self, profile_json: str, by: str) -> tuple[str, str]:
        """Add a model to the pool (`profile_json`: one pool-file entry); (name, state)."""
        self.check_active()
        if len(profile_json) > MAX_PROFILE_BYTES:
            raise StageRejected(grpc.StatusCode.INVALID_ARGUMENT, f"profile_json is "
                                f"{len(profile_json)} bytes; at most {MAX_PROFILE_BYTES}")
        try:
            raw = json.loads(profile_json)
            profile = PoolSpec.from_mapping({"models": [raw]}).models[0]
        except (ValueError, PoolSpecError) as e:
            raise StageRejected(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"profile_json is not one pool-file model entry: {clip(str(e))}") from None
        bad = id_error("model name", profile.name)
        if bad:
            raise StageRejected(grpc.StatusCode.INVALID_ARGUMENT, bad)
        if profile.name in self.model_ids:
            raise StageRejected(grpc.StatusCode.ALREADY_EXISTS,
                                f"model {profile.name} is in the pool already (LoadModel loads it)")
        self._grow(profile)
        return profile.name, await self.deployment.add(profile, self.pool, by)

    async def pool_changes(self) -> list[scheduler_pb2.PoolChange]:
        rows = await self.store.pool_changes(POOL_CHANGES_SHOWN)
        return [scheduler_pb2.PoolChange(at=float(r.get("at", 0)), by=r.get("by", ""),
                                         action=r.get("action", ""), model=r.get("model", ""),
                                         state=r.get("state", ""), detail=r.get("detail", ""))
                for r in rows]


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


def _cancelled(rid: str) -> StageRejected:
    return StageRejected(grpc.StatusCode.FAILED_PRECONDITION,
                         f"request {rid} was cancelled: none of its stages runs any more")
