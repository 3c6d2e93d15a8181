"""Models gone from placement (placement.Unplaceable): C(r) leaves them out, and a request
whose F(r) needs one is widened to the largest models still there; a model back restores it."""

from __future__ import annotations

import numpy as np
from aragog.common.pool import load_pool
from aragog.common.workflow import parse_workflow
from aragog.scheduler.placement import CompiledWorkflow, Round, Unplaceable
from aragog.stack import shipped_workflow

S, M, L = "llama3-3b", "llama3-8b", "llama3-70b"


def _setup():
    pool = load_pool("llama3")
    wf = parse_workflow(shipped_workflow("chain3"), pool.names)
    gone = Unplaceable(np.zeros(len(pool.models), dtype=bool),
                       np.array([m.params_b for m in pool.models]))
    rnd = Round(pool, cost_first=True, beam_width=4, unplaceable=gone)
    return pool, wf, CompiledWorkflow.build(wf, pool), rnd, gone


def _plans(wf, configs) -> set[tuple[str, ...]]:
    return {tuple(wf.config_models(int(c))) for c in configs}


def _configs(wf, *plans) -> np.ndarray:
    return np.array(sorted(wf.config_index(list(p)) for p in plans), dtype=np.int64)


def test_a_gone_model_leaves_c_of_r_and_comes_back_with_its_model():
    pool, wf, cw, rnd, gone = _setup()
    entry = rnd.entry(cw, "r1", _configs(wf, (S, S, L), (M, M, M), (L, L, L)))
    gone.gone[pool.names.index(L)] = True
    entry.renarrow()
    assert _plans(wf, entry.round_request.configs) == {(M, M, M)}
    assert gone.widened == 0
    gone.gone[:] = False
    entry.renarrow()
    assert _plans(wf, entry.round_request.configs) == {(S, S, L), (M, M, M), (L, L, L)}


def test_a_request_that_needs_a_gone_model_is_widened_to_the_largest_left():
    pool, wf, cw, rnd, gone = _setup()
    gone.gone[pool.names.index(L)] = True
    entry = rnd.entry(cw, "r2", _configs(wf, (L, L, L)))  # `largest` with the 70B gone
    assert _plans(wf, entry.round_request.configs) == {(M, M, M)}
    assert gone.widened == 1


def test_a_stage_already_placed_keeps_its_model_when_widened():
    pool, wf, cw, rnd, gone = _setup()
    entry = rnd.entry(cw, "r3", _configs(wf, (L, L, L)), chosen={0: wf.llm_stages[0].candidates.index(L)})
    gone.gone[pool.names.index(L)] = True
    entry.renarrow()
    assert _plans(wf, entry.round_request.configs) == {(L, M, M)}, "the first stage ran on it"


def test_a_stage_with_no_model_left_keeps_c_of_r_and_waits():
    pool, wf, cw, rnd, gone = _setup()
    gone.gone[:] = True
    entry = rnd.entry(cw, "r4", _configs(wf, (L, L, L)))
    assert _plans(wf, entry.round_request.configs) == {(L, L, L)}
    free = np.full(len(pool.models), 8, dtype=np.int32)
    free[gone.gone] = 0  # as the scheduler's _free gives it
    entry.round_request.ready.append(0)
    assert rnd.run([entry], free, np.zeros(len(pool.models), dtype=np.int32)) == []


def test_stages_placed_on_a_widened_plan_stand_when_the_model_is_back():
    pool, wf, cw, rnd, gone = _setup()
    gone.gone[pool.names.index(L)] = True
    entry = rnd.entry(cw, "r5", _configs(wf, (L, L, L)))
    entry.chosen[0] = wf.llm_stages[0].candidates.index(M)  # its first stage ran on the 8B
    entry.renarrow()
    gone.gone[:] = False  # the 70B is back
    entry.renarrow()
    assert _plans(wf, entry.round_request.configs) == {(M, M, M)}, "not an empty C(r)"
