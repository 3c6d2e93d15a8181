"""The mixed evaluation's plan: its offered rates, which steps each policy runs, and which
held-out request each trace arrival sends."""

import dataclasses

import numpy as np
import pytest
from aragog.emulation.generate import benchmark
from aragog.loadgen import azure_trace, evaluate
from aragog.loadgen.azure_trace import Window

BOUND = {"aragog": 2.0, "per-input": 4.0, "per-input:router": 2.0, "per-workflow": 1.0,
         "largest": 0.8, "cheapest": 9.0}


def test_rates_are_shares_of_the_highest_accuracy_keeping_bound():
    plan = dataclasses.replace(evaluate.MIXED, policies=list(BOUND), shares=(0.5, 1.0, 4.0))
    ref, rates = evaluate.mixed_rates(plan, {k: np.float64(v) for k, v in BOUND.items()})
    assert ref == 4.0  # cheapest keeps no accuracy: its 9/s does not count
    assert rates == [2.0, 4.0, plan.max_rate]
    assert all(type(r) is float for r in rates)
    with pytest.raises(ValueError, match="no capacity bound"):
        evaluate.mixed_rates(plan, {"cheapest": 9.0})


def test_a_policy_stops_after_its_first_step_past_its_bound():
    plan = dataclasses.replace(evaluate.MIXED, policies=list(BOUND), shares=(0.25, 0.5, 1.0),
                               stop_over_bound=1.15, start_under_bound=0.0)
    rates = evaluate.mixed_rates(plan, BOUND)[1]
    assert rates == [1.0, 2.0, 4.0]
    ran = {p: [r for r in rates if evaluate.runs_policy(plan, p, r, BOUND)] for p in BOUND}
    assert ran["largest"] == [1.0]  # 1.0 >= 1.15 x 0.8: overloaded already
    assert ran["per-workflow"] == [1.0, 2.0]  # 1.0 < 1.15: one more step, 2.0 overloads it
    assert ran["aragog"] == [1.0, 2.0, 4.0]
    assert ran["cheapest"] == ran["per-input"] == rates
    every = dataclasses.replace(plan, stop_over_bound=0.0)
    assert all(evaluate.runs_policy(every, "largest", r, BOUND) for r in rates)
    # and starts at its first step offering at least half its bound (else its top step)
    late = dataclasses.replace(plan, start_under_bound=0.5)
    ran = {p: [r for r in rates if evaluate.runs_policy(late, p, r, BOUND)] for p in BOUND}
    assert ran["aragog"] == [1.0, 2.0, 4.0] and ran["per-input"] == [2.0, 4.0]
    assert ran["cheapest"] == [4.0]  # no step reaches 4.5: the top one
    assert ran["largest"] == [1.0]


def test_item_draws_are_seeded_per_workflow():
    d0 = evaluate.item_draws(["voting", "self-refine"], 0)
    assert np.array_equal(d0["voting"], evaluate.item_draws(["voting"], 0)["voting"])
    assert not np.array_equal(d0["voting"], evaluate.item_draws(["voting"], 1)["voting"])
    assert sorted(d0["voting"].tolist()) == list(range(len(benchmark("voting").split("test"))))


def test_each_arrival_sends_its_workflows_next_drawn_item():
    win = Window(np.array([0.0, 0.1, 0.2, 0.3, 0.4]),
                 ["voting", "self-refine", "voting", "voting", "self-refine"], 0, 1.0)
    draws = {"voting": np.array([5, 2, 9]), "self-refine": np.array([3, 1])}
    workload, items = evaluate.mixed_workload(win, draws)
    assert items == [("voting", 5), ("self-refine", 3), ("voting", 2), ("voting", 9),
                     ("self-refine", 1)]
    held = benchmark("voting").split("test")
    assert workload[2] == ("voting", held[2].input, held[2].answer)


def test_the_mixed_plans_run_on_the_real_trace():
    trace = azure_trace.load()
    for plan in (evaluate.MIXED, evaluate.MIXED_SMOKE):
        assert plan.mixed and plan.seeds >= 2 and plan.shares
        n = azure_trace.arrivals_needed(plan.max_rate, plan.step_s)
        for seed in range(plan.seeds):
            start = azure_trace.window_start(trace, n, seed, plan.workflows)
            win = azure_trace.window(trace, start, n, plan.max_rate, plan.workflows)
            assert set(win.workflows) <= set(plan.workflows)
    assert evaluate.MIXED.seeds >= 3 and set(evaluate.MIXED.policies) == set(
        evaluate.MIXED_POLICIES)
