"""FlowCompile's compile (proxy-guided Pareto set) and its run-time choice."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from aragog import policies
from aragog.common.pool import load_pool
from aragog.common.workflow import parse_workflow
from aragog.policies.flowcompile import ParetoSet
from aragog.routing.artifacts import Profile
from aragog.routing.space import build
from aragog.stack import shipped_workflow
from aragog.training.flowcompile import compile_front, pareto


def test_pareto_keeps_what_nothing_beats():
    cost = np.array([1.0, 2.0, 2.0, 3.0, 4.0, 0.5])
    acc = np.array([0.5, 0.7, 0.6, 0.7, 0.9, 0.2])
    assert pareto(cost, acc).tolist() == [5, 0, 1, 4]


@pytest.fixture(scope="module")
def independent():
    """chain3 on the default pool, with a profile whose stages fail independently: each
    request is a grid point of per-stage difficulties, and a stage preserves the answer on
    a model whose success rate exceeds its difficulty, so a configuration's accuracy is
    exactly the product of its stages' (the proxy's assumption)."""
    pool = load_pool()
    space = build(parse_workflow(shipped_workflow("chain3"), pool.names), pool)
    rate = np.array([[0.6, 0.85, 1.0], [0.9, 0.95, 1.0], [0.3, 0.7, 1.0]])  # stage x rank
    levels = (np.arange(20) + 0.5) / 20
    grid = np.array(list(itertools.product(levels, repeat=3)))  # [rows, stages]
    ok = (grid[:, None, :] < rate[np.arange(3), space.ranks.astype(int)][None]).all(-1)
    n = len(grid)
    prof = Profile([str(i) for i in range(n)], [str(i) for i in range(n)], ["train"] * n, ok,
                   np.ones(n, bool), np.zeros(n), 27, np.zeros(n), np.zeros(n))
    return space, prof


def test_the_compile_finds_the_exact_front_measuring_fewer_configurations(independent):
    space, prof = independent
    rows = np.arange(len(prof.item_ids))
    front = compile_front(space, prof, rows)
    exact_acc = prof.preserving.mean(0)
    exact = pareto(space.gpu_seconds, exact_acc)
    assert set(front.configs.tolist()) == set(exact.tolist())
    assert front.measured < space.size  # 17 of 27: 7 single-stage probes, then the predicted front
    np.testing.assert_allclose(front.accuracy, exact_acc[front.configs])
    assert (np.diff(front.gpu_seconds) > 0).all() and (np.diff(front.accuracy) > 0).all()


def test_run_time_picks_by_preference_or_accuracy_floor():
    s = ParetoSet(np.array([7, 3, 9]), np.array([0.5, 0.8, 1.0]), np.array([1.0, 2.0, 10.0]), 5, 27)
    assert s.by_preference(0.0) == 9 and s.by_preference(1.0) == 7
    assert s.by_preference(0.5) == 3  # 0.6 - 0.11 beats 0 and 1 - 1
    assert s.cheapest_with(0.8) == 3 and s.cheapest_with(0.81) == 9 and s.cheapest_with(1.1) == 9


def test_the_argument_is_a_preference_or_an_accuracy_floor():
    assert (policies.make("flowcompile:0.5").beta, policies.make("flowcompile:0.5").accuracy) == (0.5, None)
    assert policies.make("flowcompile:acc>=0.97").accuracy == 0.97
    for bad in ("flowcompile:", "flowcompile:fast", "flowcompile:1.2", "flowcompile:acc>=2"):
        with pytest.raises(policies.PolicyError, match="flowcompile"):
            policies.make(bad)
