"""gRPC plumbing every service shares: server factory, request-context interceptor, errors.

Servers serve health checking and reflection next to their own services; clients put a
deadline on every call and turn status codes into one typed error.
"""

from __future__ import annotations

import asyncio
import inspect
import signal
import time
from collections.abc import Callable, Iterable
from typing import Any

import grpc
import structlog
from aragog.common.bounds import clip
from aragog.common.store import REDIS_AWAY
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import Counter, Histogram

REQUEST_ID_HEADER = "x-request-id"


class ContextInterceptor(grpc.aio.ServerInterceptor):
    """Binds the RPC method and the caller's x-request-id to every log line of the call."""

    async def intercept_service(self, continuation, handler_call_details):  # type: ignore[no-untyped-def]
        rid = ""
        for key, value in handler_call_details.invocation_metadata or ():
            if key == REQUEST_ID_HEADER:
                rid = value
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(rpc=handler_call_details.method)
        if rid:
            structlog.contextvars.bind_contextvars(request_id=rid)
        return await continuation(handler_call_details)


class _Undecodable(Exception):
    """Request bytes that are not the method's message."""


HANDLED = Counter("aragog_grpc_server_handled_total", "RPCs finished, by method and status code",
                  ["method", "code"])
HANDLING_SECONDS = Histogram(
    "aragog_grpc_server_handling_seconds", "RPC duration, by method", ["method"],
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 120, 600))


def _record(method: str, t0: float, context: Any, ok: bool) -> None:
    """Count a finished call: the code it was aborted with, else OK if the handler returned,
    CANCELLED if the caller went away, UNKNOWN if the handler raised."""
    code = context.code() if hasattr(context, "code") else None
    if not isinstance(code, grpc.StatusCode):
        code = (grpc.StatusCode.OK if ok else grpc.StatusCode.CANCELLED if context.cancelled()
                else grpc.StatusCode.UNKNOWN)
    HANDLED.labels(method, code.name).inc()
    HANDLING_SECONDS.labels(method).observe(time.perf_counter() - t0)


class StatusInterceptor(grpc.aio.ServerInterceptor):
    """Two failures that are not the handler's own get their status code, not UNKNOWN:
    request bytes that do not decode are the caller's error (INVALID_ARGUMENT), and Redis
    unreachable through its client's retries (a slow restart) is UNAVAILABLE, to retry.
    Every call is also counted by method and final status code.

    grpc.aio decodes with the handler's request_deserializer and answers UNKNOWN when it
    raises. Each handler is wrapped once: a unary request that does not decode reaches the
    handler as a marker and a streamed one raises from `read()`; the wrapper aborts on both.
    The wrapper also records the call's code and duration when the handler ends.
    """

    _MAKE = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }

    def __init__(self) -> None:
        self._guarded: dict[str, Any] = {}  # method -> wrapped handler

    async def intercept_service(self, continuation, handler_call_details):  # type: ignore[no-untyped-def]
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        guarded = self._guarded.get(method)
        if guarded is None:
            guarded = self._guarded[method] = self._guard(handler, method)
        return guarded

    def _guard(self, handler: Any, method: str = "") -> Any:
        decode = handler.request_deserializer
        behavior = (handler.unary_unary or handler.unary_stream or handler.stream_unary
                    or handler.stream_stream)
        is_gen = inspect.isasyncgenfunction(behavior)
        if decode is None or not (is_gen or inspect.iscoroutinefunction(behavior)):
            return handler
        streaming = handler.request_streaming

        def safe_decode(raw: bytes) -> Any:
            try:
                return decode(raw)
            except DecodeError as e:
                if streaming:
                    raise _Undecodable(str(e)) from None
                return _Undecodable(str(e))  # unary requests decode before the handler runs

        async def abort(context: grpc.aio.ServicerContext, e: _Undecodable) -> None:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                clip(f"request bytes are not this method's protobuf message ({e}): send the "
                     "serialized request message the .proto declares"),
            )

        async def away(context: grpc.aio.ServicerContext, e: Exception) -> None:
            await context.abort(
                grpc.StatusCode.UNAVAILABLE,
                clip(f"Redis, which holds the cluster state, is unreachable ({e}): retry in a "
                     "few seconds (submitting with the same request_id re-attaches to a "
                     "request, it never runs it twice)"),
            )

        if is_gen:
            async def guarded(request, context):  # type: ignore[no-untyped-def]
                t0, ok = time.perf_counter(), False
                try:
                    if isinstance(request, _Undecodable):
                        await abort(context, request)
                    async for response in behavior(request, context):
                        yield response
                    ok = True
                except _Undecodable as e:
                    await abort(context, e)
                except REDIS_AWAY as e:
                    await away(context, e)
                finally:
                    _record(method, t0, context, ok)
        else:
            async def guarded(request, context):  # type: ignore[no-untyped-def]
                t0, ok = time.perf_counter(), False
                try:
                    if isinstance(request, _Undecodable):
                        await abort(context, request)
                    result = await behavior(request, context)
                    ok = True
                    return result
                except _Undecodable as e:
                    await abort(context, e)
                except REDIS_AWAY as e:
                    await away(context, e)
                finally:
                    _record(method, t0, context, ok)

        make = self._MAKE[(handler.request_streaming, handler.response_streaming)]
        return make(guarded, request_deserializer=safe_decode,
                    response_serializer=handler.response_serializer)


class TlsError(Exception):
    """A TLS setting names a file that cannot be read, or only half a key pair."""


def _read(var: str, path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise TlsError(f"{var}={path}: {e.strerror}") from None


def _pair(settings: Any) -> tuple[bytes, bytes] | None:
    """(key, certificate) from the settings, or None for plaintext."""
    cert, key = settings.tls_cert_file, settings.tls_key_file
    if bool(cert) != bool(key):
        raise TlsError("ARAGOG_TLS_CERT_FILE and ARAGOG_TLS_KEY_FILE go together: set both "
                       "for TLS, or neither for plaintext")
    if not cert:
        return None
    return _read("ARAGOG_TLS_KEY_FILE", key), _read("ARAGOG_TLS_CERT_FILE", cert)


def server_credentials(settings: Any, mutual: bool) -> grpc.ServerCredentials | None:
    """TLS for a service's port, or None for plaintext. `mutual`: with ARAGOG_TLS_CA_FILE
    set, callers must present a client certificate it signed (the services among
    themselves; the router's callers authenticate with tokens instead)."""
    pair = _pair(settings)
    if pair is None:
        return None
    ca = _read("ARAGOG_TLS_CA_FILE", settings.tls_ca_file) if settings.tls_ca_file else None
    return grpc.ssl_server_credentials(
        [pair], root_certificates=ca if mutual else None,
        require_client_auth=bool(mutual and ca))


def channel_credentials(settings: Any) -> grpc.ChannelCredentials | None:
    """TLS for a service's calls to another (executor -> scheduler), or None for plaintext:
    trust ARAGOG_TLS_CA_FILE's certificates and present this service's own."""
    pair = _pair(settings)
    ca = _read("ARAGOG_TLS_CA_FILE", settings.tls_ca_file) if settings.tls_ca_file else None
    if pair is None and ca is None:
        return None
    key, cert = pair or (None, None)
    return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key,
                                        certificate_chain=cert)


def create_server(
    listen: str,
    register: Iterable[Callable[[grpc.aio.Server], None]],
    service_names: Iterable[str],
    credentials: grpc.ServerCredentials | None = None,
) -> tuple[grpc.aio.Server, int, health.aio.HealthServicer]:
    """Build a grpc.aio server with our services, health and reflection; return it and its port.

    `listen` may end in :0 to pick a free port (tests). Health starts NOT_SERVING until the
    caller marks it SERVING once its dependencies answer.
    """
    server = grpc.aio.server(
        interceptors=[ContextInterceptor(), StatusInterceptor()],
        options=[
            ("grpc.so_reuseport", 0), ("grpc.max_receive_message_length", 16 << 20),
            # accept the executors' keepalive pings (every 10 s, also between calls)
            ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
            ("grpc.keepalive_permit_without_calls", 1),
        ],
    )
    for add in register:
        add(server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = list(service_names)
    reflection.enable_server_reflection([*names, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
    port = (server.add_secure_port(listen, credentials) if credentials
            else server.add_insecure_port(listen))
    if port == 0:
        raise RuntimeError(f"cannot bind gRPC server to {listen}")
    return server, port, health_servicer


async def set_serving(health_servicer: Any, service_names: Iterable[str], serving: bool) -> None:
    status = (
        health_pb2.HealthCheckResponse.SERVING
        if serving
        else health_pb2.HealthCheckResponse.NOT_SERVING
    )
    for name in [*service_names, ""]:
        await health_servicer.set(name, status)


def install_sigterm(stop: asyncio.Event) -> None:
    """SIGTERM and SIGINT set `stop`; the service then drains and exits."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


class RpcError(Exception):
    """A failed call to another service: its status code and the server's message."""

    def __init__(self, method: str, code: grpc.StatusCode, details: str):
        super().__init__(f"{method}: {code.name}: {details}")
        self.method = method
        self.code = code
        self.details = details

    @property
    def retryable(self) -> bool:
        return self.code in (
            grpc.StatusCode.UNAVAILABLE,
            grpc.StatusCode.DEADLINE_EXCEEDED,
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            grpc.StatusCode.ABORTED,
        )


def start_metrics(port: int, addr: str = "127.0.0.1") -> int:
    """Expose Prometheus metrics on `addr`:`port` (0: a free port); return the port."""
    from prometheus_client import start_http_server

    server, _thread = start_http_server(port, addr=addr)
    return int(server.server_port)
