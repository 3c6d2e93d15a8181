"""The profiler's shortcuts against exhaustive profiling, and the router's search (EMULATED answers)."""

from __future__ import annotations

import numpy as np
import pytest
from aragog import workflows
from aragog.common.pool import load_pool
from aragog.emulation.generate import benchmark
from aragog.routing.model import RouterModel, cheapest_of
from aragog.training import dataset, graders, profiler
from aragog.training.learn import RISK_WEIGHTS, choose_risk_weight, chosen_configs

AGREE = graders.make("agree")
from aragog.routing.space import Space, build


@pytest.fixture(scope="module")
def sql_space():
    pool = load_pool("qwen2.5")
    return build(workflows.load("text-to-sql", pool.names), pool)


def test_space_orders_costs_and_dominance(sql_space):
    s = sql_space
    assert s.size == 81
    assert s.gpu_seconds[s.largest] == s.gpu_seconds.max()
    assert s.gpu_seconds[s.cheapest] == s.gpu_seconds.min()
    assert (np.diff(s.gpu_seconds[s.cost_order]) >= 0).all()
    assert s.dominates[s.largest].all() and s.dominates[:, s.cheapest].all()
    # more expensive never dominated by cheaper
    i, j = np.nonzero(s.dominates)
    assert (s.flops[i] >= s.flops[j]).all() and (s.gpu_seconds[i] >= s.gpu_seconds[j] - 1e-12).all()


def test_accelerated_profile_agrees_with_exhaustive_at_a_tenth_of_the_work(sql_space):
    items = [r for r in dataset.from_benchmark("text-to-sql") if r.split == "train"][:60]
    check = profiler.verify(sql_space, items, AGREE)
    assert check["label_agreement"] > 0.98, check
    assert check["executions_accelerated"] <= check["executions_exhaustive"] / 10, check
    assert check["executions_tree_only"] < check["executions_exhaustive"], check


def test_preserving_means_answering_as_the_largest_does(sql_space):
    from aragog.emulation.run import Runner

    s = sql_space
    wrong_largest = 0
    for it in benchmark("text-to-sql").split("train")[:40]:
        prof = profiler.profile_request(s, Runner(s.workflow, it.input), AGREE, it.answer)
        run = Runner(s.workflow, it.input)
        reference = run.answer(s.models(s.largest))
        assert prof.preserving[s.largest]
        assert prof.largest_correct == (reference == it.answer)
        wrong_largest += not prof.largest_correct
        for c in np.flatnonzero(prof.preserving)[:10]:
            assert run.answer(s.models(c)) == reference
    assert wrong_largest  # the sample holds requests the largest configuration gets wrong


def _toy_router(space, stage_bias: np.ndarray, risk_weight: float = 2.0) -> RouterModel:
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
        risk_weight=risk_weight,
        meta={},
    )


def _reference_f(router, space, emb, candidates=None) -> set[int]:
    """F(r) by brute force over `candidates` (default: the whole space): the best trade-off,
    and every candidate at least as safe, whatever it costs, closed upwards."""
    cand = np.zeros(space.size, bool)
    cand[np.arange(space.size) if candidates is None else candidates] = True
    cand[space.largest] = False
    rel = space.gpu_seconds / space.gpu_seconds[space.largest]
    risk = 1.0 - router.probabilities(emb, space, np.arange(space.size)).astype(np.float64)
    score = np.where(cand, rel + router.risk_weight * risk, np.inf)
    best = int(np.argmin(score))
    if score[best] >= 1.0:
        return {space.largest}
    safe = cand & (risk <= risk[best])
    return set(np.flatnonzero(space.dominates[:, safe].any(1))) | {space.largest}


@pytest.mark.parametrize("weight", [0.5, 2.0, 4.0, 8.0])
def test_route_takes_the_best_trade_off_and_its_safer_up_sets(sql_space, weight):
    s = sql_space
    router = _toy_router(s, np.array([0.1, 0.5, 2.0, 0.5]), weight)
    emb = np.zeros(4, np.float32)
    f = router.route(emb, s)
    assert set(f) == _reference_f(router, s, emb)
    assert 1 < len(f) < s.size
    accepted = np.zeros(s.size, bool)
    accepted[f] = True
    for c in f:  # closed upwards
        assert accepted[s.dominates[:, c]].all()
    # chunks only batch the work: one configuration at a time gives the same F(r)
    assert list(router.route(emb, s, chunk=1)) == list(f)
    # a budget scores a prefix of the cost order
    for budget in (2, 7, 30):
        expected = _reference_f(router, s, emb, s.cost_order[:budget])
        assert set(router.route(emb, s, budget=budget)) == expected
        assert set(router.route(emb, s, budget=budget, chunk=1)) == expected


def test_route_scores_the_budgets_prefix_of_the_cost_order(sql_space):
    s = sql_space
    router = _toy_router(s, np.array([0.1, 0.5, 2.0, 0.5]), 4.0)
    emb = np.zeros(4, np.float32)
    scored = []
    features = router.config_features
    router.config_features = lambda space, configs: scored.extend(configs) or features(
        space, configs
    )
    router.route(emb, s, budget=30, chunk=7)
    assert sorted(scored) == sorted(c for c in s.cost_order[:31] if c != s.largest)[:30] or \
        list(scored) == [c for c in s.cost_order if c != s.largest][:30]


def test_route_takes_safer_configurations_dearer_than_the_best_score():
    """Two stages of two sizes. (1, 0) is the best trade-off; (0, 1) is safer, costs more
    than that score and is not in its up-set: F(r) holds it, since the scheduler may find it
    idle (it is no riskier), and the cheapest of F(r) is still the best trade-off."""
    ranks = np.array([[0, 0], [1, 0], [0, 1], [1, 1]], dtype=np.int8)
    cost = np.array([0.2, 0.4, 0.9, 1.0])
    space = Space(None, None, ranks, cost, cost)
    router = RouterModel(
        w_x=np.zeros((4, 1), np.float32),
        w_c=np.array([[[0.0], [4.0]], [[0.0], [6.0]]], np.float32),  # logits -2, 2, 4, 8
        b1=np.array([10.0], np.float32),
        w2=np.array([1.0], np.float32),
        b2=-12.0,
        risk_weight=1.0,
        meta={},
    )
    emb = np.zeros(4, np.float32)
    for chunk in (1, 256):
        assert list(router.route(emb, space, chunk=chunk)) == [1, 2, 3]
    assert cheapest_of(space, router.route(emb, space)) == 1
    assert list(router.route(emb, space, risk_weight=0.05)) == [0, 1, 2, 3]
    # a budget that stops before (0, 1) leaves it out
    assert list(router.route(emb, space, budget=2)) == [1, 3]


def test_route_weighs_risk_against_saving(sql_space):
    s = sql_space
    router = _toy_router(s, np.array([0.1, 0.5, 2.0, 0.5]))
    emb = np.zeros(4, np.float32)
    costs = [s.gpu_seconds[cheapest_of(s, router.route(emb, s, risk_weight=w))]
             for w in (0.0, 0.5, 2.0, 8.0, 50.0)]
    assert costs == sorted(costs) and costs[0] < costs[-1]  # the stricter, the dearer
    # no weight on risk: the cheapest configuration, and with it every configuration
    assert len(router.route(emb, s, risk_weight=0.0)) == s.size
    chosen = cheapest_of(s, router.route(emb, s, risk_weight=2.0))
    assert s.gpu_seconds[chosen] < s.gpu_seconds[s.largest]
    # an infinite weight leaves only the largest, as does a budget too small to find a saving
    assert list(router.route(emb, s, risk_weight=np.inf)) == [s.largest]
    assert list(router.route(emb, s, budget=1, risk_weight=8.0)) == [s.largest]


@pytest.mark.parametrize("wid", ["text-to-sql", "voting"])  # voting: voters of equal cost
def test_chosen_configs_are_what_route_runs_at_every_weight(wid):
    """The weight fit scores each request once for all weights; it must pick exactly the
    cheapest configuration of the F(r) that `route` returns, budgets included."""
    pool = load_pool("llama3")
    space = build(workflows.load(wid, pool.names), pool)
    rng = np.random.default_rng(7)
    stages, ranks, dim, hidden = space.ranks.shape[1], int(space.ranks.max()) + 1, 8, 16
    router = RouterModel(
        w_x=rng.normal(0, 1, (dim, hidden)).astype(np.float32),
        w_c=(rng.normal(0, 1, (stages, ranks, hidden))
             + np.arange(ranks)[None, :, None]).astype(np.float32),  # larger: safer
        b1=rng.normal(0, 1, hidden).astype(np.float32),
        w2=np.abs(rng.normal(0, 1, hidden)).astype(np.float32),
        b2=0.0,
        risk_weight=1.0,
        meta={},
    )
    emb = rng.normal(0, 1, (12, dim)).astype(np.float32)
    p = np.clip([router.probabilities(e, space, space.cost_order[:1])[0] for e in emb], 1e-6, 0.999)
    router.b2 = -float(np.median(np.log(p / (1 - p))))  # the cheapest: a coin toss
    picked = []
    for budget in (4096, 40, 5, 1):
        fast = chosen_configs(router, space, emb, budget=budget)
        slow = [[cheapest_of(space, router.route(e, space, budget=budget, risk_weight=w))
                 for e in emb] for w in RISK_WEIGHTS]
        assert fast.tolist() == slow
        picked.append(fast)
    # the sample spans many choices, the largest among them, so the check is not vacuous
    picked = np.concatenate(picked, axis=1)
    assert len(np.unique(picked)) > 5 and (picked == space.largest).any()
    assert (picked[0] != picked[-1]).any()  # and the weight moves them


def test_averaged_router_scores_the_mean_logit_of_its_members(sql_space):
    rng = np.random.default_rng(3)
    stages, ranks = sql_space.ranks.shape[1], int(sql_space.ranks.max()) + 1

    def member(hidden):
        return RouterModel(
            w_x=rng.normal(0, 1, (6, hidden)).astype(np.float32),
            w_c=rng.normal(0, 1, (stages, ranks, hidden)).astype(np.float32),
            b1=rng.normal(0, 1, hidden).astype(np.float32),
            w2=rng.normal(0, 1, hidden).astype(np.float32),
            b2=float(rng.normal()),
            risk_weight=2.0,
            meta={},
        )

    members = [member(5), member(5), member(5)]
    mean = RouterModel.average(members)
    emb, every = rng.normal(0, 1, 6).astype(np.float32), np.arange(sql_space.size)

    def logit(m):
        p = m.probabilities(emb, sql_space, every).astype(np.float64)
        return np.log(p / (1 - p))

    assert mean.w_x.shape == (6, 15)
    np.testing.assert_allclose(logit(mean), np.mean([logit(m) for m in members], axis=0),
                               atol=2e-3)
    assert mean.risk_weight == np.inf  # fitted afterwards, for the average itself


def test_risk_weight_takes_the_largest_saving_within_the_loss_budget(sql_space):
    s = sql_space
    cheap = int(s.cost_order[0])
    n = 200
    preserving = np.zeros((n, s.size), bool)
    preserving[:, s.largest] = True
    preserving[:150, cheap] = True  # the cheap configuration is right on 150 of 200
    largest_correct = np.ones(n, bool)
    chosen = np.full((len(RISK_WEIGHTS), n), s.largest)
    loose, strict = 0, 30
    chosen[loose, :] = cheap  # permissive: cheap everywhere, 25% lost
    chosen[strict, :150] = cheap  # strict: cheap only where it preserves
    lam, fig = choose_risk_weight(s, chosen, preserving, largest_correct, max_loss=0.01)
    assert lam == RISK_WEIGHTS[strict] and fig["loss"] == 0.0
    assert fig["saving"] == pytest.approx(0.75 * (s.gpu_seconds[s.largest] - s.gpu_seconds[cheap]))
    # with room for the loss, the permissive weight saves more
    roomy = choose_risk_weight(s, chosen, preserving, largest_correct, max_loss=0.3)
    assert roomy[0] == RISK_WEIGHTS[0]
    # where the largest is wrong, answering otherwise loses nothing
    assert choose_risk_weight(s, chosen, preserving, np.arange(n) < 150, 0.0)[0] == RISK_WEIGHTS[0]
    # nothing within the budget: F(r) stays the largest alone
    none = np.full((len(RISK_WEIGHTS), n), cheap)
    assert choose_risk_weight(s, none, preserving, largest_correct, max_loss=0.0)[0] == np.inf
