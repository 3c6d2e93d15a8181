"""Confidence intervals over seeds: the arithmetic, and a multi-seed mixed-workload report
built from synthetic records whose figures are hand-computable."""

import json
import math

import numpy as np
import pytest
from aragog.loadgen.client import RequestRecord
from aragog.loadgen.report import (
    MIXED,
    Run,
    Settings,
    mean_ci,
    ratio_ci,
    resolved,
    t_quantile,
    verdict,
    write_report,
)

T975_2 = 4.302652729911275  # Student t, 97.5% quantile, 2 degrees of freedom (tables)
T975_1 = 12.706204736174707


def test_t_quantiles_match_the_tables():
    assert t_quantile(0.95, 2) == pytest.approx(T975_2)
    assert t_quantile(0.95, 1) == pytest.approx(T975_1)
    assert t_quantile(0.90, 2) == pytest.approx(2.919985580355516)
    with pytest.raises(ValueError):
        t_quantile(0.95, 0)


def test_mean_ci_by_hand():
    m, lo, hi = mean_ci([1.0, 2.0, 3.0])
    assert m == 2.0
    half = T975_2 * 1.0 / math.sqrt(3)  # sd of 1, 2, 3 is 1
    assert (lo, hi) == pytest.approx((2 - half, 2 + half))
    assert mean_ci([5.0, None]) == (5.0, None, None)  # one value: no interval
    assert mean_ci([None]) == (None, None, None)
    assert mean_ci([4.0, 4.0, 4.0])[1:] == (4.0, 4.0)


def test_ratio_ci_pairs_by_seed_on_logs():
    num = {0: 3.0, 1: 4.0, 2: 5.0, 3: 9.0}
    den = {0: 2.0, 1: 2.0, 2: 2.0}  # seed 3 has no baseline: left out
    r = ratio_ci(num, den)
    logs = np.log([1.5, 2.0, 2.5])
    half = T975_2 * logs.std(ddof=1) / math.sqrt(3)
    assert r["n"] == 3 and r["left_out"] == ["3"]
    assert r["ratio"] == pytest.approx(math.exp(logs.mean()))  # geometric mean of the ratios
    assert r["ci"] == pytest.approx([math.exp(logs.mean() - half), math.exp(logs.mean() + half)])
    assert r["by_seed"] == {"0": 1.5, "1": 2.0, "2": 2.5}
    # a zero (nothing served) has no log: left out, not turned into an infinite ratio
    z = ratio_ci({0: 0.0, 1: 2.0}, {0: 1.0, 1: 1.0})
    assert z["n"] == 1 and z["ratio"] == 2.0 and z["ci"] is None and z["left_out"] == ["0"]


def test_resolved_and_verdict():
    assert resolved([1.1, 1.5]) and resolved([0.5, 0.9]) and not resolved([0.9, 1.2])
    assert resolved(None) is None
    assert verdict(1.6, [1.5, 1.7], 1.43) == "met"
    assert verdict(1.3, [1.2, 1.4], 1.43) == "missed"
    assert verdict(1.5, [1.3, 1.7], 1.43) == "undecided"
    assert verdict(1.5, None, 1.43) == "met" and verdict(1.0, None, 1.43) == "missed"
    assert verdict(None, None, 1.43) == "n/a"


# --- a mixed, multi-seed report ---------------------------------------------------------

T0 = 1_700_000_000.0
FAM = "llama3"
D = 10.0
WFS = ("voting", "self-refine")


def rec(k, policy, arrival, latency, workflow, correct=True, status="ok"):
    sent = T0 + arrival
    return RequestRecord(
        request_id=f"{policy}-{arrival:.3f}-{k}", workflow=workflow, policy=policy,
        arrival=arrival, sent_at=sent, completed_at=sent + latency, latency_s=latency,
        status=status, answer="x", expected="x",
        correct=correct if status == "ok" else False, index=k)


def mixed_run(policy, seed, rate, served, latency, wrong_items=()):
    """`rate` x D arrivals alternating voting / self-refine; `served` of them ok (the rest
    timed out), all within the window, so throughput = served / D. Arrival k is item k of its
    workflow's draw; items in `wrong_items` ((workflow, item)) are answered wrong."""
    n = int(rate * D)
    recs, items = [], []
    for k in range(n):
        wf = WFS[k % 2]
        item = (wf, (k // 2 + 7 * seed) % 50)
        items.append(item)
        status = "ok" if k < served else "timeout"
        recs.append(rec(k, policy, k * (D - 1) / n, latency if status == "ok" else 0.5, wf,
                        correct=item not in wrong_items, status=status))
    return Run(FAM, MIXED, policy, "sweep", rate, D, recs, seed=seed, items=items,
               arrivals="azure-trace (synthetic)", start_wall=T0)


# max throughput per seed: aragog 6, 7, 8 req/s; per-input:router 4, 4, 5 req/s
SERVED = {"aragog": {0: 60, 1: 70, 2: 80}, "per-input:router": {0: 40, 1: 40, 2: 50}}


@pytest.fixture(scope="module")
def mixed_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("mixed")
    runs = []
    for seed in (0, 1, 2):
        for policy, served in SERVED.items():
            runs.append(mixed_run(policy, seed, 4.0, 40, 0.2))  # below saturation
            runs.append(mixed_run(policy, seed, 10.0, served[seed], 0.3 if policy == "aragog"
                                  else 0.6, wrong_items={("voting", 7 * seed % 50)}))
        runs.append(mixed_run("largest", seed, 4.0, 20, 0.9))
    # the largest's profiled answers: voting item 0 wrong, everything else right
    largest = {(FAM, w): {i: not (w == "voting" and i == 0) for i in range(50)} for w in WFS}
    settings = Settings(
        idle_latency_s={(FAM, "voting"): 0.1, (FAM, "self-refine"): 0.05},
        capacity_bound={(FAM, MIXED): {"aragog": 8.0, "per-input:router": 5.0,
                                       "largest": 2.0}},
        largest_correct=largest, throughput_targets={"per-input:router": 1.43},
        p50_reduction_target=None, bound_share_target=0.85, accuracy_gap_points=1.0)
    res = write_report(runs, settings, str(out), title="Synthetic mixed report")
    return out, runs, res


def test_per_seed_maxima_and_their_interval(mixed_report):
    _, _, res = mixed_report
    curves = {c["policy"]: c for c in res["curves"]}
    a = curves["aragog"]
    assert [s["max_throughput"] for s in a["seeds"]] == pytest.approx([6.0, 7.0, 8.0])
    assert a["max_throughput"] == pytest.approx(7.0)
    assert a["max_throughput_ci"] == pytest.approx([7 - T975_2 / math.sqrt(3),
                                                    7 + T975_2 / math.sqrt(3)])
    top = next(p for p in a["points"] if p["offered_rate"] == 10.0)
    assert top["n"] == 3 and top["throughput"] == pytest.approx(7.0)
    assert top["throughput_ci"] == pytest.approx(a["max_throughput_ci"])


def test_pair_ratio_ci_is_paired_by_seed(mixed_report):
    _, _, res = mixed_report
    (comp,) = res["comparisons"]
    assert comp["workflow"] == MIXED
    p = comp["aragog_vs"]["per-input:router"]
    expected = ratio_ci({0: 6.0, 1: 7.0, 2: 8.0}, {0: 4.0, 1: 4.0, 2: 5.0})
    assert p["throughput_ratio"] == pytest.approx(expected["ratio"])
    assert p["throughput_ratio_ci"] == pytest.approx(expected["ci"])
    assert p["n_seeds"] == 3
    # p50 at the highest rate both ran (10/s): 0.3 s against 0.6 s in every seed
    assert p["p50_rate"] == 10.0 and p["p50_reduction"] == pytest.approx(0.5)
    assert p["p50_reduction_ci"] == pytest.approx([0.5, 0.5])


def test_goodput_uses_each_requests_own_workflow_slo(mixed_report):
    _, runs, res = mixed_report
    # SLO = 5 x idle: voting 0.5 s, self-refine 0.25 s; at 0.3 s only voting meets it
    s = next(x for x in res["runs"] if x["policy"] == "aragog" and x["offered_rate"] == 10.0
             and x["seed"] == 0)
    ok_voting = sum(1 for k in range(60) if k % 2 == 0)
    assert s["goodput"] == pytest.approx(ok_voting / D)
    assert s["requests_by_workflow"] == {"voting": 50, "self-refine": 50}
    low = next(x for x in res["runs"] if x["policy"] == "aragog" and x["offered_rate"] == 4.0
               and x["seed"] == 0)
    assert low["goodput"] == pytest.approx(40 / D)  # 0.2 s: within both SLOs


def test_gap_to_largest_matches_workflow_and_item(mixed_report):
    _, _, res = mixed_report
    (comp,) = res["comparisons"]
    assert comp["gap_reference"] == "profile"
    gaps = []
    for seed in (0, 1, 2):
        # aragog's answered items of this seed; one voting item (7*seed % 50) answered wrong
        # in the 10/s step, right in the 4/s step (averaged per item); the largest is wrong
        # on voting item 0 only
        answered: dict[tuple[str, int], list[bool]] = {}
        for rate, served in ((4.0, 40), (10.0, SERVED["aragog"][seed])):
            for k in range(min(served, int(rate * D))):
                item = (WFS[k % 2], (k // 2 + 7 * seed) % 50)
                wrong = rate == 10.0 and item == ("voting", 7 * seed % 50)
                answered.setdefault(item, []).append(not wrong)
        diffs = [np.mean(v) - (0.0 if item == ("voting", 0) else 1.0)
                 for item, v in answered.items()]
        gaps.append(100 * np.mean(diffs))
    a = comp["policies"]["aragog"]
    m, lo, hi = mean_ci(gaps)
    assert a["gap_to_largest_points"] == pytest.approx(m)
    assert a["gap_to_largest_ci"] == pytest.approx([lo, hi])


def test_targets_carry_intervals_and_bound_shares(mixed_report):
    out, _, res = mixed_report
    t = {x["target"]: x for x in res["targets"]}
    tp = t["max throughput >= 1.43x per-input:router"]
    assert tp["ci"] == pytest.approx(ratio_ci({0: 6.0, 1: 7.0, 2: 8.0},
                                              {0: 4.0, 1: 4.0, 2: 5.0})["ci"])
    assert tp["verdict"] == verdict(tp["value"], tp["ci"], 1.43)
    share = t["aragog max throughput >= 85% of its capacity bound"]
    assert share["value"] == pytest.approx(7.0 / 8.0)
    assert share["ci"] == pytest.approx([(7 - T975_2 / math.sqrt(3)) / 8,
                                         (7 + T975_2 / math.sqrt(3)) / 8])
    assert share["verdict"] == "undecided" and share["offered_enough"]
    # largest's bound is 2 req/s and it served 2/s in every seed: met, the interval [1, 1]
    big = t["largest max throughput >= 85% of its capacity bound"]
    assert big["value"] == pytest.approx(1.0) and big["verdict"] == "met"
    acc = t["accuracy within 1 points of largest"]
    assert acc["ci"] is not None
    md = (out / "summary.md").read_text()
    assert "aragog / per-input:router" in md and "undecided" in md
    assert json.loads((out / "results.json").read_text())["targets"] == json.loads(
        json.dumps(res["targets"]))


def test_multi_seed_plots(mixed_report):
    out, _, res = mixed_report
    for name in (f"bands_{FAM}_{MIXED}.png", f"ratios_{FAM}_{MIXED}.png",
                 f"bounds_{FAM}_{MIXED}.png"):
        assert name in res["plots"]
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
