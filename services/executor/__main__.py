"""Entry point: `aragog-executor` / `python -m aragog.executor`."""

from __future__ import annotations

import asyncio

import grpc

from aragog.common.service import serve
from aragog.common.settings import ExecutorSettings
from aragog.common.store import Store, connect
from aragog.executor.service import Executor, ExecutorServicer
from aragog.v1 import executor_pb2, executor_pb2_grpc


async def run(settings: ExecutorSettings) -> None:
    redis = connect(settings.redis_url, settings.redis_max_connections)
    channel = grpc.aio.insecure_channel(settings.scheduler_addr)
    executor = Executor(settings, Store(redis, settings.namespace), channel)
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
        await channel.close()
        await redis.aclose()


def main() -> None:
    asyncio.run(run(ExecutorSettings.from_env()))


if __name__ == "__main__":
    main()
