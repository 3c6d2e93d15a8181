"""The Grafana dashboard's queries name metrics the services really export."""

from __future__ import annotations

import json
import re
from pathlib import Path

DASHBOARD = Path(__file__).resolve().parents[2] / "infra" / "grafana" / "aragog-dashboard.json"
SUFFIXES = ("_bucket", "_count", "_sum", "_total")


def exported() -> set[str]:
    """Every sample name the four services' metrics produce (importing registers them)."""
    import aragog.common.rpc  # noqa: F401
    import aragog.executor.service  # noqa: F401
    import aragog.load_monitor.service  # noqa: F401
    import aragog.router.service  # noqa: F401
    import aragog.scheduler.service  # noqa: F401
    from prometheus_client import REGISTRY

    names = set()
    for family in REGISTRY.collect():
        names.add(family.name)
        names.update(family.name + s for s in SUFFIXES)
    return names


def test_every_aragog_metric_in_the_dashboard_exists():
    panels = json.loads(DASHBOARD.read_text())["panels"]
    used = {
        m for p in panels for t in p["targets"] for m in re.findall(r"aragog_[a-z_]+", t["expr"])
    }
    assert len(used) >= 10
    missing = sorted(used - exported())
    assert not missing, f"dashboard queries metrics no service exports: {missing}"


def test_the_new_histograms_are_there():
    names = exported()
    for m in (
        "aragog_request_seconds_bucket",
        "aragog_executor_queue_wait_seconds_bucket",
        "aragog_router_f_size_bucket",
        "aragog_grpc_server_handled_total",
    ):
        assert m in names, m
