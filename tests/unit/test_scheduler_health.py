"""Model health (aragog.scheduler.health) and a failed stage's retry avoiding its model."""

from __future__ import annotations

import numpy as np
from aragog.common.pool import load_pool
from aragog.common.workflow import parse_workflow
from aragog.scheduler.health import ModelHealth
from aragog.scheduler.placement import Entry
from aragog.scheduler_ext import RoundRequest, WorkflowSpace
from aragog.stack import shipped_workflow

NAMES = ["small", "medium", "large"]


def test_consecutive_failures_eject_for_a_doubling_time_and_a_success_forgives():
    h = ModelHealth(NAMES, eject_after_failures=3, eject_s=10.0)
    assert not h.failed(0, 0.0) and not h.failed(0, 0.0)
    h.succeeded(0)  # failures must be in a row
    assert not h.failed(0, 1.0) and not h.failed(0, 1.0)
    assert h.failed(0, 1.0), "the third in a row ejects"
    assert h.ejected(5.0).tolist() == [True, False, False]
    assert h.seconds_left(5.0) == {"small": 6.0}
    assert h.next_lapse(5.0) == 11.0
    assert not h.failed(0, 6.0), "failures of calls placed before the ejection change nothing"
    assert h.ejected(11.5).tolist() == [False, False, False], "tried again once it lapses"
    assert h.failed(0, 12.0), "on probation: one more failure ejects it again"
    assert h.seconds_left(12.0) == {"small": 20.0}, "for twice as long"
    h.succeeded(0)
    assert not h.failed(0, 40.0), "a success ends probation"


def test_ejection_lasts_at_most_thirty_times_the_first():
    h = ModelHealth(NAMES, eject_after_failures=1, eject_s=1.0)
    now = 0.0
    for _ in range(10):
        assert h.failed(1, now)
        now = h.next_lapse(now) + 0.001
    assert h.failed(1, now) and h.seconds_left(now) == {"medium": 30.0}


def test_zero_never_ejects():
    h = ModelHealth(NAMES, eject_after_failures=0, eject_s=1.0)
    assert not any(h.failed(2, 0.0) for _ in range(100))
    assert not h.ejected(0.0).any() and h.next_lapse(0.0) is None


def _entry(configs=None) -> Entry:
    pool = load_pool("llama3")
    wf = parse_workflow(shipped_workflow("chain3"), pool.names)
    ids = {m: i for i, m in enumerate(pool.names)}
    depths = wf.depths()
    space = WorkflowSpace.from_candidates(
        [[ids[m] for m in s.candidates] for s in wf.llm_stages],
        [depths[s.name] for s in wf.llm_stages])
    admitted = np.arange(space.size, dtype=np.int64) if configs is None else configs
    return Entry("r", wf, admitted, {}, RoundRequest(space=space, configs=admitted, ready=[]), {})


def _models_at(entry: Entry, stage: int) -> set[int]:
    rr = entry.round_request
    return set(((rr.configs // rr.space.strides[stage]) % rr.space.radices[stage]).tolist())


def test_a_failed_model_is_avoided_at_that_stage_while_c_r_has_another():
    e = _entry()
    e.avoid[0] = {0}
    e.renarrow()
    assert 0 not in _models_at(e, 0) and _models_at(e, 1) == {0, 1, 2}, "only that stage"
    e.avoid[0] = {0, 1, 2}  # every model of the stage failed it: avoiding all leaves nothing
    e.renarrow()
    assert _models_at(e, 0) == {0, 1, 2}, "then any may be tried again"


def test_avoiding_never_leaves_f_r():
    wf = _entry().workflow
    only = np.array([wf.config_index(["llama3-3b"] * 3)], dtype=np.int64)
    e = _entry(only)
    e.avoid[1] = {0}
    e.renarrow()
    assert e.round_request.configs.tolist() == only.tolist(), "F(r) holds no other: kept"
    e.chosen[1] = 0
    e.renarrow()
    assert e.round_request.configs.tolist() == only.tolist()
