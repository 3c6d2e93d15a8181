"""The scheduler's gRPC surface: unary calls for any client, a StageSession for executors.

The Scheduler checks what callers send (ids by the one id rule, leases it holds) and raises
StageRejected with the status code; both surfaces pass it on as it is.
"""

from __future__ import annotations

from aragog.scheduler.service import Scheduler, StageRejected
from aragog.scheduler.session import StageSession
from aragog.v1 import scheduler_pb2, scheduler_pb2_grpc


class SchedulerServicer(scheduler_pb2_grpc.SchedulerServiceServicer):
    def __init__(self, scheduler: Scheduler):
        self.s = scheduler

    async def AcquireStage(self, request, context):  # noqa: N802
        try:
            response = await self.s.acquire(request.request_id, request.stage,
                                            request.executor_id, request.traceparent)
        except StageRejected as e:
            await context.abort(e.code, e.message)
        return response

    async def RenewLease(self, request, context):  # noqa: N802
        try:
            ttl = await self.s.renew(request.lease_id)
        except StageRejected as e:
            await context.abort(e.code, e.message)
        return scheduler_pb2.RenewLeaseResponse(lease_ttl_ms=int(ttl * 1000))

    async def ReleaseStage(self, request, context):  # noqa: N802
        try:
            await self.s.release_stage(request.lease_id, request.success, request.model_failed)
        except StageRejected as e:
            await context.abort(e.code, e.message)
        return scheduler_pb2.ReleaseStageResponse()

    async def StageSession(self, request_iterator, context):  # noqa: N802
        try:
            self.s.check_active()
        except StageRejected as e:
            await context.abort(e.code, e.message)
        await StageSession(self.s, context).run()

    async def GetSchedulerState(self, request, context):  # noqa: N802
        try:
            self.s.check_active()
        except StageRejected as e:
            await context.abort(e.code, e.message)
        state = self.s.state()
        state.pool_changes.extend(await self.s.pool_changes())
        return state

    async def UnloadModel(self, request, context):  # noqa: N802
        return await _model_state(self.s.unload_model(request.model, request.by), context)

    async def LoadModel(self, request, context):  # noqa: N802
        return await _model_state(self.s.load_model(request.model, request.by), context)

    async def AddModel(self, request, context):  # noqa: N802
        return await _model_state(self.s.add_model(request.profile_json, request.by), context)


async def _model_state(change, context) -> scheduler_pb2.ModelStateResponse:  # type: ignore[no-untyped-def]
    """A pool change's answer: the model's state after it, or its refusal's status."""
    try:
        name, state = await change
    except StageRejected as e:
        await context.abort(e.code, e.message)
    return scheduler_pb2.ModelStateResponse(model=name, state=state)
