"""The scheduler's gRPC surface: unary calls for any client, a StageSession for executors."""

from __future__ import annotations

import grpc
import structlog

from aragog.scheduler.service import Scheduler, StageRejected
from aragog.scheduler.session import StageSession
from aragog.v1 import scheduler_pb2, scheduler_pb2_grpc

log = structlog.get_logger("scheduler")


class SchedulerServicer(scheduler_pb2_grpc.SchedulerServiceServicer):
    def __init__(self, scheduler: Scheduler):
        self.s = scheduler

    async def AcquireStage(self, request, context):  # noqa: N802
        if not request.request_id or not request.stage:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "request_id and stage are required")
        structlog.contextvars.bind_contextvars(request_id=request.request_id, stage=request.stage)
        try:
            return await self.s.acquire(request.request_id, request.stage, request.executor_id)
        except StageRejected as e:
            await context.abort(e.code, e.message)

    async def RenewLease(self, request, context):  # noqa: N802
        ttl = await self.s.renew(request.lease_id)
        if ttl < 0:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no lease {request.lease_id!r} (expired or released)")
        return scheduler_pb2.RenewLeaseResponse(lease_ttl_ms=int(ttl * 1000))

    async def ReleaseStage(self, request, context):  # noqa: N802
        if not await self.s.release(request.lease_id, request.success):
            log.info("release_unknown_lease", lease_id=request.lease_id)
        return scheduler_pb2.ReleaseStageResponse()

    async def StageSession(self, request_iterator, context):  # noqa: N802
        await StageSession(self.s, context).run()

    async def GetSchedulerState(self, request, context):  # noqa: N802
        return self.s.state()
