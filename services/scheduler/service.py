"""Scheduler: the FIFO meta-queue, each model's capacity, leases, and the scheduling round.

An executor's AcquireStage waits in the meta-queue until a round places its stage on a
model; the round runs whenever something changes (a stage arrives, a lease is released or
expires), over every queued request, and only ever places within free capacity
(capacity = profiled saturation batch x instances, minus leases held). A placement
records the chosen model (narrowing C(r)) and the lease in Redis before it is returned,
so a restarted scheduler reloads its leases and no choice is forgotten.

Failure modes: an executor that dies while holding a lease stops renewing it and the lease
expires after lease_ttl_s; a caller that gives up (deadline, cancel) leaves the queue, and
a lease granted to it in the same instant is released at once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
import uuid
from collections import OrderedDict

import grpc
import numpy as np
import structlog
from prometheus_client import Counter, Gauge, Histogram

from aragog.common.pool import PoolSpec
from aragog.common.settings import SchedulerSettings
from aragog.common.store import Store, decode_configs
from aragog.common.workflow import WorkflowDef, parse_workflow
from aragog.scheduler_ext import RoundRequest, WorkflowSpace, schedule_round
from aragog.v1 import scheduler_pb2, scheduler_pb2_grpc

log = structlog.get_logger("scheduler")

QUEUED = Gauge("aragog_scheduler_queued_stages", "Stages waiting in the meta-queue")
LEASED = Gauge("aragog_scheduler_leased", "Leases held per model", ["model"])
ROUNDS = Counter("aragog_scheduler_rounds_total", "Scheduling rounds run")
PLACED = Counter("aragog_scheduler_placements_total", "Stages placed", ["model"])
EXPIRED = Counter("aragog_scheduler_leases_expired_total", "Leases freed by expiry")
ROUND_SECONDS = Histogram(
    "aragog_scheduler_round_seconds", "Time of one round's computation",
    buckets=(1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 5e-2),
)


@dataclasses.dataclass
class Lease:
    lease_id: str
    model: int
    request_id: str
    stage: str
    executor_id: str
    expires: float

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))


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

    def renarrow(self) -> None:
        """C(r) = F(r) narrowed by every choice still standing."""
        space = self.round_request.space
        configs = self.admitted
        for stage, cand in self.chosen.items():
            configs = configs[(configs // space.strides[stage]) % space.radices[stage] == cand]
        self.round_request.configs = configs


@dataclasses.dataclass(frozen=True)
class CompiledWorkflow:
    workflow: WorkflowDef
    space: WorkflowSpace


class Scheduler:
    """The meta-queue and capacity; one instance per pool."""

    def __init__(self, settings: SchedulerSettings, store: Store, pool: PoolSpec):
        self.settings = settings
        self.store = store
        self.pool = pool
        self.model_ids = {m.name: i for i, m in enumerate(pool.models)}
        self.capacity = np.array([m.capacity for m in pool.models], dtype=np.int32)
        self.occupancy = np.zeros(len(pool.models), dtype=np.int32)
        curves = [m.throughput_curve() for m in pool.models]
        width = max(len(c) for c in curves) + 1
        self.curves = np.array([c + [c[-1]] * (width - len(c)) for c in curves], dtype=np.float64)
        self.queue: dict[str, Entry] = {}
        # requests seen recently but waiting for nothing now (least recently used first)
        self.known: OrderedDict[str, Entry] = OrderedDict()
        self.leases: dict[str, Lease] = {}
        self.rounds = 0
        self._kick = asyncio.Event()
        self._workflows: dict[bytes, CompiledWorkflow] = {}
        self._tasks: list[asyncio.Task[None]] = []

    # lifecycle ----------------------------------------------------------------------
    async def start(self) -> None:
        """Publish the pool, reload leases a previous scheduler left, start the loops."""
        await self.store.put_pool(self.pool)
        for lease_id, raw in (await self.store.r.hgetall(self.store.k.leases)).items():
            lease = Lease(**json.loads(raw))
            if lease.model < len(self.capacity):
                self.leases[lease_id.decode()] = lease
                self.occupancy[lease.model] += 1
        self._publish_gauges()
        log.info("scheduler_started", models=self.pool.names, capacity=self.capacity.tolist(),
                 reloaded_leases=len(self.leases))
        self._tasks = [asyncio.create_task(self._round_loop()), asyncio.create_task(self._expiry_loop())]

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for entry in list(self.queue.values()):
            for w in entry.waiters.values():
                if not w.future.done():
                    w.future.cancel()

    # the API ------------------------------------------------------------------------
    async def _compiled(self, wid: str) -> CompiledWorkflow | None:
        raw = await self.store.r.hget(self.store.k.workflows, wid)
        if raw is None:
            return None
        cw = self._workflows.get(raw)
        if cw is None:
            wf = parse_workflow(raw.decode())
            llm = wf.llm_stages
            depths = wf.depths()
            space = WorkflowSpace.from_candidates(
                [[self.model_ids[m] for m in s.candidates] for s in llm],
                [depths[s.name] for s in llm],
            )
            cw = CompiledWorkflow(wf, space)
            self._workflows[raw] = cw
        return cw

    async def _load_entry(self, rid: str) -> tuple[Entry | None, str]:
        """Build a queue entry from Redis: C(r) = F(r) narrowed by the models chosen so far."""
        k = self.store.k
        async with self.store.r.pipeline(transaction=False) as p:
            p.hget(k.req(rid), "workflow_id")
            p.get(k.f(rid))
            p.hgetall(k.chosen(rid))
            wid, f_raw, chosen = await p.execute()
        if wid is None or f_raw is None:
            return None, f"no admitted request {rid!r}"
        cw = await self._compiled(wid.decode())
        if cw is None:
            return None, f"workflow {wid.decode()!r} of request {rid!r} is not registered"
        space = cw.space
        admitted = decode_configs(f_raw, space.size)
        choices: dict[int, int] = {}
        for stage_raw, model_raw in chosen.items():
            try:
                s = cw.workflow.llm_index(stage_raw.decode())
                choices[s] = list(space.stage_models[s]).index(self.model_ids[model_raw.decode()])
            except (KeyError, ValueError):
                continue
        entry = Entry(rid, cw.workflow, admitted, choices,
                      RoundRequest(space=space, configs=admitted, ready=[]), {})
        entry.renarrow()
        return entry, ""

    def _forget(self, entry: Entry) -> None:
        """The request waits for nothing now: keep it warm among the recently known."""
        self.queue.pop(entry.request_id, None)
        self.known[entry.request_id] = entry
        self.known.move_to_end(entry.request_id)
        while len(self.known) > self.settings.request_cache_size:
            self.known.popitem(last=False)

    async def acquire(self, rid: str, stage: str, executor_id: str, context) -> scheduler_pb2.AcquireStageResponse:
        entry = self.queue.get(rid) or self.known.pop(rid, None)
        if entry is None:
            entry, err = await self._load_entry(rid)
            if entry is None:
                await context.abort(grpc.StatusCode.NOT_FOUND, err)
        entry = self.queue.setdefault(rid, entry)
        try:
            sdef = entry.workflow.stage(stage)
        except KeyError:
            sdef = None
        if sdef is None or sdef.kind != "llm":
            if not entry.waiters:
                self._forget(entry)
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"workflow {entry.workflow.id} has no LLM stage {stage!r} "
                f"(LLM stages: {', '.join(s.name for s in entry.workflow.llm_stages)})",
            )
        index = entry.workflow.llm_index(stage)
        if index in entry.waiters:
            await context.abort(
                grpc.StatusCode.ALREADY_EXISTS, f"stage {stage} of {rid} is already waiting"
            )
        if len(entry.round_request.configs) == 0:
            self._forget(entry)
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"request {rid} has no viable configuration left")
        waiter = Waiter(stage, index, executor_id, time.monotonic(),
                        asyncio.get_running_loop().create_future())
        entry.waiters[index] = waiter
        entry.round_request.ready.append(index)
        QUEUED.inc()
        self._kick.set()
        try:
            return await waiter.future
        except asyncio.CancelledError:
            self._abandon(entry, waiter)
            raise

    def _abandon(self, entry: Entry, waiter: Waiter) -> None:
        """The caller left: drop its wait, or give back a lease granted in the same instant."""
        if waiter.lease is not None:
            log.info("lease_abandoned", request_id=entry.request_id, stage=waiter.stage)
            asyncio.get_running_loop().create_task(self.release(waiter.lease.lease_id, False))
            return
        if entry.waiters.get(waiter.stage_index) is waiter:
            del entry.waiters[waiter.stage_index]
            entry.round_request.ready.remove(waiter.stage_index)
            QUEUED.dec()
            if not entry.waiters:
                self._forget(entry)

    async def renew(self, lease_id: str) -> float:
        lease = self.leases.get(lease_id)
        if lease is None:
            return -1.0
        lease.expires = time.time() + self.settings.lease_ttl_s
        await self.store.r.hset(self.store.k.leases, lease_id, lease.to_json())
        return self.settings.lease_ttl_s

    async def release(self, lease_id: str, success: bool) -> bool:
        lease = self.leases.pop(lease_id, None)
        if lease is None:
            return False
        self.occupancy[lease.model] -= 1
        if not success:
            entry = self.queue.get(lease.request_id) or self.known.get(lease.request_id)
            if entry is not None:
                entry.chosen.pop(entry.workflow.llm_index(lease.stage), None)
                entry.renarrow()
        k = self.store.k
        async with self.store.r.pipeline(transaction=True) as p:
            p.hdel(k.leases, lease_id)
            if not success:
                # let a retry of the stage pick any model again (the chosen one may be down)
                p.hdel(k.chosen(lease.request_id), lease.stage)
            await p.execute()
        self._publish_gauges()
        self._kick.set()
        return True

    # rounds -------------------------------------------------------------------------
    async def _round_loop(self) -> None:
        while True:
            await self._kick.wait()
            self._kick.clear()
            try:
                await self._round()
            except Exception:
                log.exception("round_failed")
                await asyncio.sleep(0.05)
                self._kick.set()

    async def _round(self) -> None:
        entries = [e for e in self.queue.values() if e.waiters]
        if not entries:
            return
        free = np.maximum(self.capacity - self.occupancy, 0).astype(np.int32)
        if not free.any():
            return
        t0 = time.perf_counter()
        result = schedule_round(
            [e.round_request for e in entries], free, self.occupancy.copy(), self.curves,
            self.settings.beam_width,
        )
        ROUND_SECONDS.observe(time.perf_counter() - t0)
        self.rounds += 1
        ROUNDS.inc()
        if not result.placements:
            return
        k = self.store.k
        granted: list[tuple[Waiter, scheduler_pb2.AcquireStageResponse]] = []
        expires = time.time() + self.settings.lease_ttl_s
        async with self.store.r.pipeline(transaction=True) as p:
            for pos, configs in result.configs.items():
                entries[pos].round_request.configs = configs
            for pl in result.placements:
                entry = entries[pl.request]
                waiter = entry.waiters.pop(pl.stage)
                entry.round_request.ready.remove(pl.stage)
                space = entry.round_request.space
                entry.chosen[pl.stage] = list(space.stage_models[pl.stage]).index(pl.model)
                QUEUED.dec()
                model = self.pool.models[pl.model].name
                lease = Lease(uuid.uuid4().hex, pl.model, entry.request_id, waiter.stage,
                              waiter.executor_id, expires)
                waiter.lease = lease
                self.leases[lease.lease_id] = lease
                self.occupancy[pl.model] += 1
                PLACED.labels(model).inc()
                viable = len(entry.round_request.configs)
                p.hset(k.leases, lease.lease_id, lease.to_json())
                p.hset(k.chosen(entry.request_id), waiter.stage, model)
                p.hset(k.req(entry.request_id), "viable", viable)
                granted.append((waiter, scheduler_pb2.AcquireStageResponse(
                    model=model, lease_id=lease.lease_id,
                    lease_ttl_ms=int(self.settings.lease_ttl_s * 1000),
                    queued_ms=(time.monotonic() - waiter.enqueued) * 1000.0,
                    viable_configurations=viable,
                )))
                if not entry.waiters:
                    self._forget(entry)
            self._publish_gauges()
            await p.execute()
        for waiter, response in granted:
            if not waiter.future.done():
                waiter.future.set_result(response)

    async def _expiry_loop(self) -> None:
        period = max(0.05, self.settings.lease_ttl_s / 4)
        while True:
            await asyncio.sleep(period)
            now = time.time()
            for lease in [lz for lz in self.leases.values() if lz.expires < now]:
                log.warning("lease_expired", request_id=lease.request_id, stage=lease.stage,
                            executor=lease.executor_id)
                EXPIRED.inc()
                await self.release(lease.lease_id, False)

    def _publish_gauges(self) -> None:
        for i, m in enumerate(self.pool.models):
            LEASED.labels(m.name).set(int(self.occupancy[i]))

    def state(self) -> scheduler_pb2.GetSchedulerStateResponse:
        return scheduler_pb2.GetSchedulerStateResponse(
            queued_stages=sum(len(e.waiters) for e in self.queue.values()),
            leased={m.name: int(self.occupancy[i]) for i, m in enumerate(self.pool.models)},
            capacity={m.name: int(self.capacity[i]) for i, m in enumerate(self.pool.models)},
            rounds=self.rounds,
            round_impl=schedule_round.__module__,
        )


class SchedulerServicer(scheduler_pb2_grpc.SchedulerServiceServicer):
    def __init__(self, scheduler: Scheduler):
        self.s = scheduler

    async def AcquireStage(self, request, context):  # noqa: N802
        if not request.request_id or not request.stage:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "request_id and stage are required")
        structlog.contextvars.bind_contextvars(request_id=request.request_id, stage=request.stage)
        return await self.s.acquire(request.request_id, request.stage, request.executor_id, context)

    async def RenewLease(self, request, context):  # noqa: N802
        ttl = await self.s.renew(request.lease_id)
        if ttl < 0:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no lease {request.lease_id!r} (expired or released)")
        return scheduler_pb2.RenewLeaseResponse(lease_ttl_ms=int(ttl * 1000))

    async def ReleaseStage(self, request, context):  # noqa: N802
        if not await self.s.release(request.lease_id, request.success):
            log.info("release_unknown_lease", lease_id=request.lease_id)
        return scheduler_pb2.ReleaseStageResponse()

    async def GetSchedulerState(self, request, context):  # noqa: N802
        return self.s.state()
