"""Arrival processes: counts, determinism, shape (square wave, burstiness) and traces.

Count tolerances are 6 standard deviations of a Poisson count: with fixed seeds the draws are
fixed, and even a change of numpy's streams could not plausibly flake them.
"""

import importlib.resources
import math

import numpy as np
import pytest
from aragog.loadgen import arrivals
from aragog.loadgen.client import check_loopback, normalize_answer
from aragog.loadgen.runner import plan
from aragog.loadgen.workload import WorkItem, load_workload


def within(n: int, mean: float, sds: float = 6.0) -> bool:
    return abs(n - mean) <= sds * math.sqrt(mean)


def sorted_within(x: np.ndarray, lo: float, hi: float) -> bool:
    return bool(np.all(np.diff(x) >= 0) and (len(x) == 0 or (x[0] >= lo and x[-1] < hi)))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_poisson_count_and_range(seed):
    x = arrivals.poisson(20.0, 50.0, seed)
    assert within(len(x), 1000) and sorted_within(x, 0, 50)


def test_generators_are_deterministic_per_seed():
    for make in (lambda s: arrivals.poisson(5, 20, s), lambda s: arrivals.sweep([1, 5], 10, s)[0],
                 lambda s: arrivals.square_wave(1, 9, 4, 20, s),
                 lambda s: arrivals.mmpp([1, 20], 2, 20, s)):
        assert np.array_equal(make(3), make(3))
        assert not np.array_equal(make(3), make(4))


def test_sweep_steps():
    x, steps = arrivals.sweep([2.0, 10.0, 30.0], 20.0, seed=5)
    assert sorted_within(x, 0, 60) and len(steps) == len(x)
    for i, rate in enumerate([2.0, 10.0, 30.0]):
        part = x[steps == i]
        assert within(len(part), rate * 20) and sorted_within(part, 20 * i, 20 * (i + 1))


def test_square_wave_high_half_busier():
    low, high, period = 2.0, 20.0, 10.0
    x = arrivals.square_wave(low, high, period, 200.0, seed=11)
    in_high = np.mod(x, period) >= period / 2
    assert within(int(in_high.sum()), high * 100) and within(int((~in_high).sum()), low * 100)
    assert in_high.sum() > 3 * (~in_high).sum()
    assert list(arrivals.square_wave_rate(np.array([1.0, 6.0]), low, high, period)) == [low, high]


def test_mmpp_is_bursty_and_poisson_is_not():
    bursty, states = arrivals.mmpp([1.0, 40.0], [5.0, 1.0], 600.0, seed=2, return_states=True)
    assert arrivals.interarrival_cv(bursty) > 1.5
    assert set(states.tolist()) == {0, 1} and len(states) == len(bursty)
    assert sorted_within(bursty, 0, 600)
    assert 0.9 < arrivals.interarrival_cv(arrivals.poisson(10.0, 600.0, seed=2)) < 1.1


def test_bounds_are_enforced():
    with pytest.raises(ValueError, match="limit is"):
        arrivals.poisson(1e6, 1000, 0)
    with pytest.raises(ValueError, match="duration"):
        arrivals.poisson(1, -1, 0)
    with pytest.raises(ValueError, match="low <= high"):
        arrivals.square_wave(5, 1, 1, 10, 0)
    with pytest.raises(ValueError, match="two states"):
        arrivals.mmpp([1], 1, 10, 0)


def test_trace_round_trip_normalizes_absolute_times(tmp_path):
    path = tmp_path / "t.csv"
    base = 1_700_000_000.0
    arrivals.write_trace(path, [base + 2.5, base, base + 1.25], ["b", "a", "a"], ["r3", "r1", ""])
    t = arrivals.trace(path)
    assert t.offsets.tolist() == [0.0, 1.25, 2.5]
    assert t.workflows == ["a", "a", "b"] and t.request_ids == ["r1", "", "r3"]
    again = tmp_path / "u.csv"
    arrivals.write_trace(again, t.offsets, t.workflows, t.request_ids)
    back = arrivals.trace(again)
    assert np.array_equal(back.offsets, t.offsets) and back[1:] == t[1:]


@pytest.mark.parametrize(("body", "message"), [
    ("timestamp,workflow,request_id\n1.0,chain3,a\nsoon,chain3,b\n",
     ":3: timestamp 'soon' is not a number"),
    ("timestamp,workflow,request_id\n1.0,chain3\n", ":2: expected 3 fields"),
    ("timestamp,workflow,request_id\n1.0,,a\n", ":2: workflow is empty"),
    ("timestamp,workflow,request_id\n-1,chain3,a\n", ":2: timestamp '-1' must be finite"),
    ("timestamp,workflow,request_id\n1,w,a\n2,w,a\n", ":3: request_id 'a' repeats line 2"),
    ("time,workflow\n1,w\n", ":1: header must be"),
    ("timestamp,workflow,request_id\n", "no rows"),
])
def test_trace_bad_rows_name_the_line(tmp_path, body, message):
    path = tmp_path / "bad.csv"
    path.write_text(body)
    with pytest.raises(ValueError, match=message):
        arrivals.trace(path)


def test_shipped_sample_trace():
    ref = importlib.resources.files("aragog.loadgen").joinpath("traces/sample.csv")
    with importlib.resources.as_file(ref) as path:
        t = arrivals.trace(path)
    assert 150 <= len(t.offsets) <= 250 and t.offsets[0] == 0 and set(t.workflows) == {"chain3"}
    assert arrivals.interarrival_cv(t.offsets) > 1.2, "made from an MMPP: bursty"


def test_workload_files(tmp_path):
    j = tmp_path / "w.jsonl"
    j.write_text('{"workflow": "chain3", "input": "q1", "expected": "A", "id": 7}\n\n'
                 '{"workflow": "chain3", "input": "q2", "policy": "largest"}\n')
    assert load_workload(j) == [WorkItem("chain3", "q1", "A"),
                                WorkItem("chain3", "q2", None, "largest")]
    c = tmp_path / "w.csv"
    c.write_text("workflow,input,expected,policy\nchain3,\"q, 1\",,cheapest\n")
    assert load_workload(c) == [WorkItem("chain3", "q, 1", None, "cheapest")]
    j.write_text('{"workflow": "chain3", "input": "q1"}\n{"workflow": "chain3"}\n')
    with pytest.raises(ValueError, match=r"w.jsonl:2:"):
        load_workload(j)


def test_plan_pairs_arrivals_with_items():
    t = arrivals.Trace(np.array([0.0, 1.0, 2.0]), ["b", "a", "b"], ["x", "", ""])
    items = [("a", "qa"), ("b", "qb1"), ("b", "qb2", "B")]
    p = plan(t, items, None, "run1")
    assert [(a["workflow"], a["input"], a["request_id"]) for a in p] == [
        ("b", "qb1", "run1-x"), ("a", "qa", "run1-000001"), ("b", "qb2", "run1-000002")]
    by_time = plan([0.5, 0.1, 0.2], items, "largest", "r")
    assert [a["input"] for a in by_time] == ["qb1", "qb2", "qa"]
    with pytest.raises(ValueError, match="workflow 'c'"):
        plan([(0.0, "c")], items, None, "r")


def test_client_refuses_non_loopback_and_normalizes_answers():
    for ok in ("127.0.0.1:50051", "127.8.9.10:1", "localhost:5", "[::1]:50051", "http://127.0.0.1:9"):
        assert check_loopback(ok)
    for bad in ("10.0.0.1:50051", "example.com:443", "0.0.0.0:1", "[::]:1", "127.0.0.1"):
        with pytest.raises(ValueError):
            check_loopback(bad)
    assert normalize_answer("  The  Answer. ") == normalize_answer("the answer")
