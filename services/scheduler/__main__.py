"""Entry point: `aragog-scheduler` / `python -m aragog.scheduler`."""

from __future__ import annotations

import asyncio
import sys

from aragog.common.pool import load_pool
from aragog.common.service import serve
from aragog.common.settings import SchedulerSettings
from aragog.common.store import Store, connect
from aragog.v1 import scheduler_pb2, scheduler_pb2_grpc


async def run(settings: SchedulerSettings) -> None:
    from aragog.scheduler.service import Scheduler
    from aragog.scheduler.servicer import SchedulerServicer

    redis = connect(settings.redis_url, settings.redis_max_connections)
    scheduler = Scheduler(settings, Store(redis, settings.namespace), load_pool(settings.pool_file or None))
    name = scheduler_pb2.DESCRIPTOR.services_by_name["SchedulerService"].full_name
    try:
        await serve(
            "scheduler", settings, settings.listen,
            [lambda s: scheduler_pb2_grpc.add_SchedulerServiceServicer_to_server(SchedulerServicer(scheduler), s)],
            [name], start=scheduler.start, drain=scheduler.stop, end_calls_after_drain=True,
        )
    finally:
        await redis.aclose()


def main() -> None:
    import gc

    from aragog.scheduler_ext import require_extension

    # The scheduler keeps tens of thousands of requests warm between their stages; with the
    # default threshold (700) the cyclic GC rescans them many times a second under load.
    gc.set_threshold(50_000, 20, 20)

    try:
        require_extension()
    except RuntimeError as e:
        sys.exit(f"aragog-scheduler: {e}")
    asyncio.run(run(SchedulerSettings.for_service("aragog-scheduler")))


if __name__ == "__main__":
    main()
