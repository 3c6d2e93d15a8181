"""The executor's door to the scheduler: every stage op over one StageSession stream.

Ops queued while a message is being written go out together in the next one, so under load
one gRPC message carries many acquires and releases (see aragog/scheduler/session.py for
why). Each op has its own deadline, enforced here; an acquire that times out or is cancelled
is withdrawn from the scheduler's queue, and a grant that arrives after its caller left is
released at once.

When the stream breaks (scheduler restarting), every op in flight fails with UNAVAILABLE
(RpcError, retryable) and the next op opens a new stream; the scheduler has dropped the
old stream's waiting acquires, so retrying them is safe. Each stream has its own outbox: a
dead stream's request iterator may still be waiting for ops, and must never take the new
stream's (they would be written to a dead call and never answered).
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import grpc
import structlog

from aragog.common import tracing
from aragog.common.rpc import RpcError
from aragog.v1 import scheduler_pb2, scheduler_pb2_grpc

log = structlog.get_logger("executor")


class _Outbox:
    """The ops waiting to go out on one stream."""

    def __init__(self) -> None:
        self.ops: list[scheduler_pb2.StageOp] = []
        self.wake = asyncio.Event()


class SchedulerClient:
    """`channels`: one per scheduler address. A stream that breaks or is refused (a standby
    answers UNAVAILABLE) makes the next stream go to the next address, so the executor
    finds the active scheduler after a takeover."""

    def __init__(self, channels: grpc.aio.Channel | list[grpc.aio.Channel], executor_id: str):
        channels = channels if isinstance(channels, list) else [channels]
        self.stubs = [scheduler_pb2_grpc.SchedulerServiceStub(ch) for ch in channels]
        self._at = 0  # the address the current stream goes to
        self.executor_id = executor_id
        self._tickets = itertools.count(1)
        self._pending: dict[int, asyncio.Future[scheduler_pb2.StageReply]] = {}
        self._outbox = _Outbox()
        self._call: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._closed = False

    # the ops --------------------------------------------------------------------------
    async def acquire(self, rid: str, stage: str, timeout: float) -> scheduler_pb2.AcquireStageResponse:
        """Wait until the scheduler places the stage; the grant carries the model and lease."""
        op = scheduler_pb2.StageOp(acquire=scheduler_pb2.AcquireStageRequest(
            request_id=rid, stage=stage, executor_id=self.executor_id,
            traceparent=tracing.traceparent()))
        reply = await self._op("AcquireStage", op, timeout, cancellable=True)
        return reply.granted

    async def release(self, lease_id: str, success: bool, timeout: float,
                      model_failed: bool = False) -> bool:
        """Free the lease; False if the scheduler no longer held it (NOT_FOUND).

        A lease this executor did not renew in time expired: the scheduler freed its capacity
        and undid its choice already. So did a lease of a request cancelled meanwhile. That is
        no failure of the stage, which ran.
        """
        op = scheduler_pb2.StageOp(release=scheduler_pb2.ReleaseStageRequest(
            lease_id=lease_id, success=success, model_failed=model_failed))
        try:
            await self._op("ReleaseStage", op, timeout)
        except RpcError as e:
            if e.code != grpc.StatusCode.NOT_FOUND:
                raise
            log.warning("released_lease_was_gone", lease_id=lease_id)
            return False
        return True

    async def renew(self, lease_id: str, timeout: float) -> scheduler_pb2.RenewLeaseResponse:
        op = scheduler_pb2.StageOp(renew=scheduler_pb2.RenewLeaseRequest(lease_id=lease_id))
        return (await self._op("RenewLease", op, timeout)).renewed

    async def close(self) -> None:
        self._closed = True
        self._fail_all(grpc.StatusCode.CANCELLED, "executor stopping")
        if self._call is not None:
            self._call.cancel()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)

    # machinery ------------------------------------------------------------------------
    async def _op(self, method: str, op: scheduler_pb2.StageOp, timeout: float,
                  cancellable: bool = False) -> scheduler_pb2.StageReply:
        if self._closed:
            raise RpcError(method, grpc.StatusCode.CANCELLED, "executor stopping")
        self._ensure_stream()
        op.ticket = next(self._tickets)
        future: asyncio.Future[scheduler_pb2.StageReply] = asyncio.get_running_loop().create_future()
        self._pending[op.ticket] = future
        self._send(op)
        try:
            reply = await asyncio.wait_for(asyncio.shield(future), timeout)
        except (TimeoutError, asyncio.CancelledError) as e:
            if cancellable and self._pending.pop(op.ticket, None) is not None:
                self._send(scheduler_pb2.StageOp(
                    cancel=scheduler_pb2.CancelAcquire(acquire_ticket=op.ticket)))
                if future.done() and not future.cancelled() and future.result().HasField("granted"):
                    self._release_orphan(future.result())
            if isinstance(e, TimeoutError):
                raise RpcError(method, grpc.StatusCode.DEADLINE_EXCEEDED,
                               f"no reply within {timeout:.1f}s") from None
            raise
        finally:
            self._pending.pop(op.ticket, None)
        if reply.HasField("error"):
            raise RpcError(method, status_code(reply.error.code), reply.error.message)
        return reply

    def _send(self, op: scheduler_pb2.StageOp) -> None:
        self._outbox.ops.append(op)
        self._outbox.wake.set()

    def _release_orphan(self, reply: scheduler_pb2.StageReply) -> None:
        """A grant whose caller left: give the capacity back (the stage did not run)."""
        self._send(scheduler_pb2.StageOp(ticket=next(self._tickets), release=scheduler_pb2.ReleaseStageRequest(
            lease_id=reply.granted.lease_id, success=False)))

    def _ensure_stream(self) -> None:
        if self._reader is None or self._reader.done():
            if self._reader is not None:  # the last stream broke or was refused: next address
                self._at = (self._at + 1) % len(self.stubs)
            # anything queued for a dead stream already failed; its iterator keeps its box
            self._outbox = _Outbox()
            self._call = self.stubs[self._at].StageSession(self._requests(self._outbox))
            self._reader = asyncio.create_task(self._read(self._call))

    @staticmethod
    async def _requests(box: _Outbox):  # type: ignore[no-untyped-def]
        while True:
            await box.wake.wait()
            box.wake.clear()
            batch, box.ops = box.ops, []
            if batch:
                yield scheduler_pb2.StageSessionRequest(ops=batch)

    async def _read(self, call: Any) -> None:
        try:
            async for response in call:
                for reply in response.replies:
                    future = self._pending.get(reply.ticket)
                    if future is not None and not future.done():
                        future.set_result(reply)
                    elif reply.HasField("granted"):
                        self._release_orphan(reply)
            self._fail_all(grpc.StatusCode.UNAVAILABLE, "scheduler closed the stage session")
        except grpc.aio.AioRpcError as e:
            log.warning("stage_session_lost", code=e.code().name, details=e.details())
            self._fail_all(grpc.StatusCode.UNAVAILABLE, f"stage session lost: {e.details()}")
        except asyncio.CancelledError:
            self._fail_all(grpc.StatusCode.CANCELLED, "stage session closed")
            raise

    def _fail_all(self, code: grpc.StatusCode, message: str) -> None:
        error = scheduler_pb2.StageReply(error=scheduler_pb2.StageError(code=code.value[0], message=message))
        for future in self._pending.values():
            if not future.done():
                future.set_result(error)


_CODES = {member.value[0]: member for member in grpc.StatusCode}


def status_code(code: int) -> grpc.StatusCode:
    """The grpc.StatusCode of a numeric code (UNKNOWN for a code it does not know)."""
    return _CODES.get(code, grpc.StatusCode.UNKNOWN)
