"""The life of a service process: settings, logging, metrics, gRPC server, SIGTERM drain."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from collections.abc import Awaitable, Callable, Iterable

import grpc
from aragog.common import tracing
from aragog.common.logs import configure_logging
from aragog.common.rpc import (
    TlsError,
    create_server,
    install_sigterm,
    server_credentials,
    set_serving,
    start_metrics,
)
from aragog.common.settings import BaseSettings
from grpc_health.v1 import health_pb2

LIVENESS = "liveness"
EXIT_WATCHDOG_S = 5.0  # after "stopped": the process has exited by then, whatever hangs


async def serve(
    name: str,
    settings: BaseSettings,
    listen: str,
    register: Iterable[Callable[[grpc.aio.Server], None]],
    service_names: list[str],
    start: Callable[[], Awaitable[None]] | None = None,
    drain: Callable[[], Awaitable[None]] | None = None,
    end_calls_after_drain: bool = False,
) -> None:
    """Run one service until SIGTERM: start its work, serve, then drain and stop with grace.

    `start` runs before the port reports SERVING (connect to Redis, load state);
    `drain` runs after new RPCs are refused, within shutdown_grace_s.
    `end_calls_after_drain`: the calls still open once `drain` returned end at once rather
    than at the end of the grace (the scheduler: its clients' long-lived streams would
    otherwise wait the whole grace for a scheduler that no longer places anything, instead
    of reconnecting to the next one).
    """
    log = configure_logging(name, settings.log_level)
    if tracing.setup(name, getattr(settings, "otel_endpoint", ""),
                     getattr(settings, "otel_insecure", True)):
        log.info("tracing", endpoint=settings.otel_endpoint)
    metrics_port = start_metrics(settings.metrics_port, settings.metrics_address)
    try:
        credentials = server_credentials(settings, mutual=name != "router")
    except TlsError as e:
        raise SystemExit(f"aragog-{name}: {e}") from None
    server, port, health_servicer = create_server(listen, register, service_names, credentials)
    # grpc's health servicer says SERVING for "" (the whole server) from the start: a service
    # still starting, or a standby scheduler, must not look ready to a probe of ""
    await set_serving(health_servicer, service_names, False)
    # "liveness": the process runs (a standby scheduler is alive without serving); what
    # Kubernetes' startup and liveness probes of a scheduler ask
    await health_servicer.set(LIVENESS, health_pb2.HealthCheckResponse.SERVING)
    await server.start()
    stop = asyncio.Event()
    install_sigterm(stop)
    try:
        if start is not None:  # it may wait long (a standby scheduler): SIGTERM ends the wait
            starting = asyncio.ensure_future(start())
            stopped = asyncio.ensure_future(stop.wait())
            await asyncio.wait({starting, stopped}, return_when=asyncio.FIRST_COMPLETED)
            stopped.cancel()
            if not starting.done():
                starting.cancel()
                await asyncio.gather(starting, return_exceptions=True)
                log.info("stopping_before_serving")
                return
            starting.result()
        await set_serving(health_servicer, service_names, True)
        log.info("serving", port=port, metrics_port=metrics_port)
        await stop.wait()
        log.info("stopping", grace_s=settings.shutdown_grace_s)
        await set_serving(health_servicer, service_names, False)
    finally:
        stopping = asyncio.ensure_future(server.stop(settings.shutdown_grace_s))
        if drain is not None:
            try:
                await asyncio.wait_for(drain(), settings.shutdown_grace_s)
            except TimeoutError:
                log.warning("drain_timeout")
            if end_calls_after_drain:
                await server.stop(0)
        await stopping
        log.info("stopped")
        tracing.flush()
        # Drained and stopped: what is left is the interpreter's own shutdown, where a race
        # in gRPC's asyncio poller can hang asyncio.run for good (grpc/grpc#40989; seen once
        # in CI: an executor logged "stopped" and was still alive 30 s later). A stopped
        # service never outlives its drain by more than EXIT_WATCHDOG_S because of it.
        failing = sys.exc_info()[1] is not None  # leaving with an error: exit with one
        watchdog = threading.Timer(EXIT_WATCHDOG_S, os._exit, (1 if failing else 0,))
        watchdog.daemon = True
        watchdog.start()
