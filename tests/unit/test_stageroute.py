"""StageRoute's two halves (aragog.policies.stageroute): the routing LP, the optimistic
bounds, the deployment choice, and admission among the models serving now."""

from __future__ import annotations

import collections

import numpy as np
import pytest
from aragog import policies
from aragog.common.pool import load_pool
from aragog.common.workflow import parse_workflow
from aragog.policies.stageroute import arm_cost, choose_deployment, route_lp, ucb
from aragog.stack import shipped_workflow
from aragog.v1 import common_pb2

S, M, L = "llama3-3b", "llama3-8b", "llama3-70b"


def test_the_routing_lp_spends_the_budget_on_the_best_reward_it_buys():
    # rewards 0.5 / 0.7 / 0.9 at costs 1 / 2 / 10, budget 4: mix the 8B and the 70B so that
    # the expected cost is exactly 4 (p70 = 0.25), which beats the 8B alone (0.7 < 0.75)
    p = route_lp([0.5, 0.7, 0.9], [1.0, 2.0, 10.0], 4.0)
    assert p == pytest.approx([0.0, 0.75, 0.25], abs=1e-9)
    assert route_lp([0.5, 0.7, 0.9], [1.0, 2.0, 10.0], 100.0) == pytest.approx([0, 0, 1])
    assert route_lp([0.5, 0.7], [3.0, 5.0], 1.0) == pytest.approx([1, 0]), "none fits: cheapest"


def test_bounds_are_optimistic_and_shrink_with_outcomes():
    assert ucb(0, 0.0, 10) == 1.0, "an untried model is the most promising"
    few, many = ucb(4, 2.0, 100), ucb(400, 200.0, 1000)
    assert 0.5 < many < few <= 1.0
    assert many == pytest.approx(0.5 + np.sqrt(2 * np.log(1000) / 400))


def test_deployment_keeps_the_best_affordable_and_tries_a_newcomer():
    costs = {S: 1.0, M: 2.0, L: 10.0}
    seen = {S: (500, 250.0), M: (500, 400.0), L: (500, 450.0)}
    assert set(choose_deployment([S, M, L], seen, costs, 4.0, 2)) == {M, L}
    assert choose_deployment([S, M, L], seen, costs, 4.0, 1) in ([M], [L])
    # a model that arrived has no outcome: its bound is 1, so it is deployed and tried
    new = "llama3-next"
    chosen = choose_deployment([S, M, L, new], seen, {**costs, new: 2.0}, 4.0, 2)
    assert new in chosen


def _chain():
    pool = load_pool("llama3")
    return pool, parse_workflow(shipped_workflow("chain3"), pool.names)


def test_admission_binds_one_model_for_every_stage_among_those_serving():
    pool, wf = _chain()
    policy = policies.make("stageroute:1")
    load = {S: common_pb2.ModelLoad(model=S, state="serving"),
            M: common_pb2.ModelLoad(model=M, state="serving"),
            L: common_pb2.ModelLoad(model=L, state="unloaded")}
    outcomes = {S: (1000, 100.0), M: (1000, 900.0), L: (1000, 990.0)}
    picked = collections.Counter()
    for _ in range(50):
        f_r = policy.admit(wf, pool, "q", None, load, outcomes=outcomes)
        assert len(f_r) == 1
        picked[tuple(wf.config_models(int(f_r[0])))] += 1
    assert picked == {(M, M, M): 50}, "the 70B is not serving; the 8B is the better of the rest"


def test_admission_stays_within_the_budget_on_average():
    pool, wf = _chain()
    policy = policies.make("stageroute:0.3")
    outcomes = {S: (1000, 500.0), M: (1000, 700.0), L: (1000, 950.0)}
    costs = {m: arm_cost(pool, wf, m) for m in (S, M, L)}
    spent = [costs[wf.config_models(int(policy.admit(wf, pool, "q", None, {},
                                                      outcomes=outcomes)[0]))[0]]
             for _ in range(400)]
    assert np.mean(spent) <= 0.3 * max(costs.values()) * 1.15
    assert any(c == costs[L] for c in spent), "the budget buys some 70B calls"


@pytest.mark.parametrize("arg", ["0", "1.5", "x"])
def test_a_budget_outside_the_unit_interval_is_refused(arg):
    with pytest.raises(policies.PolicyError, match="budget share"):
        policies.make(f"stageroute:{arg}")
