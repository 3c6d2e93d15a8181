"""A smoke run of the evaluation command against its own stack (EMULATED pool): the report is
produced and its numbers are coherent."""

from __future__ import annotations

import csv
import dataclasses
import json
import os

import pytest
from aragog.loadgen import arrivals, evaluate, report

from tests.conftest import ROUTED

pytestmark = pytest.mark.integration


def scheduled(plan: evaluate.Plan) -> int:
    """Arrivals the plan sends, recomputed from its seeds."""
    n = 0
    for policy in plan.policies:
        rates = plan.rates if policy in evaluate.SWEPT else plan.rates[:1]
        n += sum(
            len(arrivals.poisson(r, plan.step_s, seed=plan.seed + i)) for i, r in enumerate(rates)
        )
        if plan.fluctuating and policy in evaluate.FLUCTUATED:
            n += len(
                arrivals.square_wave(
                    plan.rates[0], plan.rates[-1], plan.fluct_s / 2, plan.fluct_s, plan.seed
                )
            )
    return n * len(plan.workflows) * len(plan.families)


def test_smoke_evaluation_writes_a_coherent_report(tmp_path, artifacts_dir, monkeypatch):
    monkeypatch.setenv("ARAGOG_ARTIFACTS_DIR", artifacts_dir)  # the session's trained router
    plan = dataclasses.replace(evaluate.SMOKE, families=[ROUTED[0]], workflows=[ROUTED[1]])
    results = evaluate.evaluate(plan, str(tmp_path), say=lambda m: None)

    for name in ("results.json", "runs.csv", "requests.csv", "summary.md"):
        assert (tmp_path / name).stat().st_size > 0
    assert results["plots"] and all(
        (tmp_path / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in results["plots"]
    )
    assert json.loads((tmp_path / "results.json").read_text())["runs"]

    runs = results["runs"]
    assert sum(r["total"] for r in runs) == scheduled(plan)  # every request accounted for
    with open(tmp_path / "requests.csv", newline="") as f:
        assert sum(1 for _ in csv.DictReader(f)) == scheduled(plan)
    for r in runs:
        assert r["coherent"], r["checks"]
        assert r["throughput"] <= report.offered_bound(r["offered_rate"], r["duration_s"])
        assert r["by_status"]["ok"] > 0
        assert 0 <= r["accuracy"] <= 1
    policies = {r["policy"] for r in runs}
    assert policies == set(plan.policies)
    summary = (tmp_path / "summary.md").read_text()
    assert "EMULATED" in summary and "maximum serving throughput" in summary
    assert os.path.basename(results["plots"][0]) in summary
