"""Load-monitor: per-model occupancy, throughput and latency, kept in Redis.

Each interval it scrapes Triton's Prometheus endpoint (inference counts and durations,
pending requests), reads the executors' in-flight counts and the scheduler's leases from
Redis, and writes one versioned, timestamped LoadSnapshot. Throughput and latency are
deltas over the interval; each model is compared with its profiled throughput at the
observed occupancy. If Triton cannot be scraped the snapshot keeps the Redis-side counts
and zero rates, and a warning is logged (the scheduler never depends on this service).
"""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections import defaultdict

import structlog
from prometheus_client import Counter, Gauge
from prometheus_client.parser import text_string_to_metric_families

from aragog.common.pool import PoolSpec
from aragog.common.settings import LoadMonitorSettings
from aragog.common.store import Store
from aragog.v1 import common_pb2, load_monitor_pb2, load_monitor_pb2_grpc

log = structlog.get_logger("load_monitor")
UTILIZATION = Gauge("aragog_load_utilization", "In-flight stages / capacity", ["model"])
SCRAPE_ERRORS = Counter("aragog_load_scrape_errors_total", "Failed Triton metric scrapes")

TRITON_COUNTERS = {
    "nv_inference_count": "count",
    "nv_inference_request_duration_us": "request_us",
    "nv_inference_queue_duration_us": "queue_us",
    "nv_inference_pending_request_count": "pending",
}


def parse_triton_metrics(text: str) -> dict[str, dict[str, float]]:
    """model -> {count, request_us, queue_us, pending}, summed over versions."""
    out: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = TRITON_COUNTERS.get(sample.name) or TRITON_COUNTERS.get(
                sample.name.removesuffix("_total")
            )
            model = sample.labels.get("model")
            if key and model:
                out[model][key] += sample.value
    return out


class LoadMonitor:
    def __init__(self, settings: LoadMonitorSettings, store: Store):
        self.settings = settings
        self.store = store
        self.snapshot = common_pb2.LoadSnapshot()
        self._changed = asyncio.Condition()
        self._previous: tuple[float, dict[str, dict[str, float]]] | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.snapshot = await self.store.load_snapshot() or self.snapshot
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()

    async def _loop(self) -> None:
        while True:
            try:
                await self.observe()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("observe_failed")
            await asyncio.sleep(self.settings.interval_s)

    def _scrape(self) -> str:
        with urllib.request.urlopen(self.settings.triton_metrics_url, timeout=self.settings.rpc_timeout_s) as r:
            return r.read().decode()

    async def observe(self) -> common_pb2.LoadSnapshot:
        pool: PoolSpec | None = await self.store.get_pool()
        if pool is None:
            return self.snapshot
        now = time.time()
        try:
            triton = parse_triton_metrics(await asyncio.to_thread(self._scrape))
        except OSError as e:
            SCRAPE_ERRORS.inc()
            log.warning("triton_scrape_failed", url=self.settings.triton_metrics_url, error=str(e))
            triton = {}
        leased_by_id, inflight = await self.store.cluster_counts()
        states = await self.store.model_states()
        prev = self._previous
        models = []
        for i, m in enumerate(pool.models):
            cur = triton.get(m.name, {})
            dt = now - prev[0] if prev else 0.0
            before = prev[1].get(m.name, {}) if prev else {}
            d_count = cur.get("count", 0.0) - before.get("count", 0.0)
            d_req = cur.get("request_us", 0.0) - before.get("request_us", 0.0)
            d_queue = cur.get("queue_us", 0.0) - before.get("queue_us", 0.0)
            busy = inflight.get(m.name, 0)
            curve = m.throughput_curve()
            profiled = curve[min(busy, len(curve) - 1)] / pool.time_scale if pool.time_scale else 0.0
            load = common_pb2.ModelLoad(
                model=m.name,
                leased=leased_by_id.get(i, 0),
                in_flight=busy,
                capacity=m.capacity,
                triton_pending=cur.get("pending", 0.0),
                throughput_rps=d_count / dt if dt > 0 and d_count >= 0 else 0.0,
                latency_ms=d_req / d_count / 1000.0 if d_count > 0 else 0.0,
                queue_ms=d_queue / d_count / 1000.0 if d_count > 0 else 0.0,
                utilization=busy / m.capacity,
                profiled_throughput_rps=profiled,
                state=states.get(m.name, "serving"),
            )
            UTILIZATION.labels(m.name).set(load.utilization)
            models.append(load)
        self._previous = (now, triton) if triton else prev
        snap = await self.store.put_load(now, models)
        async with self._changed:
            self.snapshot = snap
            self._changed.notify_all()
        return snap

    async def wait_newer(self, version: int) -> common_pb2.LoadSnapshot:
        async with self._changed:
            await self._changed.wait_for(lambda: self.snapshot.version > version)
            return self.snapshot


class LoadMonitorServicer(load_monitor_pb2_grpc.LoadMonitorServiceServicer):
    def __init__(self, monitor: LoadMonitor):
        self.m = monitor

    async def GetLoad(self, request, context):  # noqa: N802
        return load_monitor_pb2.GetLoadResponse(snapshot=self.m.snapshot)

    async def WatchLoad(self, request, context):  # noqa: N802
        version = request.after_version
        if version == 0 and self.m.snapshot.version:
            version = self.m.snapshot.version - 1
        while True:
            snap = await self.m.wait_newer(version)
            version = snap.version
            yield load_monitor_pb2.WatchLoadResponse(snapshot=snap)
