"""The HTTP/JSON front door, beside gRPC, for callers that cannot speak gRPC.

Served by the router process when ARAGOG_HTTP_LISTEN is set; it calls the router's own gRPC
API through the Python SDK, so both doors admit, refuse and answer alike.

    POST /v1/workflows              {"yaml": "..."}                       register a workflow
    GET  /v1/workflows                                                    list them
    POST /v1/requests               {"workflow_id"?, "input", "policy"?, "tenant"?, "request_id"?,
                                     "session_id"?}
                                    the final status; with `"stream": true` or
                                    `Accept: text/event-stream`, every event as server-sent events
    GET  /v1/requests/{id}                                                a request's status
    POST /v1/chat/completions       OpenAI-compatible: model `aragog/<policy>`, one model call
                                    routed by the policy (the built-in one-stage workflow `chat`)
    GET  /v1/models                 the `aragog/<policy>` models

Errors are JSON `{"error": {"message", "type", "code"}}` (OpenAI's shape) with the HTTP
status of the gRPC code: 400 bad input, 404 unknown, 409 exists, 412 precondition (e.g. no
routing artifacts), 429 over a queue bound (with Retry-After), 503 unavailable, 504 deadline.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import OrderedDict
from typing import Any

import grpc
from aiohttp import web
from aragog.client import AragogError, AsyncClient, ResourceExhausted
from aragog.common.bounds import clip
from google.protobuf.json_format import MessageToDict

CHAT_WORKFLOW = "chat"
MAX_BODY = 1 << 20
MAX_TOKEN_CLIENTS = 64  # router clients kept for distinct bearer tokens
HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.FAILED_PRECONDITION: 412,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}


def chat_workflow(models: list[str]) -> str:
    """The one-stage workflow chat completions run: the conversation in, one model's reply out."""
    return (
        "\n".join(
            [
                f"id: {CHAT_WORKFLOW}",
                "description: One model call for OpenAI-compatible chat completions.",
                "stages:",
                "  - name: reply",
                '    prompt: "{input}"',
                f"    candidates: [{', '.join(models)}]",
                "    output_tokens: 256",
            ]
        )
        + "\n"
    )


def _error(status: int, message: str, kind: str, code: str, headers: dict | None = None):
    return web.json_response(
        {"error": {"message": clip(message), "type": kind, "code": code}},
        status=status,
        headers=headers,
    )


def _from_aragog(e: AragogError) -> web.Response:
    headers = None
    if isinstance(e, ResourceExhausted) and e.retry_after_s is not None:
        headers = {"Retry-After": str(max(1, round(e.retry_after_s)))}
    return _error(
        HTTP_STATUS.get(e.code, 500), e.details, "aragog_error", e.code.name.lower(), headers
    )


def _dict(message) -> dict[str, Any]:
    return MessageToDict(message, preserving_proto_field_name=True)


async def _body(request: web.Request) -> dict[str, Any]:
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_BODY, actual_size=request.content_length)
    try:
        body = json.loads(await request.content.read(MAX_BODY + 1) or b"{}")
    except ValueError:
        raise web.HTTPBadRequest(
            text='{"error": {"message": "body is not JSON"}}', content_type="application/json"
        ) from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(
            text='{"error": {"message": "body must be a JSON object"}}',
            content_type="application/json",
        )
    return body


def _str(body: dict, key: str, required: bool = False) -> str:
    value = body.get(key, "")
    if not isinstance(value, str) or (required and not value):
        raise web.HTTPBadRequest(
            text=json.dumps(
                {
                    "error": {
                        "message": f"`{key}` must be a{' non-empty' if required else ''} string",
                        "type": "invalid_request_error",
                    }
                }
            ),
            content_type="application/json",
        )
    return value


class FrontDoor:
    def __init__(self, router_addr: str, pool_models, root_certificates: bytes | None = None):
        self.router_addr = router_addr
        self.root_certificates = root_certificates
        self.client = AsyncClient(router_addr, root_certificates=root_certificates)
        # one client per bearer token seen (the router checks it), least recently used first
        self._by_token: OrderedDict[str, AsyncClient] = OrderedDict()
        self.pool_models = pool_models  # async () -> list[str]
        self.chat_ready = False

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY)
        app.add_routes(
            [
                web.post("/v1/workflows", self.register),
                web.get("/v1/workflows", self.workflows),
                web.post("/v1/requests", self.submit),
                web.get("/v1/requests/{rid}", self.status),
                web.post("/v1/requests/{rid}/outcome", self.outcome),
                web.post("/v1/chat/completions", self.chat),
                web.get("/v1/models", self.models),
            ]
        )
        return app

    async def close(self) -> None:
        await self.client.close()
        for client in self._by_token.values():
            await client.close()

    async def _client(self, request: web.Request) -> AsyncClient:
        """The router client for this HTTP request: its `Authorization: Bearer` token goes
        to the router as gRPC metadata (the router authenticates; see router/auth.py)."""
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return self.client
        client = self._by_token.get(token)
        if client is None:
            client = self._by_token[token] = AsyncClient(
                self.router_addr, token=token, root_certificates=self.root_certificates)
            while len(self._by_token) > MAX_TOKEN_CLIENTS:
                await self._by_token.popitem(last=False)[1].close()
        self._by_token.move_to_end(token)
        return client

    async def register(self, request: web.Request) -> web.StreamResponse:
        body = await _body(request)
        try:
            reg = await (await self._client(request)).register_workflow(_str(body, "yaml", required=True))
        except AragogError as e:
            return _from_aragog(e)
        return web.json_response(_dict(reg))

    async def workflows(self, request: web.Request) -> web.StreamResponse:
        try:
            return web.json_response(
                {"workflows": [_dict(w) for w in
                               await (await self._client(request)).list_workflows()]}
            )
        except AragogError as e:
            return _from_aragog(e)

    async def status(self, request: web.Request) -> web.StreamResponse:
        try:
            client = await self._client(request)
            return web.json_response(_dict(await client.status(request.match_info["rid"])))
        except AragogError as e:
            return _from_aragog(e)

    async def outcome(self, request: web.Request) -> web.StreamResponse:
        body = await _body(request)
        reward = body.get("reward")
        if isinstance(reward, bool) or not isinstance(reward, (int, float)):
            return _error(400, "`reward` must be a number from 0 (wrong) to 1 (right)",
                          "invalid_request_error", "invalid_argument")
        try:
            client = await self._client(request)
            model = await client.report_outcome(request.match_info["rid"], float(reward))
        except AragogError as e:
            return _from_aragog(e)
        return web.json_response({"request_id": request.match_info["rid"], "model": model})

    async def submit(self, request: web.Request) -> web.StreamResponse:
        body = await _body(request)
        args = dict(
            workflow_id=_str(body, "workflow_id"),  # empty: the router's front door picks
            text=_str(body, "input", required=True),
        )
        kw = {k: _str(body, k) for k in ("policy", "tenant", "request_id", "session_id")}
        stream = body.get("stream") is True or "text/event-stream" in request.headers.get(
            "Accept", ""
        )
        events = (await self._client(request)).submit(args["workflow_id"], args["text"], **kw)
        if not stream:
            try:
                async for e in events:
                    if e.WhichOneof("event") == "completed":
                        return web.json_response(_dict(e.completed))
            except AragogError as e:
                return _from_aragog(e)
            return _error(502, "the router ended the stream early", "aragog_error", "internal")
        response: web.StreamResponse | None = None
        try:
            async for e in events:
                if response is None:
                    response = web.StreamResponse(
                        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
                    )
                    await response.prepare(request)
                kind = e.WhichOneof("event")
                data = json.dumps({"request_id": e.request_id, kind: _dict(getattr(e, kind))})
                await response.write(f"event: {kind}\ndata: {data}\n\n".encode())
        except AragogError as e:
            if response is None:
                return _from_aragog(e)
            await response.write(
                f"event: error\ndata: {json.dumps({'message': e.details})}\n\n".encode()
            )
        if response is None:
            return _error(502, "the router ended the stream early", "aragog_error", "internal")
        await response.write_eof()
        return response

    async def models(self, request: web.Request) -> web.StreamResponse:
        from aragog import policies

        now = int(time.time())
        return web.json_response(
            {
                "object": "list",
                "data": [
                    {"id": f"aragog/{p}", "object": "model", "created": now, "owned_by": "aragog"}
                    for p in policies.names()
                ],
            }
        )

    async def _ensure_chat(self, client: AsyncClient) -> None:
        if self.chat_ready:
            return
        try:
            await client.register_workflow(chat_workflow(await self.pool_models()))
        except AragogError as e:
            if e.code != grpc.StatusCode.ALREADY_EXISTS:
                raise
        self.chat_ready = True

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await _body(request)
        model = _str(body, "model", required=True)
        if not model.startswith("aragog/"):
            return _error(
                404,
                f"model {model!r}: name a routing policy as aragog/<policy>, e.g. "
                "aragog/largest (GET /v1/models lists them)",
                "invalid_request_error",
                "model_not_found",
            )
        messages = body.get("messages")
        if (
            not isinstance(messages, list)
            or not messages
            or not all(isinstance(m, dict) and isinstance(m.get("content"), str) for m in messages)
        ):
            return _error(
                400,
                "`messages` must be a non-empty list of {role, content} objects "
                "with string content",
                "invalid_request_error",
                "invalid_messages",
            )
        text = "\n".join(f"{m.get('role', 'user')}: {m['content']}" for m in messages)
        try:
            client = await self._client(request)
            await self._ensure_chat(client)
            # OpenAI's `user` is the tenant, unless a token names it (then the token's)
            tenant = "" if client is not self.client else _str(body, "user")
            status = await client.run(
                CHAT_WORKFLOW, text, policy=model.removeprefix("aragog/"), tenant=tenant
            )
        except AragogError as e:
            return _from_aragog(e)
        if status.error:
            return _error(502, status.error, "aragog_error", "request_failed")
        served = status.stages[0].model if status.stages else ""
        reply = {"role": "assistant", "content": status.answer}
        cid = f"chatcmpl-{status.request_id or uuid.uuid4().hex}"
        usage = {
            "prompt_tokens": len(text.split()),
            "completion_tokens": len(status.answer.split()),
        }
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        created = int(time.time())
        if body.get("stream") is True:
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            for delta, finish in ((reply, None), ({}, "stop")):
                chunk = {
                    "id": cid,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "system_fingerprint": served,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                }
                await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
            await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
            return response
        return web.json_response(
            {
                "id": cid,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "system_fingerprint": served,  # the pool model that answered
                "choices": [{"index": 0, "message": reply, "finish_reason": "stop"}],
                "usage": usage,
            }
        )


async def start(listen: str, router_addr: str, pool_models,
                root_certificates: bytes | None = None) -> tuple[web.AppRunner, FrontDoor]:
    """Serve the front door on `listen` (host:port); stop with `await runner.cleanup()`.
    `root_certificates`: the router's port speaks TLS, and its certificate (valid for
    `router_addr`'s host) is signed by these."""
    door = FrontDoor(router_addr, pool_models, root_certificates)
    runner = web.AppRunner(door.app(), access_log=None)
    await runner.setup()
    host, _, port = listen.rpartition(":")
    await web.TCPSite(runner, host or "127.0.0.1", int(port)).start()
    return runner, door
