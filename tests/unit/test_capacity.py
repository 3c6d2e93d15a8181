"""The fluid capacity bound on hand-computable cases."""

import dataclasses

import numpy as np
import pytest
from aragog.common.pool import load_pool
from aragog.common.workflow import parse_workflow
from aragog.loadgen import evaluate
from aragog.loadgen.capacity import bound_fixed, bound_spread, load_matrix
from aragog.routing.space import build
from aragog.stack import shipped_workflow

# configuration 0 puts one unit on model 0, configuration 1 one unit on model 1,
# configuration 2 two units on model 0
LOAD = np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 0.0]])


def test_bound_at_arrival_is_limited_by_the_busiest_model():
    assert bound_fixed(LOAD, np.array([0, 0])) == pytest.approx(1.0)
    assert bound_fixed(LOAD, np.array([0, 1])) == pytest.approx(2.0)
    assert bound_fixed(LOAD, np.array([2, 1])) == pytest.approx(1.0)


def test_spreading_balances_the_models_within_each_requests_set():
    both = np.array([0, 1])
    assert bound_spread(LOAD, [both, both]) == pytest.approx(2.0)
    # the first request can only use model 0, so the second goes wholly to model 1
    assert bound_spread(LOAD, [np.array([0]), both]) == pytest.approx(2.0)
    assert bound_spread(LOAD, [np.array([2]), both]) == pytest.approx(1.0)
    # a larger set never lowers the bound
    assert bound_spread(LOAD, [both, both]) >= bound_fixed(LOAD, np.array([0, 1]))


def test_load_matrix_prices_each_stage_on_its_model_per_gpu():
    pool = load_pool()
    space = build(parse_workflow(shipped_workflow("chain3"), pool.names), pool)
    load = load_matrix(space, pool)
    largest = pool.names.index("llama3-70b")
    m = pool.model("llama3-70b")
    per_stage = [m.gpu_seconds(256, s.output_tokens) * pool.time_scale
                 / (m.instances * m.tensor_parallel) for s in space.workflow.llm_stages]
    assert load[space.largest, largest] == pytest.approx(sum(per_stage))
    assert load[space.largest].sum() == pytest.approx(sum(per_stage))


def test_the_sweep_reaches_past_the_highest_capacity_bound():
    plan = evaluate.FULL
    bound = {"aragog": 2.0, "per-input": 5.0, "per-workflow": 1.0, "cheapest": 40.0}
    top = plan.top_over_bound * 5.0  # cheapest is not swept: its bound does not count
    rates = evaluate.sweep_rates(plan, {k: np.float64(v) for k, v in bound.items()})
    assert rates == [round(f * top, 1) for f in plan.sweep_of_bound]
    assert all(type(r) is float for r in rates)  # numpy scalars broke the report's JSON
    assert evaluate.sweep_rates(plan, {"per-input": 100.0})[-1] == plan.max_rate
    assert evaluate.sweep_rates(plan, None) == plan.rates  # no artifacts: the fixed rates
    fixed = dataclasses.replace(plan, sweep_of_bound=())
    assert evaluate.sweep_rates(fixed, bound) == plan.rates


def test_a_mix_of_workflows_is_one_program_weighted_by_shares():
    from aragog.loadgen.capacity import bound_spread_rows

    # workflow A's request may use model 0 or model 1 (one unit); workflow B's puts two units
    # on model 0. Half and half: model 0 carries B's 1.0 whatever A does, so t = 1.
    a, b = np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([[2.0, 0.0]])
    assert bound_spread_rows([a, b], np.array([0.5, 0.5])) == pytest.approx(1.0)
    # 80% A, 20% B: A's share x on model 0 balances 0.8x + 0.4 = 0.8(1 - x) at x = 1/4
    assert bound_spread_rows([a, b], np.array([0.8, 0.2])) == pytest.approx(1 / 0.6)
    # one workflow: the same program as bound_spread
    sets = [np.array([0]), np.array([0, 1])]
    assert bound_spread_rows([LOAD[s] for s in sets], np.array([0.5, 0.5])) == pytest.approx(
        bound_spread(LOAD, sets))
