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

pytestmark = [pytest.mark.integration, pytest.mark.same_both_ways]


def scheduled(plan: evaluate.Plan) -> int:
    """Arrivals the plan sends, recomputed from its seeds."""
    n = 0
    for policy in plan.policies:
        rates = plan.rates if policy in plan.swept else plan.rates[:1]
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
    plan = dataclasses.replace(evaluate.SMOKE, families=[ROUTED[0]], workflows=[ROUTED[1]],
                               policies=[*evaluate.SMOKE.policies, "routellm:mf@0.5:stage"])
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
    assert "## Policies side by side" in summary
    published = next(c for c in results["comparisons"])["policies"]["routellm:mf@0.5:stage"]
    assert published["capacity_bound"] > 0 and published["admission_p50_ms"] > 0
    assert os.path.basename(results["plots"][0]) in summary


@pytest.fixture(scope="module")
def mixed_artifacts(artifacts_dir, tmp_path_factory):
    """Artifacts for the mixed smoke's two workflows: the session's (ROUTED) and the other's,
    built here (~1 min: self-refine's space is the smallest)."""
    from aragog.routing.embedding import Embedder
    from aragog.training.build import build_benchmark

    root = tmp_path_factory.mktemp("mixed-artifacts")
    family, routed = ROUTED
    (root / family).mkdir()
    os.symlink(os.path.join(artifacts_dir, family, routed), root / family / routed)
    for wid in evaluate.MIXED_SMOKE.workflows:
        if wid != routed:
            build_benchmark(str(root), family, wid, Embedder(), say=lambda m: None)
    return str(root)


def test_mixed_smoke_interleaves_workflows_on_trace_arrivals(tmp_path, mixed_artifacts,
                                                             monkeypatch):
    monkeypatch.setenv("ARAGOG_ARTIFACTS_DIR", mixed_artifacts)
    plan = dataclasses.replace(evaluate.MIXED_SMOKE, families=[ROUTED[0]])
    assert ROUTED[1] in plan.workflows and len(plan.workflows) == 2
    results = evaluate.evaluate_mixed(plan, str(tmp_path), say=lambda m: None)

    runs = results["runs"]
    # every policy ran every seed's step; every arrival of the window is a record
    assert {(r["policy"], r["seed"]) for r in runs} == {
        (p, plan.seed + s) for p in plan.policies for s in range(plan.seeds)}
    (comp,) = results["comparisons"]
    cap = comp["capacity_bound"]
    rate = evaluate.mixed_rates(plan, cap)[1][0]
    arrivals_n = evaluate.azure_trace.arrivals_needed(rate, plan.step_s)
    total = sum(r["total"] for r in runs)
    assert total == len(plan.policies) * plan.seeds * arrivals_n
    with open(tmp_path / "requests.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == total
    # both workflows were interleaved in one run, and every policy saw the same arrivals
    # and requests in a seed
    for seed in range(plan.seed, plan.seed + plan.seeds):
        sent = [[(r["arrival"], r["request_workflow"], r["item"]) for r in
                 sorted((r for r in rows if r["policy"] == p and r["seed"] == str(seed)),
                        key=lambda r: int(r["index"]))] for p in plan.policies]
        assert len(sent[0]) == arrivals_n and all(s == sent[0] for s in sent[1:])
        assert {w for _, w, _ in sent[0]} == set(plan.workflows)
    for r in runs:
        assert r["coherent"], r["checks"]
        assert r["by_status"]["ok"] > 0 and 0 <= r["accuracy"] <= 1
        assert r["goodput"] is not None  # each request's own workflow's SLO
    pair = comp["aragog_vs"]["per-input:router"]
    assert pair["n_seeds"] == plan.seeds and pair["throughput_ratio_ci"] is not None
    assert comp["policies"]["aragog"]["gap_matched_requests"] > 0
    summary = (tmp_path / "summary.md").read_text()
    assert "EMULATED" in summary and "Azure LLM inference trace" in summary
    assert f"bands_{ROUTED[0]}_mixed.png" in results["plots"]
