"""The generated benchmarks have the structure that makes routing meaningful (EMULATED answers)."""

from __future__ import annotations

import dataclasses
import importlib.resources
import json

import numpy as np
import pytest
from aragog import workflows
from aragog.emulation import generate
from aragog.emulation.generate import SIZE, benchmark
from aragog.emulation.run import Runner
from aragog.common.pool import load_pool
from aragog.emulation.answer import _aggregate, answer, find_item
from aragog.emulation.specs import SPECS

FAMILIES = ("qwen2.5", "llama3")
SAMPLE = 300


def _wf(wid: str, family: str):
    pool = load_pool(family)
    by_size = sorted(pool.names, key=lambda m: pool.model(m).params_b)
    return workflows.load(wid, pool.names), by_size


def _accuracy(wf, items, models) -> float:
    return float(np.mean([Runner(wf, it.input).answer(models) == it.answer for it in items]))


@pytest.mark.parametrize("wid", workflows.BENCHMARKED)
def test_benchmark_is_deterministic_split_and_unique(wid):
    bench = benchmark(wid)
    again = generate.benchmark.__wrapped__(wid)  # bypass the cache: a fresh generation
    assert bench.items == again.items
    assert len(bench.items) >= SIZE >= 2000
    assert len({it.input for it in bench.items}) == len(bench.items)
    train = len(bench.split("train"))
    assert train + len(bench.split("test")) == len(bench.items)
    assert 0.65 < train / len(bench.items) < 0.75
    assert all(find_item(f"Question: {it.input}\nmore") is it for it in bench.items[:50])


@pytest.mark.parametrize("wid", workflows.BENCHMARKED)
def test_feature_levels_replay_every_request_text(wid):
    levels = generate.feature_levels(wid)  # raises if a text stream no longer renders its input
    d = np.array([it.difficulty for it in benchmark(wid).items])
    assert len(levels) == len(d) and min(map(len, levels)) >= 2
    assert np.corrcoef([np.mean(lv) for lv in levels], d)[0, 1] > 0.8


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("wid", workflows.BENCHMARKED)
def test_cheap_configurations_match_the_largest_on_many_requests_but_not_all(wid, family):
    wf, by_size = _wf(wid, family)
    n = len(wf.llm_stages)
    items = benchmark(wid).split("train")[:SAMPLE]
    matches = []
    for it in items:
        run = Runner(wf, it.input)
        largest_ok = run.answer([by_size[-1]] * n) == it.answer
        matches.append(largest_ok and run.answer([by_size[0]] * n) == it.answer)
    largest_right = _accuracy(wf, items, [by_size[-1]] * n)
    share = np.mean(matches) / largest_right  # of the requests the largest gets right
    assert 0.25 < share < 0.95, share
    # and difficulty is what separates them
    hard = [it.difficulty for it, m in zip(items, matches, strict=True) if not m]
    easy = [it.difficulty for it, m in zip(items, matches, strict=True) if m]
    assert np.mean(hard) > np.mean(easy) + 0.1


@pytest.mark.parametrize("family", FAMILIES)
def test_model_size_matters_more_at_some_stages(family):
    wf, by_size = _wf("text-to-sql", family)
    items = benchmark("text-to-sql").split("train")[:SAMPLE]
    large, small = by_size[-1], by_size[0]
    full = _accuracy(wf, items, [large] * 4)
    small_keywords = _accuracy(wf, items, [small, large, large, large])
    small_sql = _accuracy(wf, items, [large, large, small, large])
    assert full - small_keywords < full - small_sql
    assert full - small_sql > 0.03


def test_errors_propagate_to_the_next_stage():
    sql = workflows.load("text-to-sql", load_pool("qwen2.5").names).stage("sql")
    rates = {}
    for mark in ("<<ok>>", "<<err>>"):
        oks = []
        for it in benchmark("text-to-sql").split("train")[:SAMPLE]:
            out = answer("qwen2.5-14b", "sql", sql.render(it.input, {"columns": f"columns {mark}"}))
            oks.append(out.endswith("<<ok>>"))
        rates[mark] = np.mean(oks)
    assert rates["<<ok>>"] > rates["<<err>>"] + 0.1, rates


def test_an_aggregator_without_votes_or_lure_still_answers_wrong_in_format():
    """The path no shipped item takes (every voting item has a lure): a wrong answer is
    still one of the letters."""
    item = dataclasses.replace(benchmark("voting").split("train")[0], lure="")
    st = SPECS["voting"].stages["aggregate"]
    out = _aggregate(item, "llama3-8b", "aggregate", st, [], 1.0, "no votes here")
    assert out in generate.LETTERS and out != item.answer


@pytest.mark.parametrize("family", FAMILIES)
def test_independent_voters_beat_one_voter(family):
    wf, by_size = _wf("voting", family)
    items = benchmark("voting").split("train")[:SAMPLE]
    small = by_size[0]
    one_voter = np.mean(
        [
            answer(small, "voter1", wf.stage("voter1").render(it.input, {})).endswith(
                f"<<vote:{it.answer}>>"
            )
            for it in items
        ]
    )
    voted = _accuracy(wf, items, [small] * 5)
    assert voted > one_voter + 0.02, (voted, one_voter)


@pytest.mark.parametrize("family", FAMILIES)
def test_accuracy_is_near_monotonic_in_model_size(family):
    wf, by_size = _wf("self-refine", family)
    items = benchmark("self-refine").split("train")[:SAMPLE]
    worse = better = 0
    for it in items:
        run = Runner(wf, it.input)
        for lo, hi in zip(by_size, by_size[1:], strict=False):
            a = run.answer([lo] * 3) == it.answer
            b = run.answer([hi] * 3) == it.answer
            worse += a and not b
            better += b and not a
    assert better > 5 * max(worse, 1) or worse == 0, (better, worse)


def test_committed_calibration_matches_published_gaps():
    data = json.loads(
        importlib.resources.files("aragog.emulation").joinpath("calibration.json").read_text()
    )
    for wid in workflows.BENCHMARKED:
        for family in FAMILIES:
            fit = data[wid][family]
            for model, published in fit["published"].items():
                assert abs(fit["achieved"][model] - published) < 0.05, (wid, family, model)
            # and the answer function reproduces what calibration recorded
            wf, by_size = _wf(wid, family)
            items = benchmark(wid).split("train")[:600]
            largest = by_size[-1]
            acc = _accuracy(wf, items, [largest] * len(wf.llm_stages))
            assert acc == pytest.approx(fit["achieved"][largest], abs=1e-4)  # stored rounded


def test_other_prompts_get_a_deterministic_digest():
    assert answer("m", "s", "hello there") == answer("m", "s", "hello there")
    assert answer("m", "s", "hello there").startswith("[m/s] ")
    assert answer("m", "s", "hello there") != answer("m", "s", "hello there!")
