"""Entry point: `aragog-load-monitor` / `python -m aragog.load_monitor`."""

from __future__ import annotations

import asyncio

from aragog.common.service import serve
from aragog.common.settings import LoadMonitorSettings
from aragog.common.store import Store, connect
from aragog.load_monitor.service import LoadMonitor, LoadMonitorServicer
from aragog.v1 import load_monitor_pb2, load_monitor_pb2_grpc


async def run(settings: LoadMonitorSettings) -> None:
    redis = connect(settings.redis_url, settings.redis_max_connections)
    monitor = LoadMonitor(settings, Store(redis, settings.namespace))
    name = load_monitor_pb2.DESCRIPTOR.services_by_name["LoadMonitorService"].full_name

    async def start() -> None:
        await redis.ping()
        await monitor.start()

    try:
        await serve(
            "load-monitor", settings, settings.listen,
            [lambda s: load_monitor_pb2_grpc.add_LoadMonitorServiceServicer_to_server(LoadMonitorServicer(monitor), s)],
            [name], start=start, drain=monitor.stop,
        )
    finally:
        await redis.aclose()


def main() -> None:
    asyncio.run(run(LoadMonitorSettings.for_service("aragog-load-monitor")))


if __name__ == "__main__":
    main()
