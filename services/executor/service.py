"""Executor: takes admitted requests from the Redis work stream and runs them.

Work arrives through the stream's consumer group. A request is owned by one executor at a
time through a heartbeat-renewed key; a live executor also keeps re-claiming its pending
stream entries so they never look idle. When an executor dies, its entries go idle and
another executor claims them (XAUTOCLAIM) and resumes the requests from Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time

import grpc
import structlog
from prometheus_client import Counter, Gauge, Histogram
from redis.exceptions import ResponseError

from aragog.common import tracing
from aragog.common.bounds import id_error
from aragog.common.settings import ExecutorSettings
from aragog.common.store import REDIS_AWAY, TERMINAL, Store
from aragog.executor.model_client import ModelClient
from aragog.executor.scheduler_client import SchedulerClient
from aragog.executor.runner import RequestEnded, RequestRunner, stage_started_event
from aragog.v1 import common_pb2, executor_pb2, executor_pb2_grpc

log = structlog.get_logger("executor")
CLAIM_BATCH = 100  # pending entries looked at per XAUTOCLAIM call

RUNNING = Gauge("aragog_executor_running_requests", "Requests this executor runs now")
INFLIGHT = Gauge("aragog_executor_inflight_stages", "Stages in flight on each model", ["model"])
FINISHED = Counter("aragog_executor_requests_total", "Requests finished", ["outcome"])
STAGE_SECONDS = Histogram("aragog_executor_stage_seconds", "Model call time", ["model"])
QUEUE_SECONDS = Histogram(
    "aragog_executor_queue_wait_seconds", "Wait before the scheduler placed a stage", ["model"],
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
REQUEST_SECONDS = Histogram(
    "aragog_request_seconds", "End-to-end request latency, admission to the final stage",
    ["workflow", "policy", "outcome"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 60, 120, 300, 600))


class Executor:
    def __init__(self, settings: ExecutorSettings, store: Store,
                 channels: grpc.aio.Channel | list[grpc.aio.Channel]):
        self.settings = settings
        self.store = store
        # the id names a Redis key (its in-flight counts): the one id rule applies
        self.id = settings.executor_id or f"{socket.gethostname()[:48]}-{os.getpid()}"
        bad_id = id_error("executor id (ARAGOG_EXECUTOR_ID)", self.id)
        if bad_id:
            raise ValueError(bad_id)
        self.scheduler = SchedulerClient(channels, self.id)
        self.models = ModelClient(settings.triton_url)
        self.running: dict[str, asyncio.Task[None]] = {}
        self.entries: dict[str, bytes] = {}  # request id -> stream entry id
        self._inflight: dict[str, int] = {}
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._ttl_ms = int(settings.claim_idle_s * 1000)

    # lifecycle ----------------------------------------------------------------------
    async def start(self) -> None:
        await self.store.ensure_work_group()
        await self.store.clear_inflight(self.id)
        self._tasks = [asyncio.create_task(self._consume()), asyncio.create_task(self._heartbeat())]
        log.info("executor_started", executor=self.id, triton=self.settings.triton_url)

    async def drain(self) -> None:
        """Stop taking work, let running requests finish; hand back the rest (left pending)."""
        self._stopping.set()
        if self.running:
            log.info("draining", running=len(self.running))
            await asyncio.wait(list(self.running.values()), timeout=self.settings.shutdown_grace_s * 0.8)
        for rid, task in list(self.running.items()):
            log.warning("handing_back", request_id=rid)
            task.cancel()
        if self.running:
            await asyncio.gather(*self.running.values(), return_exceptions=True)
        for t in self._tasks:
            t.cancel()
        await self.store.clear_inflight(self.id)
        await self.scheduler.close()
        await self.models.close()

    # the work stream ----------------------------------------------------------------
    async def _consume(self) -> None:
        next_claim = 0.0
        cursor = b"0-0"
        while not self._stopping.is_set():
            try:
                slots = self.settings.max_concurrent_requests - len(self.running)
                if slots <= 0:
                    await asyncio.sleep(0.01)
                    continue
                claim_due = time.monotonic() >= next_claim
                if claim_due and await self.store.uptime_s() < self.settings.claim_idle_s:
                    # Redis came back from a restart moments ago: owner keys and entries' idle
                    # times lapsed while it was away; live executors renew theirs first.
                    next_claim = time.monotonic() + self.settings.claim_idle_s / 2
                if time.monotonic() >= next_claim:
                    # Walk the whole pending list across calls (the cursor), so entries of live
                    # executors at its head cannot hide a dead one's further down.
                    cursor, claimed, deleted = await self.store.claim_idle_work(
                        self.id, int(self.settings.claim_idle_s * 1000), cursor, CLAIM_BATCH)
                    if cursor == b"0-0":
                        next_claim = time.monotonic() + self.settings.claim_idle_s / 2
                    for entry_id, rid in claimed:
                        log.info("claimed_idle_work", request_id=rid)
                        self._take(entry_id, rid)
                    if deleted:
                        log.error("work_entries_deleted_while_pending", entries=deleted)
                    continue
                for entry_id, rid in await self.store.read_work(self.id, slots, 500):
                    self._take(entry_id, rid)
            except asyncio.CancelledError:
                raise
            except ResponseError as e:
                if "NOGROUP" in str(e):  # Redis restarted empty: recreate the group
                    log.warning("work_group_missing_recreating")
                    await self.store.ensure_work_group()
                else:
                    log.exception("consume_error")
                    await asyncio.sleep(0.5)
            except Exception:
                log.exception("consume_error")
                await asyncio.sleep(0.5)

    def _take(self, entry_id: bytes | None, rid: str) -> asyncio.Task[None]:
        """Run a request in its own task (entry_id: its work-stream entry, if it came from there)."""
        if rid in self.running:
            return self.running[rid]
        if entry_id is not None:
            self.entries[rid] = entry_id
        task = asyncio.create_task(self._run_entry(rid, entry_id))
        self.running[rid] = task
        RUNNING.set(len(self.running))
        task.add_done_callback(lambda _t, rid=rid: self._done(rid))
        return task

    def _done(self, rid: str) -> None:
        self.running.pop(rid, None)
        self.entries.pop(rid, None)
        RUNNING.set(len(self.running))

    async def _run_entry(self, rid: str, entry_id: bytes | None) -> None:
        structlog.contextvars.bind_contextvars(request_id=rid)
        try:
            await self._run_owned(rid, entry_id)
        except REDIS_AWAY:
            # Redis stayed away through the client's retries (a slow restart): hand the
            # request back rather than fail it; its entry stays pending, and once Redis is
            # back an executor claims it and resumes from its last recorded stage.
            log.warning("redis_away_request_handed_back")

    async def _run_owned(self, rid: str, entry_id: bytes | None) -> None:
        state = await self.store.state(rid)
        if state is None or state in TERMINAL:
            if entry_id is not None:
                await self._retire(entry_id, rid)
            return
        if not await self.store.claim_owner(rid, self.id, self._ttl_ms):
            return  # a live executor runs it; the entry stays pending for whoever finishes
        try:
            await self.run_request(rid)
            if entry_id is not None:
                await self._retire(entry_id, rid)
        finally:
            with contextlib.suppress(*REDIS_AWAY):
                await self.store.drop_owner(rid, self.id)

    async def _retire(self, entry_id: bytes, rid: str) -> None:
        """The request ended (its end dropped the entry already) or its record is gone: make
        sure the entry is gone (the stream holds only unfinished work, never trimmed)."""
        retired = await self.store.retire(entry_id, rid)
        if retired > 0:
            log.info("work_entry_retired_without_its_request")
        elif retired < 0:
            log.warning("request_end_lost_entry_kept")  # claimed once idle, and run again

    async def _heartbeat(self) -> None:
        """Keep ownership and stream entries fresh, and the in-flight hash alive and exact.

        Everything here is rewritten whole, not incremented, so it also restores what a
        Redis restart lost or let lapse (owner keys, the in-flight counts)."""
        period = self.settings.claim_idle_s / 3
        while True:
            await asyncio.sleep(period)
            try:
                running = list(self.running)
                owned = await self.store.heartbeat(
                    self.id, running, list(self.entries.values()), dict(self._inflight),
                    self._ttl_ms, int(self.settings.claim_idle_s * 2) + 1)
                for rid, mine in zip(running, owned, strict=True):
                    if not mine:
                        log.error("request_owned_by_another_executor", request_id=rid)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("heartbeat_error")

    # running one request ------------------------------------------------------------
    async def run_request(self, rid: str) -> None:
        fields = await self.store.request_fields(rid)
        wf = await self.store.get_workflow(fields.get("workflow_id", ""))
        if wf is None:
            await self._finish(rid, False, "", f"workflow {fields.get('workflow_id')!r} is not registered")
            return
        if not await self.store.mark_running(rid):
            log.info("request_ended_before_it_ran")
            return
        # below the router's SubmitRequest span, which it stored with the request
        with tracing.tracer.start_as_current_span(
                "request", context=tracing.parent(fields.get("traceparent", "")),
                attributes={"aragog.request_id": rid, "aragog.workflow": wf.id}):
            ok, answer, error = await RequestRunner(self, rid, wf, fields).run()
            await self._finish(rid, ok, answer, error)

    async def _finish(self, rid: str, ok: bool, answer: str, error: str) -> None:
        state = common_pb2.REQUEST_STATE_SUCCEEDED if ok else common_pb2.REQUEST_STATE_FAILED
        status = await self.store.finish(rid, state, answer, error, self.settings.request_ttl_s)
        if status is None:
            log.info("request_ended_elsewhere")  # its record is gone, or it ended already
            return
        FINISHED.labels("succeeded" if ok else "failed").inc()
        if status.created_at:
            REQUEST_SECONDS.labels(status.workflow_id, status.policy.partition(":")[0],
                                   "succeeded" if ok else "failed").observe(
                max(0.0, status.finished_at - status.created_at))
        log.info("request_finished", ok=ok, error=error or None)

    async def record_stage(self, rid: str, result: common_pb2.StageResult) -> None:
        """Record a finished stage; RequestEnded if the request ended meanwhile (the result
        is dropped and the runner stops)."""
        if not await self.store.record_stage(rid, result):
            raise RequestEnded(rid)
        if result.model:
            STAGE_SECONDS.labels(result.model).observe(result.service_ms / 1000.0)
            QUEUE_SECONDS.labels(result.model).observe(result.schedule_ms / 1000.0)

    async def stage_started(self, rid: str, stage: str, model: str, delta: int) -> None:
        """Count the stage in flight on `model` and announce it, in one round trip (no
        announcement for a request whose record is gone: a crash of Redis lost it)."""
        await self.store.stage_started(rid, self.id, model, self._count_inflight(model, delta),
                                       stage_started_event(rid, stage, model, self.id))

    async def inflight(self, model: str, delta: int) -> None:
        await self.store.set_inflight(self.id, model, self._count_inflight(model, delta))

    def _count_inflight(self, model: str, delta: int) -> int:
        """The new count of stages in flight on `model`. Redis gets the count itself, not the
        delta: a write retried after a lost reply, or lost in a Redis restart, cannot skew it."""
        n = self._inflight[model] = self._inflight.get(model, 0) + delta
        INFLIGHT.labels(model).set(n)
        return n

    async def wait_terminal(self, rid: str, timeout_s: float) -> common_pb2.RequestStatus | None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            status = await self.store.status(rid)
            if status is None or status.state in TERMINAL:
                return status
            await asyncio.sleep(0.05)
        return await self.store.status(rid)


class ExecutorServicer(executor_pb2_grpc.ExecutorServiceServicer):
    def __init__(self, executor: Executor):
        self.ex = executor

    async def RunRequest(self, request, context):  # noqa: N802
        rid = request.request_id
        bad_id = id_error("request_id", rid)
        if bad_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, bad_id)
        status = await self.ex.store.status(rid)
        if status is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no admitted request {rid!r}")
        if status.state not in TERMINAL:
            await self.ex._take(None, rid)  # runs it unless another executor owns it
            status = await self.ex.wait_terminal(rid, self.ex.settings.acquire_timeout_s)
        return executor_pb2.RunRequestResponse(status=status)
