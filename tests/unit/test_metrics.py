"""RouteLLM's routing metrics (aragog.training.metrics) on hand-computed cases."""

import math

import numpy as np
import pytest
from aragog.training import metrics


def test_a_small_case_computed_by_hand():
    strong = [1, 1, 1, 0]
    weak = [0, 1, 0, 0]  # weak 0.25, strong 0.75
    score = [0.9, 0.5, 0.8, 0.1]  # order: +1, +1, 0, 0
    c = metrics.curve(strong, weak, score)
    assert c.share.tolist() == [0, 0.25, 0.5, 0.75, 1]
    assert c.performance.tolist() == [0.25, 0.5, 0.75, 0.75, 0.75]
    assert c.pgr.tolist() == [0, 0.5, 1, 1, 1]
    # trapezoids: 0.25 * (0.25 + 0.75 + 1 + 1)
    assert metrics.apgr(c) == pytest.approx(0.75)
    assert metrics.cpt(c, 0.5) == pytest.approx(0.25)
    assert metrics.cpt(c, 0.8) == pytest.approx(0.25 + 0.3 / 0.5 * 0.25)
    assert metrics.cpt(c, 0.0) == 0.0
    assert math.isnan(metrics.cpt(c, 1.01))
    assert metrics.share_for(c, 0.625) == pytest.approx(0.375)


def test_the_oracle_has_the_closed_form():
    # g: only the strong model is right; l: only the weak one; the oracle sends g first and
    # l last, so PGR rises with slope 1/(g - l) to g/(g - l), stays, and falls back to 1:
    # APGR = (g - (g^2 + l^2) / 2) / (g - l),  CPT(x) = x (g - l) while x (g - l) <= g.
    n, g_n, l_n, both_n = 20_000, 3_560, 1_060, 12_000
    strong = np.zeros(n)
    weak = np.zeros(n)
    strong[:g_n] = 1
    weak[g_n:g_n + l_n] = 1
    strong[g_n + l_n:g_n + l_n + both_n] = weak[g_n + l_n:g_n + l_n + both_n] = 1
    rng = np.random.default_rng(1)
    perm = rng.permutation(n)
    strong, weak = strong[perm], weak[perm]
    oracle = strong - weak  # ties inside each group
    g, lo = g_n / n, l_n / n
    c = metrics.curve(strong, weak, oracle)
    assert metrics.apgr(c) == pytest.approx((g - (g * g + lo * lo) / 2) / (g - lo), rel=1e-12)
    assert metrics.cpt(c, 0.5) == pytest.approx(0.5 * (g - lo), rel=1e-12)
    assert metrics.cpt(c, 0.8) == pytest.approx(0.8 * (g - lo), rel=1e-12)
    assert metrics.apgr(c) > 1  # it gains where the weak model is right and the strong wrong


def test_random_scores_recover_half_the_gap():
    rng = np.random.default_rng(0)
    n = 4000
    strong = rng.random(n) < 0.8
    weak = rng.random(n) < 0.65
    runs = [metrics.summary(strong, weak, rng.random(n)) for _ in range(30)]
    assert np.mean([r["apgr"] for r in runs]) == pytest.approx(0.5, abs=0.01)
    assert np.mean([r["cpt50"] for r in runs]) == pytest.approx(0.5, abs=0.02)
    assert np.mean([r["cpt80"] for r in runs]) == pytest.approx(0.8, abs=0.02)


def test_ties_are_routed_together_whatever_their_order():
    strong = np.array([0, 0, 1, 1])
    weak = np.array([0, 0, 0, 0])  # weak 0, strong 0.5: gains 0, 0, 1, 1
    score = np.array([1, 1, 1, 0])  # the first three tie
    c = metrics.curve(strong, weak, score)
    # one block of three (gain 1), then the last (gain 1): PGR 0 -> 0.5 at 3/4 -> 1
    assert c.share.tolist() == [0, 0.75, 1]
    assert c.pgr.tolist() == [0, 0.5, 1]
    assert metrics.apgr(c) == pytest.approx(0.75 * 0.25 + 0.25 * 0.75)
    assert metrics.cpt(c, 0.5) == pytest.approx(0.75)
    # the input order of tied prompts changes nothing (a sort's tie rule would)
    for perm in ([2, 0, 1, 3], [1, 2, 0, 3], [3, 2, 1, 0]):
        p = metrics.curve(strong[perm], weak[perm], score[perm])
        assert metrics.apgr(p) == metrics.apgr(c) and metrics.cpt(p, 0.5) == metrics.cpt(c, 0.5)


def test_one_score_for_all_is_the_straight_line():
    rng = np.random.default_rng(2)
    strong, weak = rng.random(500) < 0.8, rng.random(500) < 0.6
    c = metrics.curve(strong, weak, np.full(500, 0.3))
    assert c.share.tolist() == [0, 1]
    assert metrics.apgr(c) == pytest.approx(0.5)
    assert metrics.cpt(c, 0.5) == pytest.approx(0.5)
    assert metrics.cpt(c, 0.8) == pytest.approx(0.8)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="one length"):
        metrics.curve([1, 0], [0], [0.1, 0.2])
    with pytest.raises(ValueError, match="NaN"):
        metrics.curve([1, 0], [0, 0], [0.1, float("nan")])
    with pytest.raises(ValueError, match="no gap"):
        metrics.apgr(metrics.curve([1, 0], [0, 1], [0.1, 0.2]))
