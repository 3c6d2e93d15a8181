"""The blocking and asyncio clients: the same calls, one channel each."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
from aragog.client._errors import AragogError, translate
from aragog.v1 import common_pb2, router_pb2, router_pb2_grpc

Event = router_pb2.SubmitRequestResponse
"""One progress event: `request_id` and one of `admitted`, `stage_started`,
`stage_finished` (a StageResult) or `completed` (the final RequestStatus)."""


def _credentials(tls: bool, root_certificates: bytes | None, token: str | None):
    """Channel credentials, or None for plaintext (a token then travels as plain metadata:
    only on loopback or a trusted network)."""
    if not (tls or root_certificates):
        return None
    return grpc.ssl_channel_credentials(root_certificates=root_certificates)


def _metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),) if token else ()


def _submit_request(
    workflow_id: str, text: str, policy: str, tenant: str, request_id: str, session_id: str
) -> router_pb2.SubmitRequestRequest:
    return router_pb2.SubmitRequestRequest(
        workflow_id=workflow_id, input=text, policy=policy, tenant=tenant, request_id=request_id,
        session_id=session_id,
    )


class _RouterClient:
    """What both clients share: the channel (secure when `tls` or a token is given), the
    stub, the call metadata and the deadlines. `_grpc` is grpc or grpc.aio."""

    _grpc: Any = grpc

    def __init__(
        self,
        address: str = "127.0.0.1:50051",
        *,
        tls: bool = False,
        root_certificates: bytes | None = None,
        token: str | None = None,
        timeout_s: float = 30.0,
        request_timeout_s: float = 600.0,
    ):
        creds = _credentials(tls, root_certificates, token)
        g = self._grpc
        self._channel = g.secure_channel(address, creds) if creds else g.insecure_channel(address)
        self._stub = router_pb2_grpc.RouterServiceStub(self._channel)
        self._md = _metadata(token)
        self.timeout_s = timeout_s
        self.request_timeout_s = request_timeout_s


class Client(_RouterClient):
    """Blocking client of the router at `address` (host:port)."""

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method, request):
        try:
            return method(request, timeout=self.timeout_s, metadata=self._md)
        except grpc.RpcError as e:
            raise translate(e) from None

    def register_workflow(self, yaml_text: str) -> router_pb2.RegisterWorkflowResponse:
        return self._call(
            self._stub.RegisterWorkflow, router_pb2.RegisterWorkflowRequest(yaml_spec=yaml_text)
        )

    def list_workflows(self) -> list[common_pb2.Workflow]:
        return list(
            self._call(self._stub.ListWorkflows, router_pb2.ListWorkflowsRequest()).workflows
        )

    def status(self, request_id: str) -> common_pb2.RequestStatus:
        return self._call(
            self._stub.GetRequestStatus, router_pb2.GetRequestStatusRequest(request_id=request_id)
        ).status

    def cancel(self, request_id: str) -> common_pb2.RequestStatus:
        """Cancel the request (its waiting stages withdrawn, leases freed); its status after."""
        return self._call(
            self._stub.CancelRequest, router_pb2.CancelRequestRequest(request_id=request_id)
        ).status

    def report_outcome(self, request_id: str, reward: float) -> str:
        """How good a succeeded request's answer was (0 wrong .. 1 right), once; the model
        it was credited to (policies that learn while serving read it)."""
        return self._call(self._stub.ReportOutcome, router_pb2.ReportOutcomeRequest(
            request_id=request_id, reward=reward)).model

    def deprecate_workflow(self, workflow_id: str) -> common_pb2.Workflow:
        """No new requests for the workflow; those admitted run on."""
        return self._call(
            self._stub.DeprecateWorkflow,
            router_pb2.DeprecateWorkflowRequest(workflow_id=workflow_id),
        ).workflow

    def list_requests(
        self, tenant: str = "", limit: int = 100, page_token: str = ""
    ) -> router_pb2.ListRequestsResponse:
        """A page of the tenant's requests, newest first (next_page_token for the next)."""
        return self._call(
            self._stub.ListRequests,
            router_pb2.ListRequestsRequest(tenant=tenant, limit=limit, page_token=page_token),
        )

    def submit(
        self,
        workflow_id: str,
        text: str,
        *,
        policy: str = "",
        tenant: str = "",
        request_id: str = "",
        session_id: str = "",
    ) -> Iterator[Event]:
        """Stream the request's events until `completed`. Submitting an id again re-attaches."""
        stream = self._stub.SubmitRequest(
            _submit_request(workflow_id, text, policy, tenant, request_id, session_id),
            timeout=self.request_timeout_s,
            metadata=self._md,
        )
        try:
            yield from stream
        except grpc.RpcError as e:
            raise translate(e) from None
        finally:
            stream.cancel()

    def run(self, workflow_id: str, text: str, **kw: str) -> common_pb2.RequestStatus:
        """Submit and wait: the final status (its `state` says whether it succeeded)."""
        for event in self.submit(workflow_id, text, **kw):
            if event.WhichOneof("event") == "completed":
                return event.completed
        raise AragogError("the router closed the stream before the request completed")


class AsyncClient(_RouterClient):
    """asyncio client of the router at `address`; the same calls as `Client`, awaited."""

    _grpc = grpc.aio

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _call(self, method, request):
        try:
            return await method(request, timeout=self.timeout_s, metadata=self._md)
        except grpc.RpcError as e:
            raise translate(e) from None

    async def register_workflow(self, yaml_text: str) -> router_pb2.RegisterWorkflowResponse:
        return await self._call(
            self._stub.RegisterWorkflow, router_pb2.RegisterWorkflowRequest(yaml_spec=yaml_text)
        )

    async def list_workflows(self) -> list[common_pb2.Workflow]:
        reply = await self._call(self._stub.ListWorkflows, router_pb2.ListWorkflowsRequest())
        return list(reply.workflows)

    async def status(self, request_id: str) -> common_pb2.RequestStatus:
        reply = await self._call(
            self._stub.GetRequestStatus, router_pb2.GetRequestStatusRequest(request_id=request_id)
        )
        return reply.status

    async def cancel(self, request_id: str) -> common_pb2.RequestStatus:
        """Cancel the request (its waiting stages withdrawn, leases freed); its status after."""
        reply = await self._call(
            self._stub.CancelRequest, router_pb2.CancelRequestRequest(request_id=request_id)
        )
        return reply.status

    async def report_outcome(self, request_id: str, reward: float) -> str:
        """How good a succeeded request's answer was (0 wrong .. 1 right), once; the model
        it was credited to."""
        reply = await self._call(self._stub.ReportOutcome, router_pb2.ReportOutcomeRequest(
            request_id=request_id, reward=reward))
        return reply.model

    async def deprecate_workflow(self, workflow_id: str) -> common_pb2.Workflow:
        """No new requests for the workflow; those admitted run on."""
        reply = await self._call(
            self._stub.DeprecateWorkflow,
            router_pb2.DeprecateWorkflowRequest(workflow_id=workflow_id),
        )
        return reply.workflow

    async def list_requests(
        self, tenant: str = "", limit: int = 100, page_token: str = ""
    ) -> router_pb2.ListRequestsResponse:
        """A page of the tenant's requests, newest first (next_page_token for the next)."""
        return await self._call(
            self._stub.ListRequests,
            router_pb2.ListRequestsRequest(tenant=tenant, limit=limit, page_token=page_token),
        )

    async def submit(
        self,
        workflow_id: str,
        text: str,
        *,
        policy: str = "",
        tenant: str = "",
        request_id: str = "",
        session_id: str = "",
    ) -> AsyncIterator[Event]:
        call = self._stub.SubmitRequest(
            _submit_request(workflow_id, text, policy, tenant, request_id, session_id),
            timeout=self.request_timeout_s,
            metadata=self._md,
        )
        try:
            async for event in call:
                yield event
        except grpc.RpcError as e:
            raise translate(e) from None
        finally:
            call.cancel()

    async def run(self, workflow_id: str, text: str, **kw: str) -> common_pb2.RequestStatus:
        async for event in self.submit(workflow_id, text, **kw):
            if event.WhichOneof("event") == "completed":
                return event.completed
        raise AragogError("the router closed the stream before the request completed")
