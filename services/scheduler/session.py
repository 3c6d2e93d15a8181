"""StageSession: one executor's stage traffic over one stream, in batches.

A unary call costs a Python gRPC server ~0.35 ms of CPU, whatever it does, which caps a
scheduler at ~2,700 calls/s: fewer than the ~2 calls a stage needs at the rates Aragog
targets. On a session, ops arrive in batches (whatever the executor queued since its last
message) and replies leave in batches (whatever became ready since the last write), so that
cost is paid per batch.

Each op runs as the unary call of the same name would (same checks, same errors, as a
StageError with the status code); an op that fails for another reason (Redis unreachable
for longer than its client's retries) is answered UNAVAILABLE, which the executor retries,
never left without a reply until its deadline. When the stream ends, waiting acquires are
withdrawn; leases already granted stay until released or expired, as with unary calls.
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import structlog

from aragog.common.bounds import clip
from aragog.scheduler.service import Scheduler, StageRejected
from aragog.v1 import scheduler_pb2

log = structlog.get_logger("scheduler")
CANCELLED = grpc.StatusCode.CANCELLED.value[0]
UNAVAILABLE = grpc.StatusCode.UNAVAILABLE.value[0]


class StageSession:
    def __init__(self, scheduler: Scheduler, context: grpc.aio.ServicerContext):
        self.s = scheduler
        self.context = context
        self.ops: dict[int, asyncio.Task[None]] = {}  # ticket -> running op
        self.replies: list[scheduler_pb2.StageReply] = []
        self.ready = asyncio.Event()
        self.closing = False  # no more replies will come: the writer flushes and stops

    async def run(self) -> None:
        """Read ops and write replies until the executor closes the stream or goes away."""
        writer = asyncio.create_task(self._write())
        try:
            while True:
                msg = await self.context.read()
                if msg is grpc.aio.EOF:
                    break
                for op in msg.ops:
                    self._start(op)
            if self.ops:  # half-closed: finish what was asked, then end the stream
                await asyncio.gather(*self.ops.values(), return_exceptions=True)
        finally:
            for task in list(self.ops.values()):
                task.cancel()  # an acquire still waiting leaves the queue
            if self.ops:
                await asyncio.gather(*self.ops.values(), return_exceptions=True)
            # Let the writer send what is left and stop. Cancelling it in the middle of a
            # write left the call open, so the caller saw neither its replies nor the end
            # of the stream until its deadline.
            self.closing = True
            self.ready.set()
            if self.context.done():
                writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)
    def _start(self, op: scheduler_pb2.StageOp) -> None:
        kind = op.WhichOneof("op")
        if kind == "cancel":
            task = self.ops.get(op.cancel.acquire_ticket)
            if task is not None:
                task.cancel()
            return
        if kind is None:
            self._reply(op.ticket, error=scheduler_pb2.StageError(
                code=grpc.StatusCode.INVALID_ARGUMENT.value[0], message="StageOp without an op"))
            return
        task = asyncio.create_task(self._run_op(op, kind))
        self.ops[op.ticket] = task
        task.add_done_callback(lambda _t, ticket=op.ticket: self.ops.pop(ticket, None))

    async def _run_op(self, op: scheduler_pb2.StageOp, kind: str) -> None:
        try:
            if kind == "acquire":
                a = op.acquire
                self._reply(op.ticket, granted=await self.s.acquire(
                    a.request_id, a.stage, a.executor_id, a.traceparent))
            elif kind == "release":
                await self.s.release_stage(op.release.lease_id, op.release.success,
                                           op.release.model_failed)
                self._reply(op.ticket, released=scheduler_pb2.ReleaseStageResponse())
            else:
                ttl = await self.s.renew(op.renew.lease_id)
                self._reply(op.ticket, renewed=scheduler_pb2.RenewLeaseResponse(
                    lease_ttl_ms=int(ttl * 1000)))
        except StageRejected as e:
            self._reply(op.ticket, error=scheduler_pb2.StageError(code=e.code.value[0], message=e.message))
        except asyncio.CancelledError:
            self._reply(op.ticket, error=scheduler_pb2.StageError(code=CANCELLED, message="cancelled"))
            raise
        except Exception as e:  # Redis away longer than its client retries: the op may be retried
            log.exception("stage_op_failed", op=kind)
            message = clip(f"scheduler could not {kind}: {type(e).__name__}: {e}")
            error = scheduler_pb2.StageError(code=UNAVAILABLE, message=message)
            self._reply(op.ticket, error=error)

    def _reply(self, ticket: int, **result: Any) -> None:
        self.replies.append(scheduler_pb2.StageReply(ticket=ticket, **result))
        self.ready.set()

    async def _write(self) -> None:
        while True:
            await self.ready.wait()
            self.ready.clear()
            await self._flush()
            if self.closing and not self.replies:
                return

    async def _flush(self) -> None:
        batch, self.replies = self.replies, []
        if batch:
            await self.context.write(scheduler_pb2.StageSessionResponse(replies=batch))
