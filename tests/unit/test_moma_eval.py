"""aragog-eval --moma's bookkeeping: the held-out mix and the summary (the live run itself is
`make eval-moma`; the front door is tested in tests/integration/test_front_door.py)."""

from __future__ import annotations

import pytest
from aragog import workflows
from aragog.emulation.generate import benchmark
from aragog.loadgen import moma_eval
from aragog.router.http import CHAT_WORKFLOW


def test_the_mix_leaves_out_what_the_intent_was_tuned_on():
    st = moma_eval.Settings(per_workflow=3, mmlu=4)
    mix = moma_eval.held_out_mix(st)
    assert len(mix) == 3 * len(workflows.BENCHMARKED) + 4
    for wid in workflows.BENCHMARKED:
        tuned = {it.input for it in benchmark(wid).split("test")[:moma_eval.TUNED_ON]}
        train = {it.input for it in benchmark(wid).split("train")}
        ours = [text for right, text, _ in mix if right == wid]
        assert len(ours) == 3 and not (set(ours) & (tuned | train))
    assert [right for right, _, expected in mix[-4:]] == [CHAT_WORKFLOW] * 4
    assert all(expected is None for _, _, expected in mix[-4:])  # no graded answer here


def row(way, named, right, routed, correct, gpu):
    return {"way": way, "named": named, "item": 0, "right_workflow": right, "routed": routed,
            "route": "", "status": "ok", "correct": correct, "gpu_seconds": gpu, "models": "",
            "error": ""}


def test_the_summary_scores_routes_accuracy_and_cost_against_the_largest():
    door, named = moma_eval.way_name("moma", False), moma_eval.way_name("moma", True)
    rows = [row(door, False, "voting", "voting", True, 1.0),
            row(door, False, "voting", CHAT_WORKFLOW, False, 0.5),  # a missed intent
            row(door, False, CHAT_WORKFLOW, CHAT_WORKFLOW, None, 2.0),
            row(named, True, "voting", "voting", True, 1.0),
            row(named, True, "voting", "voting", True, 1.0),
            row(named, True, CHAT_WORKFLOW, CHAT_WORKFLOW, None, 2.0),
            row("largest", True, "voting", "voting", True, 3.0),
            row("largest", True, "voting", "voting", True, 3.0),
            row("largest", True, CHAT_WORKFLOW, CHAT_WORKFLOW, None, 2.0)]
    s = moma_eval.summarise(rows, [None] * 3)
    d = s["ways"][door]
    assert d["intent_accuracy"] == pytest.approx(2 / 3)
    assert d["intent_by_workflow"] == {CHAT_WORKFLOW: 1.0, "voting": 0.5}
    assert d["confusion"] == {f"{CHAT_WORKFLOW} -> {CHAT_WORKFLOW}": 1,
                              f"voting -> {CHAT_WORKFLOW}": 1, "voting -> voting": 1}
    assert d["accuracy_benchmarks"] == 0.5 and d["gpu_s_benchmarks"] == 0.75
    assert d["gpu_s_vs_largest"] == pytest.approx((3.5 / 3) / (8 / 3))
    assert d["accuracy_points_vs_largest"] == pytest.approx(-50.0)
    assert s["ways"][named]["accuracy_points_vs_largest"] == pytest.approx(0.0)
    assert "intent_accuracy" not in s["ways"]["largest"]
    assert any("moma (front door)" in line for line in moma_eval.report_lines(
        s, moma_eval.Settings()))
