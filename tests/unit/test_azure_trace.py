"""The shipped Azure trace, its compaction, the token-count -> workflow rule and the windows
that replay it time-compressed."""

import gzip
import hashlib
import importlib.resources

import numpy as np
import pytest
from aragog.loadgen import arrivals, azure_trace
from aragog.loadgen.azure_trace import TokenTrace

SOURCE = """TIMESTAMP,ContextTokens,GeneratedTokens
2023-11-16 18:17:04.0319600,3180,8
2023-11-16 18:17:03.9799600,4808,10
2023-11-16 18:17:05.5000004,110,27
2023-11-16 18:17:09.1206440,7433,14
"""


def shipped_path():
    return importlib.resources.files("aragog.loadgen").joinpath(azure_trace.SHIPPED)


def test_shipped_trace_is_the_documented_copy():
    raw = shipped_path().read_bytes()
    # the figures traces/README.md states
    assert len(raw) == 50_941
    assert hashlib.sha256(raw).hexdigest() == (
        "3322e48b16b929764f243f841ede2b7b56003a35013ab7b0bf334692e87f71aa")
    t = azure_trace.load()
    assert len(t) == 8819 and t.offsets[0] == 0
    assert t.offsets[-1] == pytest.approx(3435.9, abs=0.1)
    assert np.all(np.diff(t.offsets) >= 0)
    assert np.median(t.context_tokens) == 1469 and np.median(t.generated_tokens) == 13
    assert arrivals.interarrival_cv(t.offsets) > 10  # bursty, as the README says


def test_compact_rounds_to_ms_sorts_and_is_byte_stable(tmp_path):
    src = tmp_path / "src.csv"
    src.write_text(SOURCE)
    a, b = tmp_path / "a.csv.gz", tmp_path / "b.csv.gz"
    t = azure_trace.compact(src, a)
    azure_trace.compact(src, b)
    assert a.read_bytes() == b.read_bytes()  # no timestamp in the gzip header
    text = gzip.decompress(a.read_bytes()).decode()
    assert text.splitlines() == ["offset_ms,context_tokens,generated_tokens",
                                 "0,4808,10", "52,3180,8", "1520,110,27", "5141,7433,14"]
    assert t.offsets.tolist() == [0.0, 0.052, 1.52, 5.141]
    assert t.context_tokens.tolist() == [4808, 3180, 110, 7433]


@pytest.mark.parametrize(("body", "message"), [
    ("offset_ms,context_tokens,generated_tokens\n0,1,1\n5,x,1\n", ":3: expected three integers"),
    ("offset_ms,context_tokens,generated_tokens\n0,1,1\n5,-1,1\n", ":3: negative"),
    ("offset_ms,context_tokens,generated_tokens\n9,1,1\n5,1,1\n", ":3: offset 5 ms is before"),
    ("time,ctx,gen\n0,1,1\n", ":1: header must be"),
    ("offset_ms,context_tokens,generated_tokens\n0,1,1\n", "at least two requests"),
])
def test_bad_compacted_rows_name_the_line(tmp_path, body, message):
    path = tmp_path / "t.csv"
    path.write_text(body)
    with pytest.raises(ValueError, match=message):
        azure_trace.read(path)


def test_compact_refuses_another_header(tmp_path):
    src = tmp_path / "src.csv"
    src.write_text("when,prompt,output\n2023-11-16 18:17:04.0,1,1\n")
    with pytest.raises(ValueError, match=":1: header must be TIMESTAMP"):
        azure_trace.compact(src, tmp_path / "out.csv.gz")


def tokens(ctx, gen, offsets=None):
    n = len(ctx)
    return TokenTrace(np.arange(n, dtype=float) if offsets is None else np.array(offsets, float),
                      np.array(ctx), np.array(gen))


def test_workflow_rule_splits_at_the_medians():
    # medians: context 100, generated 10; a value equal to the median is "at most"
    t = tokens([50, 100, 150, 200, 100], [5, 20, 10, 30, 10])
    assert azure_trace.workflow_of(t) == ["voting", "self-refine", "text-to-sql",
                                          "task-decomposition", "voting"]
    assert azure_trace.mix(t) == {"self-refine": 0.2, "task-decomposition": 0.2,
                                  "text-to-sql": 0.2, "voting": 0.4}
    assert azure_trace.mix(t, ["voting", "self-refine"]) == pytest.approx(
        {"self-refine": 1 / 3, "voting": 2 / 3})


def test_the_shipped_trace_maps_to_all_four_workflows_in_near_equal_shares():
    shares = azure_trace.mix(azure_trace.load())
    assert set(shares) == {"voting", "self-refine", "text-to-sql", "task-decomposition"}
    assert all(0.2 < x < 0.3 for x in shares.values())


def test_window_keeps_the_gaps_and_sets_the_mean_rate():
    t = tokens([1] * 6, [1] * 6, offsets=[0.0, 1.0, 1.5, 4.5, 6.0, 10.0])
    w = azure_trace.window(t, start=1, n=3, rate=2.0)
    # requests 1..3 at 1.0, 1.5, 4.5; the span to request 4 (6.0) is 5 s of trace, which
    # becomes n / rate = 1.5 s: every gap scaled by 0.3
    assert w.offsets.tolist() == pytest.approx([0.0, 0.15, 1.05])
    assert w.compression == pytest.approx(5.0 / 1.5)
    assert w.start == 1 and len(w.workflows) == 3
    gaps_in, gaps_out = np.diff([1.0, 1.5, 4.5]), np.diff(w.offsets)
    assert gaps_out / gaps_in == pytest.approx([0.3, 0.3])


def test_window_of_some_workflows_skips_the_others():
    # voting at 0, 2, 4, 6; self-refine at 1, 3, 5
    t = tokens([1] * 7, [1, 9, 1, 9, 1, 9, 1])
    assert azure_trace.workflow_of(t)[:2] == ["voting", "self-refine"]
    w = azure_trace.window(t, start=0, n=2, rate=1.0, workflows=["voting"])
    assert w.workflows == ["voting", "voting"]
    assert w.offsets.tolist() == pytest.approx([0.0, 1.0])  # trace 0, 2 (next at 4) -> 2 s


def test_window_bounds():
    t = tokens([1] * 5, [1] * 5)
    with pytest.raises(ValueError, match="outside"):
        azure_trace.window(t, start=2, n=3, rate=1.0)  # needs request 5
    with pytest.raises(ValueError, match="rate"):
        azure_trace.window(t, start=0, n=2, rate=0.0)
    same = tokens([1] * 4, [1] * 4, offsets=[0.0, 0.0, 0.0, 1.0])
    with pytest.raises(ValueError, match="same time"):
        azure_trace.window(same, start=0, n=2, rate=1.0)
    with pytest.raises(ValueError, match="needs 6"):
        azure_trace.window_start(t, n=5, seed=0)


def test_window_starts_are_seeded_and_in_range():
    t = azure_trace.load()
    starts = [azure_trace.window_start(t, 200, s) for s in range(20)]
    assert starts == [azure_trace.window_start(t, 200, s) for s in range(20)]
    assert len(set(starts)) == 20 and all(0 <= s < len(t) - 200 for s in starts)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_replayed_windows_of_the_real_trace_stay_bursty(seed):
    t = azure_trace.load()
    start = azure_trace.window_start(t, 300, seed)
    w = azure_trace.window(t, start, 300, rate=5.0)
    assert len(w.offsets) == 300 and w.offsets[-1] < 60.0  # 300 arrivals in 60 s
    assert np.all(np.diff(w.offsets) >= 0)
    assert arrivals.interarrival_cv(w.offsets) > 1.2  # a Poisson window would be ~1
    assert azure_trace.arrivals_needed(5.0, 60.0) == 300
