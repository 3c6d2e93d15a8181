"""Entry point: `aragog-executor` / `python -m aragog.executor`."""

from __future__ import annotations

import asyncio

import grpc

from aragog.common.rpc import TlsError, channel_credentials
from aragog.common.service import serve
from aragog.common.settings import ExecutorSettings
from aragog.common.store import Store, connect
from aragog.executor.service import Executor, ExecutorServicer
from aragog.v1 import executor_pb2, executor_pb2_grpc


async def run(settings: ExecutorSettings) -> None:
    redis = connect(settings.redis_url, settings.redis_max_connections)
    # Keepalive pings detect a half-open StageSession (scheduler host gone) within ~20 s, so
    # its ops fail as UNAVAILABLE and are retried on a new stream instead of timing out.
    # One channel per scheduler address: the active one and its standbys.
    options = [("grpc.keepalive_time_ms", 10_000), ("grpc.keepalive_timeout_ms", 10_000),
               ("grpc.keepalive_permit_without_calls", 1)]
    try:
        creds = channel_credentials(settings)  # mutual TLS to the scheduler, if configured
    except TlsError as e:
        raise SystemExit(f"aragog-executor: {e}") from None
    addrs = [a.strip() for a in settings.scheduler_addr.split(",") if a.strip()]
    channels = [grpc.aio.secure_channel(a, creds, options=options) if creds
                else grpc.aio.insecure_channel(a, options=options) for a in addrs]
    if not channels:
        raise SystemExit("aragog-executor: ARAGOG_SCHEDULER_ADDR names no scheduler address")
    executor = Executor(settings, Store(redis, settings.namespace), channels)
    name = executor_pb2.DESCRIPTOR.services_by_name["ExecutorService"].full_name

    async def start() -> None:
        await redis.ping()
        await executor.start()

    try:
        await serve(
            "executor", settings, settings.listen,
            [lambda s: executor_pb2_grpc.add_ExecutorServiceServicer_to_server(ExecutorServicer(executor), s)],
            [name], start=start, drain=executor.drain,
        )
    finally:
        for channel in channels:
            await channel.close()
        await redis.aclose()


def main() -> None:
    asyncio.run(run(ExecutorSettings.for_service("aragog-executor")))


if __name__ == "__main__":
    main()
