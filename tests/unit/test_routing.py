"""The profiler's shortcuts against exhaustive profiling, and the router's search (EMULATED answers)."""

from __future__ import annotations

import numpy as np
import pytest
from aragog import workflows
from aragog.bench.generate import benchmark
from aragog.common.pool import load_pool
from aragog.routing import profiler
from aragog.routing.model import THRESHOLDS, RouterModel, cheapest_of, choose_threshold
from aragog.routing.space import build


@pytest.fixture(scope="module")
def sql_space():
    pool = load_pool("qwen2.5")
    return build(workflows.load("text-to-sql", pool.names), pool)


def test_space_orders_costs_and_dominance(sql_space):
    s = sql_space
    assert s.size == 81
    assert s.flops[s.largest] == s.flops.max() and s.flops[s.cheapest] == s.flops.min()
    assert s.dominates[s.largest].all() and s.dominates[:, s.cheapest].all()
    # more expensive never dominated by cheaper
    i, j = np.nonzero(s.dominates)
    assert (s.flops[i] >= s.flops[j]).all() and (s.gpu_seconds[i] >= s.gpu_seconds[j] - 1e-12).all()


def test_accelerated_profile_agrees_with_exhaustive_at_a_tenth_of_the_work(sql_space):
    items = benchmark("text-to-sql").split("train")[:60]
    check = profiler.verify(sql_space, items)
    assert check["label_agreement"] > 0.98, check
    assert check["executions_accelerated"] <= check["executions_exhaustive"] / 10, check
    assert check["executions_tree_only"] < check["executions_exhaustive"], check


def test_preserving_means_answering_as_the_largest_does(sql_space):
    from aragog.bench.run import Runner

    s = sql_space
    wrong_largest = 0
    for it in benchmark("text-to-sql").split("train")[:40]:
        prof = profiler.profile_request(s, it)
        run = Runner(s.workflow, it.input)
        reference = run.answer(s.models(s.largest))
        assert prof.preserving[s.largest]
        assert prof.largest_correct == (reference == it.answer)
        wrong_largest += not prof.largest_correct
        for c in np.flatnonzero(prof.preserving)[:10]:
            assert run.answer(s.models(c)) == reference
    assert wrong_largest  # the sample holds requests the largest configuration gets wrong


def _toy_router(space, stage_bias: np.ndarray, threshold: float = 0.5) -> RouterModel:
    """An MLP whose score rises with the models' sizes: bias + sum of per-stage rank weights."""
    stages, ranks = space.ranks.shape[1], int(space.ranks.max()) + 1
    w_c = np.zeros((stages, ranks, 1), dtype=np.float32)
    for s in range(stages):
        w_c[s, :, 0] = stage_bias[s] * np.arange(ranks)
    return RouterModel(
        w_x=np.zeros((4, 1), np.float32),
        w_c=w_c,
        b1=np.array([10.0], np.float32),
        w2=np.array([1.0], np.float32),
        b2=-12.0,
        threshold=threshold,
        meta={},
    )


def test_route_accepts_up_sets_keeps_the_largest_and_respects_budget(sql_space):
    s = sql_space
    router = _toy_router(s, np.array([0.1, 0.5, 2.0, 0.5]))
    emb = np.zeros(4, np.float32)
    f = router.route(emb, s)
    assert s.largest in f
    accepted = np.zeros(s.size, bool)
    accepted[f] = True
    for c in f:  # closed upwards
        assert accepted[s.dominates[:, c]].all()
    p = router.probabilities(emb, s, np.arange(s.size))
    assert (p[f] >= 0.5).all() or len(f) == 1
    cheapest = cheapest_of(s, f)
    assert s.flops[cheapest] < s.flops[s.largest]
    # a budget of 1 scores only the cheapest configuration: here rejected, so F = {largest}
    assert list(router.route(emb, s, budget=1)) == [s.largest]
    # early stop after the first acceptance: a subset of the full answer
    early = router.route(emb, s, early_stop=1)
    assert set(early) <= set(f) and s.largest in early
    # an impossible threshold leaves only the largest
    assert list(router.route(emb, s, threshold=1.0)) == [s.largest]


def test_threshold_takes_the_largest_saving_within_the_loss_budget(sql_space):
    s = sql_space
    cheap = int(s.cost_order[0])
    n = 200
    preserving = np.zeros((n, s.size), bool)
    preserving[:, s.largest] = True
    preserving[:150, cheap] = True  # the cheap configuration is right on 150 of 200
    largest_correct = np.ones(n, bool)
    chosen = np.full((len(THRESHOLDS), n), s.largest)
    loose, strict = 0, THRESHOLDS.index(0.99)
    chosen[loose, :] = cheap  # permissive: cheap everywhere, 25% lost
    chosen[strict, :150] = cheap  # strict: cheap only where it preserves
    tau, fig = choose_threshold(s, chosen, preserving, largest_correct, max_loss=0.01)
    assert tau == 0.99 and fig["loss"] == 0.0
    assert fig["saving"] == pytest.approx(0.75 * (s.gpu_seconds[s.largest] - s.gpu_seconds[cheap]))
    # with room for the loss, the permissive threshold saves more
    assert choose_threshold(s, chosen, preserving, largest_correct, max_loss=0.3)[0] == 0.5
    # where the largest is wrong, answering otherwise loses nothing
    assert choose_threshold(s, chosen, preserving, np.arange(n) < 150, max_loss=0.0)[0] == 0.5
    # nothing within the budget: F(r) stays the largest alone
    none = np.full((len(THRESHOLDS), n), cheap)
    assert choose_threshold(s, none, preserving, largest_correct, max_loss=0.0)[0] == 1.0
