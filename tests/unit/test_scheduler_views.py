"""The cost-first round's views of C(r) (aragog.scheduler.views): cheapest plan, escalations."""

from __future__ import annotations

import numpy as np
from aragog.common.pool import load_pool
from aragog.common.workflow import parse_workflow
from aragog.scheduler import views
from aragog.scheduler_ext import WorkflowSpace
from aragog.stack import shipped_workflow

S, M, L = "llama3-3b", "llama3-8b", "llama3-70b"


def _chain():
    pool = load_pool("llama3")
    wf = parse_workflow(shipped_workflow("chain3"), pool.names)
    ids = {m: i for i, m in enumerate(pool.names)}
    depths = wf.depths()
    space = WorkflowSpace.from_candidates(
        [[ids[m] for m in s.candidates] for s in wf.llm_stages],
        [depths[s.name] for s in wf.llm_stages])
    return wf, space, views.stage_costs(wf, pool, space)


def _configs(wf, *plans):
    return np.array(sorted(wf.config_index(list(p)) for p in plans), dtype=np.int64)


def test_stage_costs_price_the_70b_above_the_8b_above_the_3b():
    wf, _, costs = _chain()
    for s, st in enumerate(wf.llm_stages):
        by_name = dict(zip(st.candidates, costs[s][: len(st.candidates)], strict=True))
        assert by_name[S] < by_name[M] < by_name[L]
    # tensor parallelism counts: a 70B stage costs more than four 8B stages
    assert costs[0][wf.llm_stages[0].candidates.index(L)] > 4 * costs[0][
        wf.llm_stages[0].candidates.index(M)]


def test_cheapest_keeps_the_least_gpu_seconds_not_the_smallest_first_model():
    wf, space, costs = _chain()
    configs = _configs(wf, (S, L, L), (M, M, M), (M, M, L))
    low = views.cheapest(configs, space, costs)
    assert low.tolist() == _configs(wf, (M, M, M)).tolist()
    assert not low.flags.writeable


def test_cheapest_keeps_ties_and_returns_c_r_itself_when_all_cost_the_same():
    wf, space, _ = _chain()
    flat = np.ones(space.stage_models.shape)  # every model costs the same at every stage
    configs = _configs(wf, (S, L, L), (M, M, M))
    assert views.cheapest(configs, space, flat) is configs
    one = _configs(wf, (M, M, M))
    assert views.cheapest(one, space, flat) is one
    flat[0][wf.llm_stages[0].candidates.index(L)] = 2.0  # a 70B draft costs more
    three = _configs(wf, (S, L, L), (M, M, M), (L, M, M))
    assert views.cheapest(three, space, flat).tolist() == _configs(
        wf, (S, L, L), (M, M, M)).tolist()


def test_escalations_change_only_the_stages_ready_now():
    wf, space, costs = _chain()
    configs = _configs(wf, (M, M, M), (L, M, M), (M, L, M), (L, L, L))
    cheap = views.cheapest(configs, space, costs)
    assert cheap.tolist() == _configs(wf, (M, M, M)).tolist()
    first = views.escalations(configs, cheap, space, ready=[0])
    assert first.tolist() == _configs(wf, (M, M, M), (L, M, M)).tolist()
    second = views.escalations(configs, cheap, space, ready=[1])
    assert second.tolist() == _configs(wf, (M, M, M), (M, L, M)).tolist()
    every = views.escalations(configs, cheap, space, ready=[0, 1, 2])
    assert every.tolist() == configs.tolist()
