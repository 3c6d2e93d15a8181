"""Router: validates and admits requests, computes F(r) once, streams progress back.

Admission writes the request's state, F(r), its first event and its entry in the work
stream in one Redis transaction that also claims the request id, so a request is either
fully admitted or not at all, and once however many clients submit the same id at the same
time; bad input is rejected with INVALID_ARGUMENT before anything is written.

Admission is bounded: past ARAGOG_MAX_QUEUED_REQUESTS unfinished requests, or
ARAGOG_MAX_QUEUED_PER_TENANT of the request's tenant, SubmitRequest is refused with
RESOURCE_EXHAUSTED, a message naming the bound, and the trailing metadata `retry-after-ms`
(ARAGOG_RETRY_AFTER_MS); the same transaction checks the bounds, so a refusal writes nothing.

CancelRequest, or the last client of a request submitted with cancel_on_disconnect leaving
before its end, ends it CANCELLED through the store (once, freeing its tenant's slot, with
the final event to its followers); the scheduler, told on `{ns}:cancelled`, withdraws its
stages and frees its leases. The streams following such a request are recorded in Redis,
one token each, so one re-attached through another router keeps it alive, and a stream
cancelled while it records or removes itself can always remove itself; a router that dies
leaves its streams recorded, and the request then runs to its end.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import grpc
import structlog
from aragog import policies
from aragog.common import tracing
from aragog.common.bounds import clip, id_error, quote
from aragog.common.pool import PoolSpec
from aragog.common.settings import RouterSettings
from aragog.common.store import ROUTING_PENDING, TERMINAL, QueueFull, Store, encode_configs
from aragog.common.workflow import WorkflowDef, WorkflowError, parse_workflow
from aragog.router import front_door
from aragog.router.auth import Tokens
from aragog.router.events import EventHub, RequestGone
from aragog.routing.context import Routing
from aragog.v1 import common_pb2, router_pb2, router_pb2_grpc
from prometheus_client import Counter, Histogram

log = structlog.get_logger("router")
RETRY_AFTER_MS = "retry-after-ms"
"""Trailing metadata of a RESOURCE_EXHAUSTED refusal: milliseconds to wait before retrying."""

ADMITTED = Counter("aragog_router_admitted_total", "Requests admitted", ["workflow", "policy"])
MAX_LIST_LIMIT = 1000  # ListRequests' page size bound


def _workflow_proto(wf, deprecated: bool) -> common_pb2.Workflow:
    proto = wf.to_proto()
    proto.deprecated = deprecated
    return proto


def _page_cursor(token: str) -> tuple[float, str] | None | bool:
    """ListRequests' page token: (admission time, request id); None for the first page,
    False if it is not one the router returned."""
    if not token:
        return None
    when, sep, rid = token.partition("|")
    try:
        t = float(when)
    except ValueError:
        return False
    if not sep or id_error("request_id", rid) or t != t:
        return False
    return t, rid


REJECTED = Counter("aragog_router_rejected_total", "Requests rejected", ["reason"])
F_SIZE = Histogram(
    "aragog_router_f_size", "|F(r)|: configurations a request is admitted with, once final",
    ["workflow"], buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 1024, 4096, 65536, 1 << 20))
INTENT_ROUTED = Counter("aragog_router_intent_routed_total",
                        "Requests without a workflow_id, by the front door's route", ["route"])
CANCELLED = Counter("aragog_router_cancelled_total", "Requests cancelled", ["reason"])
ROUTING_SECONDS = Histogram(
    "aragog_router_routing_seconds", "Time from arrival until F(r) is final (admission + routing)",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5),
)


class RouterService(router_pb2_grpc.RouterServiceServicer):
    def __init__(self, settings: RouterSettings, store: Store, routing: Routing | None = None):
        self.settings = settings
        self.store = store
        self.events = EventHub(store)
        self.routing = routing or Routing(settings)
        self.background: set[asyncio.Task] = set()  # routing and warm-up tasks
        self.tokens = Tokens.load(settings.auth_tokens_file) if settings.auth_tokens_file else None

    async def _caller(self, context: grpc.aio.ServicerContext) -> str | None:
        """The calling tenant, by its bearer token (auth.py); None without authentication."""
        if self.tokens is None:
            return None
        tenant = self.tokens.tenant(context.invocation_metadata())
        if tenant is None:
            REJECTED.labels("unauthenticated").inc()
            await context.abort(grpc.StatusCode.UNAUTHENTICATED,
                                "a valid bearer token is required "
                                "(metadata `authorization: Bearer <token>`)")
        return tenant

    async def _visible(self, rid: str, caller: str | None) -> bool:
        """Whether `caller` may see request `rid`: no record, or one of its tenant's."""
        if caller is None:
            return True
        tenant = await self.store.tenant(rid)
        return tenant is None or tenant == caller

    async def _pool(self, context: grpc.aio.ServicerContext) -> PoolSpec:
        pool = await self.store.get_pool()
        if pool is None:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                "no model pool registered yet: start the scheduler (it publishes the pool)",
            )
        assert pool is not None
        return pool

    async def RegisterWorkflow(self, request, context):  # noqa: N802
        await self._caller(context)
        text = request.yaml_spec
        if len(text.encode()) > self.settings.max_workflow_bytes:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"workflow YAML is larger than {self.settings.max_workflow_bytes} bytes",
            )
        pool = await self._pool(context)
        try:  # off the event loop: bounded (see parse_workflow), but up to a few 100 ms
            wf = await asyncio.to_thread(parse_workflow, text, pool.names)
        except WorkflowError as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        n = wf.num_configurations
        if n > self.settings.max_configurations:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"workflow {wf.id} has {n} configurations; the limit is "
                f"{self.settings.max_configurations} (ARAGOG_MAX_CONFIGURATIONS): "
                "fewer candidates per stage",
            )
        if not await self.store.put_workflow(wf):
            await context.abort(
                grpc.StatusCode.ALREADY_EXISTS,
                f"workflow {wf.id} is already registered with a different definition; "
                "register the new one under a new id (requests in flight depend on the old one)",
            )
        log.info("workflow_registered", workflow=wf.id, configurations=n)
        return router_pb2.RegisterWorkflowResponse(workflow=wf.to_proto(), configurations=n)

    async def ListWorkflows(self, request, context):  # noqa: N802
        await self._caller(context)
        wfs = await self.store.list_workflows()
        deprecated = await self.store.deprecated_workflows()
        return router_pb2.ListWorkflowsResponse(
            workflows=[_workflow_proto(w, w.id in deprecated) for w in wfs])

    async def DeprecateWorkflow(self, request, context):  # noqa: N802
        await self._caller(context)
        bad_id = id_error("workflow_id", request.workflow_id)
        if bad_id:
            await self._reject(context, "workflow", bad_id)
        wf = await self.store.deprecate_workflow(request.workflow_id)
        if wf is None:
            await context.abort(grpc.StatusCode.NOT_FOUND,
                                f"no workflow {quote(request.workflow_id)}")
        log.info("workflow_deprecated", workflow=request.workflow_id)
        return router_pb2.DeprecateWorkflowResponse(workflow=_workflow_proto(wf, True))

    async def ListRequests(self, request, context):  # noqa: N802
        caller = await self._caller(context)
        bad = id_error("tenant", request.tenant, optional=True)
        if bad:
            await self._reject(context, "tenant", bad)
        tenant = request.tenant
        if caller is not None:
            if tenant and tenant != caller:
                await context.abort(grpc.StatusCode.PERMISSION_DENIED,
                                    f"tenant {quote(tenant)} is not yours: leave it empty")
            tenant = caller
        if request.limit > MAX_LIST_LIMIT:
            await self._reject(context, "limit",
                               f"limit is {request.limit}; at most {MAX_LIST_LIMIT} per page")
        cursor = _page_cursor(request.page_token)
        if cursor is False:
            await self._reject(context, "page_token",
                               "page_token is not one ListRequests returned")
        rows, after = await self.store.list_requests(tenant, request.limit or 100, cursor or None)
        return router_pb2.ListRequestsResponse(
            requests=rows, next_page_token=f"{after[0]!r}|{after[1]}" if after else "")

    async def GetRequestStatus(self, request, context):  # noqa: N802
        caller = await self._caller(context)
        bad_id = id_error("request_id", request.request_id)
        if bad_id:
            await self._reject(context, "request_id", bad_id)
        status = await self.store.status(request.request_id)
        if status is None or (caller is not None and status.tenant != caller):
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no request {request.request_id!r}")
        return router_pb2.GetRequestStatusResponse(status=status)

    async def ReportOutcome(self, request, context):  # noqa: N802
        """The outcome hook: how good a succeeded request's answer was, credited to the
        model that ran most of its stages (ties: the larger)."""
        caller = await self._caller(context)
        bad_id = id_error("request_id", request.request_id)
        if bad_id:
            await self._reject(context, "request_id", bad_id)
        if not 0.0 <= request.reward <= 1.0:  # NaN fails it too
            await self._reject(context, "reward", "reward must be within 0 (wrong) and 1 "
                               f"(right), not {request.reward!r}")
        status = await self.store.status(request.request_id)
        if status is None or (caller is not None and status.tenant != caller):
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no request {request.request_id!r}")
        if status.state != common_pb2.REQUEST_STATE_SUCCEEDED:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                f"request {request.request_id} has not succeeded: only an "
                                "answer has an outcome")
        models = [st.model for st in status.stages if st.model]
        pool = await self._pool(context)
        size = {m.name: m.params_b for m in pool.models}
        model = max(set(models), key=lambda m: (models.count(m), size.get(m, 0.0), m))
        if not await self.store.record_outcome(request.request_id, status.workflow_id, model,
                                               request.reward):
            await context.abort(grpc.StatusCode.ALREADY_EXISTS,
                                f"request {request.request_id} has an outcome already")
        return router_pb2.ReportOutcomeResponse(model=model)

    async def SubmitRequest(  # noqa: N802
        self, request: router_pb2.SubmitRequestRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[router_pb2.SubmitRequestResponse]:
        caller = await self._caller(context)
        for what, value in (("request_id", request.request_id),
                            ("workflow_id", request.workflow_id), ("tenant", request.tenant),
                            ("session_id", request.session_id)):
            bad_id = id_error(what, value, optional=True)
            if bad_id:
                await self._reject(context, what, bad_id)
        if caller is not None:
            if request.tenant and request.tenant != caller:
                REJECTED.labels("tenant").inc()
                await context.abort(grpc.StatusCode.PERMISSION_DENIED,
                                    f"tenant {quote(request.tenant)} is not yours: leave tenant "
                                    "empty (your token's tenant is used) or name your own")
            request.tenant = caller
        rid = request.request_id or uuid.uuid4().hex
        if request.request_id and not await self._visible(rid, caller):
            await self._id_taken(context, rid)
        structlog.contextvars.bind_contextvars(request_id=rid)
        client = uuid.uuid4().hex  # this stream, among the request's followers
        ended = False
        # the request's root span (the caller's traceparent, if it sent one, is its parent);
        # current only around admission, which stores it with the request for the executor:
        # this generator's body runs between yields, so no context stays attached across them
        span = tracing.tracer.start_span(
            "SubmitRequest", context=tracing.parent(_metadata(context, "traceparent")),
            kind=tracing.trace.SpanKind.SERVER, attributes={"aragog.request_id": rid})
        try:
            with tracing.trace.use_span(span):
                if request.request_id and await self.store.attach(rid, client) is not None:
                    log.info("reattach")
                elif not await self._admit(rid, request, context, client):
                    if not await self._visible(rid, caller):  # another tenant's, admitted first
                        await self._id_taken(context, rid)
                    await self.store.attach(rid, client)  # another submission admitted it first
            async for event in self._events(rid, context):
                ended = event.WhichOneof("event") == "completed"
                yield event
        finally:
            span.end()
            # The stream ends before its request (the client left, or this stream gave up),
            # perhaps cancelled in the middle of counting itself: uncount it, whatever it did.
            if not ended and (request.request_id or request.cancel_on_disconnect):
                self._spawn(self._client_left(rid, client))

    async def _id_taken(self, context: grpc.aio.ServicerContext, rid: str) -> None:
        await context.abort(grpc.StatusCode.ALREADY_EXISTS,
                            f"request id {rid} is in use: choose another")

    async def CancelRequest(self, request, context):  # noqa: N802
        caller = await self._caller(context)
        rid = request.request_id
        bad_id = id_error("request_id", rid)
        if bad_id:
            await self._reject(context, "request_id", bad_id)
        structlog.contextvars.bind_contextvars(request_id=rid)
        status = await self.store.status(rid)
        if status is None or (caller is not None and status.tenant != caller):
            await context.abort(grpc.StatusCode.NOT_FOUND,
                                f"no request {rid!r} (unknown, or finished over "
                                f"{self.settings.request_ttl_s} s ago)")
        assert status is not None
        if status.state not in TERMINAL:  # a finished request stays as it finished
            ttl = self.settings.request_ttl_s
            if await self.store.cancel(rid, "cancelled by CancelRequest", ttl):
                CANCELLED.labels("client").inc()
                log.info("cancelled", reason="client")
            status = await self.store.status(rid) or status
        return router_pb2.CancelRequestResponse(status=status)

    async def _client_left(self, rid: str, client: str) -> None:
        """A stream stopped following the request before its end: if the request cancels on
        disconnect and that stream was the last to follow it, cancel it."""
        why = "cancelled: its last client disconnected (cancel_on_disconnect)"
        try:
            if (await self.store.detach(rid, client)
                    and await self.store.cancel(rid, why, self.settings.request_ttl_s,
                                                unfollowed=True)):
                CANCELLED.labels("disconnect").inc()
                log.info("cancelled", request_id=rid, reason="disconnect")
        except Exception:  # Redis away: the request runs on to its end
            log.exception("cancel_on_disconnect_failed", request_id=rid)

    def _spawn(self, coro) -> None:  # type: ignore[no-untyped-def]
        """Run `coro` on its own, keeping a reference until it is done."""
        task = asyncio.create_task(coro)
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    async def _reject(self, context: grpc.aio.ServicerContext, reason: str, message: str) -> None:
        REJECTED.labels(reason).inc()
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, clip(message))

    async def _admit(self, rid: str, request: router_pb2.SubmitRequestRequest, context,
                     client: str) -> bool:
        """Admit the request; False if a concurrent submission of its id admitted it first
        (the caller then follows that one). `client` is the submitting stream's token."""
        t0 = time.perf_counter()
        size = len(request.input.encode())
        if size == 0:
            await self._reject(context, "input", "input is empty")
        if size > self.settings.max_input_bytes:
            await self._reject(
                context, "input",
                f"input is {size} bytes; the limit is {self.settings.max_input_bytes} "
                "(ARAGOG_MAX_INPUT_BYTES)",
            )
        pool = await self._pool(context)
        intent = None
        if not request.workflow_id:
            wf, intent = await self._front_door(request.input, pool, request.tenant,
                                                request.session_id, context)
        else:
            wf, deprecated = await self.store.workflow_for_admission(request.workflow_id)
            if wf is None:
                known = ", ".join(w.id for w in await self.store.list_workflows()) or "none"
                await self._reject(
                    context, "workflow",
                    f"unknown workflow {request.workflow_id!r}; registered: {known}",
                )
            assert wf is not None
            if deprecated:
                REJECTED.labels("deprecated").inc()
                await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                    f"workflow {wf.id} is deprecated: submit to its successor")
        policy_name = request.policy or self.settings.default_policy
        routed_later = False
        if not self.routing.loaded(wf, pool):
            await asyncio.to_thread(self.routing.artifacts, wf, pool)
        profiled = self.routing.artifacts(wf, pool) is not None
        if intent is not None and not request.policy and not profiled:
            # the front door chose a workflow nobody profiled (its single-model route, or a
            # session's named workflow): the default policy may need artifacts there, MoMA's
            # own selection does not (it takes the largest configuration)
            policy_name = "moma"
        try:
            policy = policies.make(policy_name)
            learned = policy.learned and profiled
            load = await self.store.get_load() if policy.wants_load else None
            if learned and policy.overlap and self.settings.routing_overlap:
                # F(r) is computed while the request waits for its first stage; until then the
                # largest configuration is the placeholder (it is in every F(r)).
                f_r = policies.make("largest").admit(wf, pool)
                routed_later = True
            elif learned:
                f_r = await asyncio.to_thread(policy.admit, wf, pool, request.input, self.routing,
                                              load)
            elif policy.wants_outcomes:
                f_r = policy.admit(wf, pool, request.input, self.routing, load,
                                   outcomes=await self.store.outcomes(wf.id))
            else:
                f_r = policy.admit(wf, pool, request.input, self.routing, load)
            # what the policy's stage role will read when the scheduler places each stage
            stage_state = (await asyncio.to_thread(policy.stage_state, wf, pool, request.input,
                                                   self.routing)
                           if policy.decides_stages else b"")
        except policies.ArtifactsUnavailable as e:
            REJECTED.labels("artifacts").inc()
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, clip(str(e)))
        except (policies.PolicyError, WorkflowError) as e:
            await self._reject(context, "policy", str(e))
        admitted = wf.num_configurations if f_r is None else len(f_r)
        first = router_pb2.SubmitRequestResponse(
            request_id=rid,
            admitted=router_pb2.Admitted(policy=policy_name, configurations=admitted,
                                         workflow_id=wf.id, intent=intent),
        )
        fields = {
            **({"traceparent": tp} if (tp := tracing.traceparent()) else {}),
            "workflow_id": wf.id,
            "policy": policy_name,
            "tenant": request.tenant,
            "input": request.input,
            "state": common_pb2.REQUEST_STATE_QUEUED,
            "admitted": admitted,
            "created_at": time.time(),
            **({"routing": ROUTING_PENDING} if routed_later else {}),
            **({"cancel_on_disconnect": 1} if request.cancel_on_disconnect else {}),
            **({"stage_state": stage_state} if stage_state else {}),
        }
        s = self.settings
        try:
            if not await self.store.admit(rid, fields, encode_configs(f_r),
                                          first.SerializeToString(),
                                          s.max_queued_requests, s.max_queued_per_tenant,
                                          client if request.cancel_on_disconnect else "",
                                          s.request_ttl_s):
                log.info("reattach", raced=True)
                return False
        except QueueFull as e:
            await self._refuse_full(context, e, request.tenant)
        ADMITTED.labels(wf.id, policy_name).inc()
        if request.session_id:  # the conversation's context for its next request
            try:
                await self.store.set_session_workflow(request.tenant, request.session_id,
                                                      wf.id, s.request_ttl_s)
            except Exception:  # admitted and running: the session only loses its context
                log.exception("session_not_recorded", session=request.session_id)
        if routed_later:
            self._spawn(self._route(rid, policy, wf, pool, request.input, t0))
        else:
            ROUTING_SECONDS.observe(time.perf_counter() - t0)
            F_SIZE.labels(wf.id).observe(admitted)
        log.info("admitted", workflow=wf.id, policy=policy_name, configurations=admitted,
                 routing="pending" if routed_later else "done",
                 **({"intent": intent.route} if intent else {}))
        return True

    async def _front_door(self, text: str, pool: PoolSpec, tenant: str, session_id: str,
                          context) -> tuple[WorkflowDef, router_pb2.IntentRoute]:
        """The workflow for a request that names none (front_door.py), or a refusal:
        FAILED_PRECONDITION, since what is missing is the deployment's (a workflow for
        such inputs, or ARAGOG_LLM_WORKFLOW), not the request's."""
        workflows, deprecated, states, session = await self.store.front_door_state(
            tenant, session_id)
        try:
            wf, how = await asyncio.to_thread(
                front_door.route, text, workflows, deprecated, states, pool, self.routing,
                self.settings.llm_workflow, session)
        except front_door.NoRoute as e:
            REJECTED.labels("no_route").inc()
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, clip(str(e)))
        INTENT_ROUTED.labels(how.route).inc()
        return wf, how

    async def _refuse_full(self, context: grpc.aio.ServicerContext, e: QueueFull,
                           tenant: str) -> None:
        REJECTED.labels(f"{e.bound}_bound").inc()
        ms = self.settings.retry_after_ms
        if e.bound == "tenant":
            who = f"tenant {quote(tenant)} has" if tenant else "requests without a tenant have"
            bound = f"the most one tenant may have (ARAGOG_MAX_QUEUED_PER_TENANT={e.limit})"
        else:
            who = "the deployment has"
            bound = f"the most it admits at once (ARAGOG_MAX_QUEUED_REQUESTS={e.limit})"
        log.info("refused_queue_full", bound=e.bound, unfinished=e.unfinished)
        await context.abort(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            clip(f"{who} {e.unfinished} unfinished requests, {bound}: submit again in {ms} ms "
                 "(trailing metadata retry-after-ms) or later, once some have finished"),
            trailing_metadata=((RETRY_AFTER_MS, str(ms)),),
        )

    async def _route(self, rid: str, policy: policies.Policy, wf, pool, text: str, t0: float) -> None:
        """Compute F(r) off the event loop and replace the placeholder.

        If this fails (or the router dies first), the request keeps the placeholder: it runs
        on the largest configuration, which costs GPU time but never accuracy.
        """
        try:
            f_r = await asyncio.to_thread(policy.admit, wf, pool, text, self.routing)
            await self.store.routed(rid, f_r)
            ROUTING_SECONDS.observe(time.perf_counter() - t0)
            F_SIZE.labels(wf.id).observe(len(f_r))
        except Exception:
            log.exception("routing_failed", request_id=rid)

    async def _events(self, rid: str, context) -> AsyncIterator[router_pb2.SubmitRequestResponse]:
        """Replay then follow the request's event stream until its final event."""
        deadline = time.monotonic() + self.settings.request_timeout_s
        try:
            async for event in self.events.follow(rid, deadline):
                yield event
        except RequestGone:
            await context.abort(
                grpc.StatusCode.UNAVAILABLE,
                f"request {rid} is no longer in Redis (Redis lost its last writes in a crash): "
                "submit it again with the same request_id to run it",
            )
        except TimeoutError:
            await context.abort(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"request {rid} still running after {self.settings.request_timeout_s}s; "
                "poll GetRequestStatus or resubmit with the same request_id to re-attach",
            )


def _metadata(context: grpc.aio.ServicerContext, key: str) -> str:
    """The value of the call's metadata `key`, or ''."""
    for k, v in context.invocation_metadata() or ():
        if k == key:
            return v if isinstance(v, str) else ""
    return ""
