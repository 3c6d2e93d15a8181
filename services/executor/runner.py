"""Runs one request's DAG: for each ready stage ask the scheduler, call the model, record.

Stages whose dependencies are done run concurrently. A finished stage is recorded in Redis
right after its lease is released, so an executor that takes over a request after a crash
resumes from the last recorded stage: recorded stages never run again, and a stage that
finished but was not yet recorded runs once more (at-least-once per stage, never lost).

A request cancelled while it runs stops at its next stage boundary: the scheduler refuses
its stages (FAILED_PRECONDITION, not retried) and the record of a stage that was in flight
is refused (RequestEnded), so that stage's result is dropped and nothing new starts.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import grpc
import structlog

from aragog.common import tracing
from aragog.common.rpc import RpcError
from aragog.common.store import REDIS_AWAY
from aragog.common.workflow import StageDef, WorkflowDef
from aragog.executor.model_client import ModelCallError
from aragog.v1 import common_pb2, router_pb2, scheduler_pb2

if TYPE_CHECKING:
    from aragog.executor.service import Executor

log = structlog.get_logger("executor")


class StageFailed(Exception):
    """A stage failed after its retries; the request fails with this message."""


class RequestEnded(Exception):
    """The request ended elsewhere, or its record is gone from Redis: stop, write nothing."""


class RequestRunner:
    def __init__(self, ex: Executor, rid: str, workflow: WorkflowDef, fields: dict[str, str]):
        self.ex = ex
        self.rid = rid
        self.wf = workflow
        self.input = fields.get("input", "")

    async def run(self) -> tuple[bool, str, str]:
        """Run to the end; return (succeeded, answer, error)."""
        results = await self.ex.store.stage_results(self.rid)
        outputs = {name: r.output for name, r in results.items()}
        running: dict[str, asyncio.Task[str]] = {}
        try:
            while self.wf.sink.name not in outputs:
                for st in self.wf.stages:
                    if st.name in outputs or st.name in running:
                        continue
                    if all(d in outputs for d in st.depends_on):
                        running[st.name] = asyncio.create_task(self._stage(st, outputs))
                if not running:
                    return False, "", "workflow has stages that can never run"
                done, _ = await asyncio.wait(running.values(), return_when=asyncio.FIRST_COMPLETED)
                for name, task in list(running.items()):
                    if task in done:
                        del running[name]
                        outputs[name] = task.result()
        except StageFailed as e:
            return False, "", str(e)
        except RequestEnded:
            return False, "", "the request ended elsewhere"  # not recorded: it has ended
        except REDIS_AWAY:
            raise  # not the request's fault: it is handed back and resumed (Executor._run_entry)
        except Exception as e:  # a bug or bad data: fail the request rather than retry it forever
            log.exception("stage_crashed")
            return False, "", f"stage crashed: {type(e).__name__}: {e}"
        finally:
            for task in running.values():
                task.cancel()
            if running:
                await asyncio.gather(*running.values(), return_exceptions=True)
        return True, outputs[self.wf.sink.name], ""

    def _prompt(self, st: StageDef, outputs: dict[str, str]) -> str:
        return st.render(self.input, outputs)

    async def _stage(self, st: StageDef, outputs: dict[str, str]) -> str:
        prompt = self._prompt(st, outputs)
        structlog.contextvars.bind_contextvars(request_id=self.rid, stage=st.name)
        if st.kind == "tool":
            # Built-in tool: the rendered template is the tool's output (deterministic).
            result = common_pb2.StageResult(stage=st.name, output=prompt, executor_id=self.ex.id)
            await self.ex.record_stage(self.rid, result)
            return prompt
        last_error = ""
        for attempt in range(1, self.ex.settings.stage_retries + 1):
            try:
                return await self._llm_stage(st, prompt)
            except (ModelCallError, RpcError) as e:
                last_error = str(e)
                if isinstance(e, RpcError) and e.code == grpc.StatusCode.FAILED_PRECONDITION:
                    # the request was cancelled, or has no viable configuration: no retry helps
                    raise StageFailed(f"stage {st.name} cannot run: {last_error}") from None
                log.warning("stage_attempt_failed", attempt=attempt, error=last_error)
                await asyncio.sleep(min(1.0, 0.1 * 2**attempt))
        raise StageFailed(f"stage {st.name} failed after {self.ex.settings.stage_retries} attempts: {last_error}")

    async def _acquire(self, stage: str) -> tuple[scheduler_pb2.AcquireStageResponse, float]:
        """Wait for a placement; ride out a scheduler restart (UNAVAILABLE) with backoff."""
        s = self.ex.settings
        t0 = time.perf_counter()
        deadline = time.monotonic() + s.acquire_timeout_s
        delay = 0.05
        while True:
            remaining = deadline - time.monotonic()
            try:
                resp = await self.ex.scheduler.acquire(self.rid, stage, timeout=max(0.1, remaining))
                return resp, (time.perf_counter() - t0) * 1000.0
            except RpcError as e:
                if not e.retryable or time.monotonic() + delay >= deadline:
                    raise
                log.warning("acquire_retry", error=str(e))
                await asyncio.sleep(delay)
                delay = min(1.0, delay * 2)

    async def _llm_stage(self, st: StageDef, prompt: str) -> str:
        with tracing.tracer.start_as_current_span(
                f"stage {st.name}", attributes={"aragog.stage": st.name}) as span:
            return await self._traced_llm_stage(st, prompt, span)

    async def _traced_llm_stage(self, st: StageDef, prompt: str, span) -> str:
        s = self.ex.settings
        with tracing.tracer.start_as_current_span("AcquireStage"):
            grant, schedule_ms = await self._acquire(st.name)
        span.set_attribute("aragog.model", grant.model)
        success = model_failed = False
        try:
            renew = asyncio.create_task(self._renew(grant))
            started = False
            t0 = time.perf_counter()
            try:
                await self.ex.stage_started(self.rid, st.name, grant.model, +1)
                started = True
                try:
                    with tracing.tracer.start_as_current_span(
                            "Triton infer", kind=tracing.trace.SpanKind.CLIENT,
                            attributes={"aragog.model": grant.model}):
                        call_started_at = time.time()
                        output = await self.ex.models.generate(
                            grant.model, st.name, prompt, st.output_tokens, s.stage_timeout_s,
                            self.rid)
                        call_ended_at = time.time()
                except ModelCallError:
                    model_failed = True  # the scheduler's health of the model counts it
                    raise
            finally:
                renew.cancel()
                if started:
                    await self.ex.inflight(grant.model, -1)
            service_ms = (time.perf_counter() - t0) * 1000.0
            result = common_pb2.StageResult(
                stage=st.name, model=grant.model, output=output, schedule_ms=schedule_ms,
                service_ms=service_ms, executor_id=self.ex.id,
                call_started_at=call_started_at, call_ended_at=call_ended_at,
                placed_at=grant.placed_at,
            )
            success = True
        finally:
            t1 = time.perf_counter()
            await self._release(grant.lease_id, success, model_failed)
            release_ms = (time.perf_counter() - t1) * 1000.0
        result.release_ms = release_ms
        await self.ex.record_stage(self.rid, result)
        return output

    async def _release(self, lease_id: str, success: bool, model_failed: bool) -> None:
        """Give the lease back; ride out a scheduler restart (UNAVAILABLE) with backoff, since
        the next scheduler reloads the lease from Redis and would otherwise hold its
        capacity until it expires. Past rpc_timeout_s the lease is left to expire."""
        timeout = self.ex.settings.rpc_timeout_s
        deadline = time.monotonic() + timeout
        delay = 0.05
        while True:
            try:
                await self.ex.scheduler.release(lease_id, success, timeout=timeout,
                                                model_failed=model_failed)
                return
            except RpcError as e:
                if not e.retryable or time.monotonic() + delay >= deadline:
                    log.warning("release_failed", error=str(e))  # the lease expires on its own
                    return
                await asyncio.sleep(delay)
                delay = min(1.0, delay * 2)

    async def _renew(self, grant: scheduler_pb2.AcquireStageResponse) -> None:
        period = max(0.05, grant.lease_ttl_ms / 3000.0)
        while True:
            await asyncio.sleep(period)
            try:
                await self.ex.scheduler.renew(grant.lease_id, timeout=self.ex.settings.rpc_timeout_s)
            except RpcError as e:
                log.warning("renew_failed", error=str(e))


def stage_started_event(rid: str, stage: str, model: str, executor_id: str) -> bytes:
    return router_pb2.SubmitRequestResponse(
        request_id=rid,
        stage_started=router_pb2.StageStarted(stage=stage, model=model, executor_id=executor_id),
    ).SerializeToString()
