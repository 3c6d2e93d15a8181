"""The scheduling round: hand-checked cases, input checks, and parity of the Cython kernel with
the pure-Python reference on random DAGs, queues, option sets and capacities (hypothesis)."""

from __future__ import annotations

import aragog.scheduler_ext as sx
import numpy as np
import pytest
from aragog.scheduler_ext import (
    Placement,
    RoundRequest,
    WorkflowSpace,
    reference_round,
    schedule_round,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ROUNDS = [schedule_round, reference_round]


def arr(*xs: int) -> np.ndarray:
    return np.array(xs, dtype=np.int64)


def i32(*xs: int) -> np.ndarray:
    return np.array(xs, dtype=np.int32)


def flat_curves(n_models: int, length: int = 8) -> np.ndarray:
    """Identical linear curves: every model gains the same per placement (utilization ties)."""
    return np.tile(np.arange(length, dtype=np.float64), (n_models, 1))


def same(a: sx.RoundResult, b: sx.RoundResult) -> bool:
    return (a.placements == b.placements and a.configs.keys() == b.configs.keys()
            and all(np.array_equal(a.configs[k], b.configs[k]) for k in a.configs))


# ------------------------------------------------------------------------------------------
# hand-checked rounds (a wrong-but-consistent algorithm fails these)


@pytest.mark.parametrize("round_fn", ROUNDS)
def test_beam_beats_greedy_on_a_two_request_example(round_fn):
    # models 0, 1, 2; first-slot gains on the pool scale (peak 3): 0.333, 0.667, 0.333
    curves = np.array([[0, 1, 2, 2], [0, 2, 3, 3], [0, 1, 1, 1]], dtype=np.float64)
    sp = WorkflowSpace.from_candidates([[0, 1], [1, 2]], [0, 1])
    free, occ = i32(1, 1, 1), i32(0, 0, 0)

    def queue():
        return [RoundRequest(sp, arr(0, 1, 2, 3), [0]), RoundRequest(sp, arr(1, 3), [0, 1])]

    # B = 1 is greedy: request 0 takes model 1 (0.667 > 0.333), then request 1's stage 1 (deeper,
    # first) takes model 2 and its stage 0 can only use model 1, which is full.
    greedy = round_fn(queue(), free, occ, curves, beam_width=1)
    assert greedy.placements == [Placement(0, 0, 1), Placement(1, 1, 2)]
    assert greedy.configs[0].tolist() == [1, 3]
    assert greedy.configs[1].tolist() == [3]
    # B = 4 finds the better assignment: 0.333 + 0.333 + 0.667 > 0.667 + 0.333
    beam = round_fn(queue(), free, occ, curves, beam_width=4)
    assert beam.placements == [Placement(0, 0, 0), Placement(1, 1, 2), Placement(1, 0, 1)]
    assert beam.configs[0].tolist() == [0, 2]
    assert beam.configs[1].tolist() == [3]


@pytest.mark.parametrize("round_fn", ROUNDS)
def test_empty_queue_and_zero_capacity_place_nothing(round_fn):
    sp = WorkflowSpace.from_candidates([[0, 1]], [0])
    curves = flat_curves(2)
    assert round_fn([], i32(3, 3), i32(0, 0), curves).placements == []
    res = round_fn([RoundRequest(sp, arr(0, 1), [0])], i32(0, 0), i32(0, 0), curves)
    assert res.placements == [] and res.configs == {}
    # negative free (over-committed) counts as no capacity
    res = round_fn([RoundRequest(sp, arr(0, 1), [0])], i32(-2, 0), i32(5, 0), curves)
    assert res.placements == []


@pytest.mark.parametrize("round_fn", ROUNDS)
def test_fifo_takes_the_last_slot_and_lookahead_skips_what_cannot_fit(round_fn):
    only0 = WorkflowSpace.from_candidates([[0]], [0])
    only1 = WorkflowSpace.from_candidates([[1]], [0])
    curves = flat_curves(2)
    q = [RoundRequest(only0, arr(0), [0]), RoundRequest(only0, arr(0), [0]),
         RoundRequest(only1, arr(0), [0]), RoundRequest(only0, arr(0), [0])]
    res = round_fn(q, i32(1, 1), i32(0, 0), curves, beam_width=4)
    # request 0 takes model 0's slot; 1 and 3 cannot fit (skipped); 2 uses model 1
    assert res.placements == [Placement(0, 0, 0), Placement(2, 0, 1)]
    assert sorted(res.configs) == [0, 2]


@pytest.mark.parametrize("round_fn", ROUNDS)
def test_flexibility_breaks_utilization_ties(round_fn):
    sp = WorkflowSpace.from_candidates([[0, 1], [2, 3]], [0, 1])
    curves = flat_curves(4)
    # stage 0: candidate 0 (model 0) is kept by 1 config, candidate 1 (model 1) by 2
    configs = arr(0, 1, 3)  # stage-0 digits 0, 1, 1
    res = round_fn([RoundRequest(sp, configs, [0])], i32(1, 1, 0, 0), i32(0, 0, 0, 0), curves)
    assert res.placements == [Placement(0, 0, 1)]
    assert res.configs[0].tolist() == [1, 3]


@pytest.mark.parametrize("round_fn", ROUNDS)
def test_full_ties_pick_the_smaller_model_id(round_fn):
    sp = WorkflowSpace.from_candidates([[3, 1, 2]], [0])
    curves = flat_curves(4)
    res = round_fn([RoundRequest(sp, arr(0, 1, 2), [0])], i32(0, 1, 1, 1), i32(0, 0, 0, 0), curves)
    assert res.placements == [Placement(0, 0, 1)]
    assert res.configs[0].tolist() == [1]


@pytest.mark.parametrize("round_fn", ROUNDS)
def test_utilization_prefers_the_engine_far_from_saturation(round_fn):
    sp = WorkflowSpace.from_candidates([[0, 1]], [0])
    # both saturate at occupancy 4; model 0 is at 3 (small gain), model 1 at 0 (big gain)
    curves = np.array([[0, 40, 70, 90, 100, 100], [0, 40, 70, 90, 100, 100]], dtype=np.float64)
    res = round_fn([RoundRequest(sp, arr(0, 1), [0])], i32(1, 4), i32(3, 0), curves)
    assert res.placements == [Placement(0, 0, 1)]
    # occupancy past the curve's end reads its last value: no gain on model 0, still placed there
    only0 = WorkflowSpace.from_candidates([[0]], [0])
    res = round_fn([RoundRequest(only0, arr(0), [0])], i32(1, 0), i32(50, 0), curves)
    assert res.placements == [Placement(0, 0, 0)]


@pytest.mark.parametrize("round_fn", ROUNDS)
def test_an_idle_pool_places_on_the_model_that_serves_more(round_fn):
    """Gains share one scale across models: a slot of a fast model adds more requests/second
    than a slot of a slow one, until the fast one saturates."""
    sp = WorkflowSpace.from_candidates([[0, 1]], [0])
    slow_fast = np.array([[0, 2, 4, 4], [0, 10, 20, 20]], dtype=np.float64)
    res = round_fn([RoundRequest(sp, arr(0, 1), [0])], i32(3, 3), i32(0, 0), slow_fast)
    assert res.placements == [Placement(0, 0, 1)]
    # the fast model saturated: the slow one's next slot now adds more
    res = round_fn([RoundRequest(sp, arr(0, 1), [0])], i32(3, 1), i32(0, 2), slow_fast)
    assert res.placements == [Placement(0, 0, 0)]


@pytest.mark.parametrize("round_fn", ROUNDS)
def test_deeper_stages_first_and_capacity_counts_within_the_round(round_fn):
    # a fan-out: stages 1 and 2 at depth 1, stage 3 at depth 2 (all ready for the test)
    sp = WorkflowSpace.from_candidates([[0], [0, 1], [0, 1], [0, 1]], [0, 1, 1, 2])
    curves = flat_curves(2)
    configs = np.arange(sp.size, dtype=np.int64)
    res = round_fn([RoundRequest(sp, configs, [2, 1, 3])], i32(2, 1), i32(0, 0), curves)
    assert [p.stage for p in res.placements] == [3, 1, 2]
    assert sorted(p.model for p in res.placements) == [0, 0, 1]
    narrowed = res.configs[0]
    for p in res.placements:
        cand = list(sp.stage_models[p.stage]).index(p.model)
        assert (sp.candidate(narrowed, p.stage) == cand).all()
    assert len(narrowed) == 1  # stage 0 has one candidate; the three placed stages fix the rest


@pytest.mark.parametrize("round_fn", ROUNDS)
def test_per_input_bound_configuration(round_fn):
    # per-input / per-workflow policies: one bound configuration, |C(r)| = 1
    sp = WorkflowSpace.from_candidates([[0, 1, 2], [0, 1, 2]], [0, 1])
    curves = flat_curves(3)
    q = [RoundRequest(sp, arr(2 + 3 * 1), [0]),  # stage 0 -> model 2
         RoundRequest(sp, arr(0 + 3 * 2), [1]),  # stage 1 -> model 2
         RoundRequest(sp, arr(1), [0])]          # stage 0 -> model 1
    res = round_fn(q, i32(5, 5, 1), i32(0, 0, 0), curves)
    assert res.placements == [Placement(0, 0, 2), Placement(2, 0, 1)]  # request 1: model 2 full
    assert res.configs[0].tolist() == [5] and res.configs[2].tolist() == [1]


@pytest.mark.parametrize("round_fn", ROUNDS)
def test_requests_without_options_or_ready_stages_are_skipped(round_fn):
    sp = WorkflowSpace.from_candidates([[0, 1]], [0])
    q = [RoundRequest(sp, np.empty(0, np.int64), [0]), RoundRequest(sp, arr(0, 1), []),
         RoundRequest(sp, arr(1), [0])]
    res = round_fn(q, i32(1, 1), i32(0, 0), flat_curves(2))
    assert res.placements == [Placement(2, 0, 1)]


# ------------------------------------------------------------------------------------------
# input checks


def _ok_args():
    sp = WorkflowSpace.from_candidates([[0, 1]], [0])
    return [RoundRequest(sp, arr(0, 1), [0])], i32(1, 1), i32(0, 0), flat_curves(2)


@pytest.mark.parametrize("round_fn", ROUNDS)
@pytest.mark.parametrize("change, match", [
    (lambda a: a.__setitem__(1, np.array([1.0, 1.0])), "free must hold integers"),
    (lambda a: a.__setitem__(2, i32(0, 0, 0)), "occupancy has 3 entries"),
    (lambda a: a.__setitem__(2, i32(0, -1)), "occupancy must be >= 0"),
    (lambda a: a.__setitem__(3, np.ones((3, 4))), "curves must be a 2-D array"),
    (lambda a: a.__setitem__(3, np.full((2, 4), np.nan)), "finite"),
    (lambda a: a.append(0), "beam_width must be in"),
    (lambda a: a.append(-1), "beam_width must be in"),
    (lambda a: a.append(2.0), "beam_width must be an integer"),
    (lambda a: setattr(a[0][0], "configs", arr(1, 0)), "sorted, unique"),
    (lambda a: setattr(a[0][0], "configs", arr(0, 0)), "sorted, unique"),
    (lambda a: setattr(a[0][0], "configs", arr(0, 2)), r"\[0, 2\)"),
    (lambda a: setattr(a[0][0], "configs", np.array([0, 1], dtype=np.int32)), "int64"),
    (lambda a: setattr(a[0][0], "configs", [0, 1]), "numpy int64 array"),
    (lambda a: setattr(a[0][0], "ready", [0, 0]), "twice"),
    (lambda a: setattr(a[0][0], "ready", [1]), "outside"),
    (lambda a: setattr(a[0][0], "ready", ["x"]), "stage indices"),
    (lambda a: setattr(a[0][0], "ready", [0.0]), "stage indices"),
    (lambda a: a.__setitem__(0, [object()]), "not a RoundRequest"),
    (lambda a: a[0].append(RoundRequest(WorkflowSpace.from_candidates([[5]], [0]), arr(0), [0])),
     "names model 5"),
])
def test_bad_input_is_a_value_error(round_fn, change, match):
    args = list(_ok_args())
    change(args)
    with pytest.raises(ValueError, match=match):
        round_fn(*args)


@pytest.mark.parametrize("make", [
    lambda: WorkflowSpace.from_candidates([], []),
    lambda: WorkflowSpace.from_candidates([[0, 0]], [0]),
    lambda: WorkflowSpace.from_candidates([[0]], [-1]),
    lambda: WorkflowSpace.from_candidates([[0], [1]], [0]),
    lambda: WorkflowSpace(np.array([[0, 1]]), np.array([2]), np.array([2]), np.array([0])),
    lambda: WorkflowSpace(np.array([[0, 1]]), np.array([3]), np.array([1]), np.array([0])),
    lambda: WorkflowSpace(np.array([[0, 5]]), np.array([1]), np.array([1]), np.array([0])),
])
def test_bad_workflow_space_is_a_value_error(make):
    with pytest.raises(ValueError):
        make()


def test_missing_extension_is_a_clear_error(monkeypatch):
    sx.require_extension()  # built: no error
    monkeypatch.setattr(sx, "_beam", None)
    with pytest.raises(RuntimeError, match=r"aragog\.scheduler_ext\._beam is missing; reinstall"):
        sx.require_extension()
    with pytest.raises(RuntimeError, match="pip install"):
        schedule_round(*_ok_args())
    assert reference_round(*_ok_args()).placements  # the reference needs no extension


def test_returned_configs_are_read_only_and_carry_state():
    sp = WorkflowSpace.from_candidates([[0, 1], [0, 1]], [0, 1])
    rr = RoundRequest(sp, np.arange(4, dtype=np.int64), [0])
    res = schedule_round([rr], i32(1, 1), i32(0, 0), flat_curves(2))
    narrowed = res.configs[0]
    with pytest.raises(ValueError):
        narrowed[0] = 3
    # the scheduler assigns the narrowed C(r) and the next stage: state follows the new array
    first = sx._request_state(rr)
    # a caller that does not assign the narrowed C(r) keeps the request's state
    assert same(schedule_round([rr], i32(1, 1), i32(0, 0), flat_curves(2)), res)
    assert sx._request_state(rr) is first and first.cached_stages == [0]
    rr.configs = narrowed
    rr.ready = [1]
    # a round without capacity for it: counts of the ready stage get cached, then reused
    assert schedule_round([rr], i32(0, 0), i32(1, 1), flat_curves(2)).placements == []
    state = sx._request_state(rr)  # made for the narrowed array by the round that returned it
    assert state is not first and state.cached_stages == [1]
    assert schedule_round([rr], i32(0, 0), i32(1, 1), flat_curves(2)).placements == []
    assert sx._request_state(rr) is state
    concave = np.array([[0, 4, 6, 7, 7], [0, 4, 6, 7, 7]], dtype=np.float64)
    again = schedule_round([rr], i32(1, 1), i32(1, 0), concave)
    assert again.placements == [Placement(0, 1, 1)]  # model 1 is idle: larger gain
    assert same(again, reference_round([rr], i32(1, 1), i32(1, 0), concave))
    # several ready stages: their joint counts are cached too
    rr2 = RoundRequest(sp, np.arange(4, dtype=np.int64), [1, 0])
    schedule_round([rr2], i32(0, 0), i32(0, 0), flat_curves(2))
    assert sx._request_state(rr2).joint_ready == [1, 0]


# ------------------------------------------------------------------------------------------
# parity with the reference (hypothesis)


@st.composite
def spaces(draw, n_models: int, max_stages: int = 5, max_radix: int = 4):
    n_stages = draw(st.integers(1, max_stages))
    cands = []
    for _ in range(n_stages):
        k = draw(st.integers(1, min(max_radix, n_models)))
        cands.append(draw(st.permutations(range(n_models)))[:k])
    depths = draw(st.lists(st.integers(0, 3), min_size=n_stages, max_size=n_stages))
    space = WorkflowSpace.from_candidates(cands, depths)
    if n_stages > 1 and draw(st.booleans()):
        # another digit order: the mixed radix need not give stage 0 the smallest stride
        order = draw(st.permutations(range(n_stages)))
        strides = np.zeros(n_stages, dtype=np.int64)
        acc = 1
        for s in order:
            strides[s] = acc
            acc *= int(space.radices[s])
        space = WorkflowSpace(space.stage_models, space.radices, strides, space.depths)
    return space


@st.composite
def option_sets(draw, size: int):
    kind = draw(st.sampled_from(["any", "any", "single", "empty", "all"]))
    if kind == "single":
        return arr(draw(st.integers(0, size - 1)))
    if kind == "empty":
        return np.empty(0, dtype=np.int64)
    if kind == "all" and size <= 4096:
        return np.arange(size, dtype=np.int64)
    picks = draw(st.lists(st.integers(0, size - 1), min_size=1, max_size=40))
    return np.unique(np.array(picks, dtype=np.int64))


@st.composite
def rounds(draw, max_requests: int = 8, max_radix: int = 4, max_stages: int = 5,
           max_models: int = 6):
    n_models = draw(st.integers(1, max_models))
    shared = [draw(spaces(n_models, max_stages, max_radix)) for _ in range(draw(st.integers(1, 3)))]
    queue = []
    for _ in range(draw(st.integers(0, max_requests))):
        sp = draw(st.sampled_from(shared))
        ready = draw(st.lists(st.integers(0, sp.n_stages - 1), unique=True, max_size=sp.n_stages))
        queue.append(RoundRequest(sp, draw(option_sets(sp.size)), ready))
    free = np.array(draw(st.lists(st.integers(-1, 3), min_size=n_models, max_size=n_models)),
                    dtype=np.int32)
    occ = np.array(draw(st.lists(st.integers(0, 6), min_size=n_models, max_size=n_models)),
                   dtype=np.int32)
    length = draw(st.integers(1, 6))
    if draw(st.booleans()):
        # small integers: many exact utilization ties
        values = st.integers(0, 3).map(float)
    else:
        values = st.floats(0, 1e6, allow_nan=False, allow_infinity=False)
    curves = np.array(draw(st.lists(st.lists(values, min_size=length, max_size=length),
                                    min_size=n_models, max_size=n_models)), dtype=np.float64)
    beam = draw(st.integers(1, 6))
    return queue, free, occ, curves, beam


def check_result(queue, free, curves, res):
    """Properties every round must have, whatever the ranking."""
    used = np.zeros(len(free), dtype=np.int64)
    for p in res.placements:
        rr = queue[p.request]
        assert p.stage in rr.ready
        used[p.model] += 1
        cand = list(rr.space.stage_models[p.stage]).index(p.model)
        assert (rr.space.candidate(res.configs[p.request], p.stage) == cand).all()
    assert (used <= np.maximum(free, 0)).all()
    assert len({(p.request, p.stage) for p in res.placements}) == len(res.placements)
    for pos, narrowed in res.configs.items():
        assert len(narrowed) >= 1 and np.isin(narrowed, queue[pos].configs).all()


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rounds())
def test_extension_matches_reference(case):
    queue, free, occ, curves, beam = case
    ref = reference_round(queue, free, occ, curves, beam)
    ext = schedule_round(queue, free, occ, curves, beam)
    assert ext.placements == ref.placements
    assert ext.configs.keys() == ref.configs.keys()
    for k in ref.configs:
        assert ext.configs[k].dtype == np.int64
        assert np.array_equal(ext.configs[k], ref.configs[k])
    check_result(queue, free, curves, ext)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rounds(max_requests=5, max_radix=24, max_stages=4, max_models=30))
def test_extension_matches_reference_on_wide_stages(case):
    # wide stages make the joint key space of several ready stages exceed the dense table,
    # exercising the sorted-keys path of the kernel
    queue, free, occ, curves, beam = case
    assert same(schedule_round(queue, free, occ, curves, beam),
                reference_round(queue, free, occ, curves, beam))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rounds(), st.data())
def test_parity_holds_across_rounds_with_cached_state(case, data):
    """Apply each round like the scheduler does and go on: cached per-request state stays valid."""
    queue, free, occ, curves, beam = case
    free = free.copy()
    occ = occ.copy()
    for _ in range(4):
        ext = schedule_round(queue, free, occ, curves, beam)
        assert same(ext, reference_round(queue, free, occ, curves, beam))
        for pos, narrowed in ext.configs.items():
            queue[pos].configs = narrowed
        for p in ext.placements:
            queue[p.request].ready.remove(p.stage)
            free[p.model] -= 1
            occ[p.model] += 1
        # engines free capacity, and some requests get a new ready stage
        if len(free):
            m = data.draw(st.integers(0, len(free) - 1))
            free[m] += data.draw(st.integers(0, 2))
        for rr in queue:
            if data.draw(st.booleans()):
                rr.ready = data.draw(st.lists(st.integers(0, rr.space.n_stages - 1), unique=True,
                                              max_size=rr.space.n_stages))


def test_joint_counts_of_wide_ready_stages_match():
    """3 ready stages of 20 candidates: 8000 joint keys, more than the dense table holds."""
    rng = np.random.default_rng(3)
    n_models = 24
    for trial in range(40):
        cands = [list(rng.choice(n_models, size=20, replace=False)) for _ in range(3)]
        sp = WorkflowSpace.from_candidates(cands, [1, 1, 1])
        queue = []
        for _ in range(6):
            n = int(rng.integers(1, 60))
            configs = np.sort(rng.choice(sp.size, size=n, replace=False)).astype(np.int64)
            queue.append(RoundRequest(sp, configs, [2, 0, 1]))
        free = rng.integers(0, 3, size=n_models).astype(np.int32)
        occ = rng.integers(0, 4, size=n_models).astype(np.int32)
        curves = np.sort(rng.integers(0, 5, size=(n_models, 6)), axis=1).astype(np.float64)
        for beam in (1, 3, 8):
            assert same(schedule_round(queue, free, occ, curves, beam),
                        reference_round(queue, free, occ, curves, beam)), (trial, beam)


def test_larger_random_rounds_match():
    """A few bigger rounds than hypothesis draws: 6 stages x 8 candidates, 300 requests."""
    rng = np.random.default_rng(7)
    n_models = 12
    for trial in range(6):
        shared = []
        for _ in range(3):
            cands = [list(rng.choice(n_models, size=rng.integers(1, 9), replace=False))
                     for _ in range(6)]
            shared.append(WorkflowSpace.from_candidates(cands, list(rng.integers(0, 4, size=6))))
        queue = []
        for _ in range(300):
            sp = shared[rng.integers(len(shared))]
            n = int(rng.integers(1, min(sp.size, 500) + 1))
            configs = np.sort(rng.choice(sp.size, size=n, replace=False)).astype(np.int64)
            ready = list(rng.choice(6, size=rng.integers(0, 4), replace=False))
            queue.append(RoundRequest(sp, configs, [int(s) for s in ready]))
        free = rng.integers(0, 12, size=n_models).astype(np.int32)
        occ = rng.integers(0, 20, size=n_models).astype(np.int32)
        curves = np.sort(rng.uniform(0, 100, size=(n_models, 24)), axis=1)
        for beam in (1, 4, 8):
            ref = reference_round(queue, free, occ, curves, beam)
            ext = schedule_round(queue, free, occ, curves, beam)
            assert same(ext, ref), (trial, beam)
            check_result(queue, free, curves, ext)


@pytest.mark.parametrize("radices", [[8] * 11, [7, 9, 255, 255, 200, 3, 50],
                                     [1, 255, 255, 255, 255]])
def test_spaces_past_2_31_configs_match(radices):
    """Config indices >= 2^31 take the kernel's reciprocal digit path instead of the exact
    32-bit multiply-shift; both must agree with the reference's integer division."""
    n_models = max(radices)
    rng = np.random.default_rng(len(radices))
    cands = [list(rng.choice(n_models, size=r, replace=False)) for r in radices]
    sp = WorkflowSpace.from_candidates(cands, list(range(len(radices))))
    assert sp.size > 2**31
    queue = []
    for _ in range(30):
        picks = rng.integers(0, sp.size, size=int(rng.integers(1, 50)))
        # block edges, where a rounding error in the quotient would show
        s = int(rng.integers(len(radices)))
        k = int(rng.integers(1, max(2, sp.size // int(sp.strides[s]))))
        edges = [k * int(sp.strides[s]) - 1, k * int(sp.strides[s]), sp.size - 1]
        configs = np.unique(np.concatenate([picks, edges]).astype(np.int64))
        ready = [int(x) for x in
                 rng.choice(len(radices), size=int(rng.integers(1, 3)), replace=False)]
        queue.append(RoundRequest(sp, configs, ready))
    free = rng.integers(0, 3, size=n_models).astype(np.int32)
    occ = np.zeros(n_models, dtype=np.int32)
    curves = np.tile(np.array([0.0, 3.0, 5.0, 6.0]), (n_models, 1))
    for beam in (1, 4):
        res = schedule_round(queue, free, occ, curves, beam)
        assert same(res, reference_round(queue, free, occ, curves, beam))
        check_result(queue, free, curves, res)
    # every stage's counts, straight from the digits
    for rr in queue:
        for stage in range(len(radices)):
            rr.ready = [stage]
            schedule_round([rr], np.zeros(n_models, np.int32), occ, curves)
            counts = np.bincount(sp.candidate(rr.configs, stage), minlength=radices[stage])
            res = schedule_round([rr], np.ones(n_models, np.int32), occ, curves)
            cand = list(sp.stage_models[stage]).index(res.placements[0].model)
            assert len(res.configs[0]) == counts[cand]
