"""Seeded arrival processes: when requests arrive, as sorted offsets in seconds from 0.

Evaluations compare policies on the *same* arrivals, so every generator is a pure function
of its arguments and a seed (numpy's PCG64). Every generator is bounded: at most
MAX_ARRIVALS arrivals and MAX_DURATION_S seconds; asking for more raises ValueError up front
instead of filling memory.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

MAX_ARRIVALS = 200_000
MAX_DURATION_S = 86_400.0
TRACE_HEADER = ("timestamp", "workflow", "request_id")
TRACE_ID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,48}$")
"""Trace request ids; 48 leaves room for the runner's per-run prefix in the router's 64."""


def _positive(name: str, value: float, upper: float = math.inf) -> float:
    value = float(value)
    if not (math.isfinite(value) and 0 < value <= upper):
        raise ValueError(f"{name} must be a positive number at most {upper:g}, got {value!r}")
    return value


def _rate(name: str, value: float) -> float:
    value = float(value)
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a finite rate >= 0 (requests/s), got {value!r}")
    return value


def _expect_at_most(expected: float, what: str) -> None:
    if expected > MAX_ARRIVALS:
        raise ValueError(f"{what} expects {expected:.0f} arrivals; the limit is {MAX_ARRIVALS}")


def _uniform_poisson(rng: np.random.Generator, rate: float, start: float,
                     length: float) -> np.ndarray:
    """A homogeneous Poisson process on [start, start+length): Poisson count, uniform times."""
    n = min(int(rng.poisson(rate * length)), MAX_ARRIVALS)
    return np.sort(rng.uniform(start, start + length, n))


def poisson(rate: float, duration: float, seed: int) -> np.ndarray:
    """Homogeneous Poisson arrivals at `rate` per second over [0, duration)."""
    rate = _rate("rate", rate)
    duration = _positive("duration", duration, MAX_DURATION_S)
    _expect_at_most(rate * duration, "poisson")
    return _uniform_poisson(np.random.default_rng(seed), rate, 0.0, duration)


def sweep(rates: Sequence[float], step_duration: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Consecutive Poisson steps (step i at rates[i] over [i*d, (i+1)*d)), e.g. a load ramp.

    Returns (offsets, step index of each arrival).
    """
    rates = [_rate(f"rates[{i}]", r) for i, r in enumerate(rates)]
    if not rates:
        raise ValueError("sweep needs at least one rate")
    d = _positive("step_duration", step_duration, MAX_DURATION_S / len(rates))
    _expect_at_most(sum(rates) * d, "sweep")
    rng = np.random.default_rng(seed)
    parts = [_uniform_poisson(rng, r, i * d, d) for i, r in enumerate(rates)]
    steps = np.concatenate([np.full(len(p), i, dtype=np.int64) for i, p in enumerate(parts)])
    return np.concatenate(parts), steps


def square_wave_rate(t: np.ndarray | float, low: float, high: float, period: float) -> np.ndarray:
    """The square wave's rate at time(s) t: `low` in each period's first half, `high` after."""
    return np.where(np.mod(t, period) < period / 2, low, high)


def square_wave(low: float, high: float, period: float, duration: float, seed: int) -> np.ndarray:
    """Non-homogeneous Poisson arrivals whose rate alternates low/high every half period
    (thinning: candidates at `high`, each kept with probability rate(t)/high)."""
    low, high = _rate("low", low), _rate("high", high)
    if low > high:
        raise ValueError(f"square_wave needs low <= high, got low={low} high={high}")
    period = _positive("period", period, MAX_DURATION_S)
    duration = _positive("duration", duration, MAX_DURATION_S)
    _expect_at_most(high * duration, "square_wave")
    rng = np.random.default_rng(seed)
    candidates = _uniform_poisson(rng, high, 0.0, duration)
    if high == 0:
        return candidates
    p_keep = square_wave_rate(candidates, low, high, period) / high
    keep = rng.uniform(0, 1, len(candidates)) < p_keep
    return candidates[keep]


def mmpp(rates: Sequence[float], mean_dwell: float | Sequence[float], duration: float, seed: int,
         return_states: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Markov-modulated Poisson arrivals: bursts.

    A continuous-time Markov chain starts in state 0, stays in state i for an exponential
    time of mean mean_dwell[i] (one number: the same for all), then jumps to another state
    chosen uniformly; while in state i requests arrive as Poisson at rates[i]. With rates
    far apart, interarrival times vary more than a Poisson process's (coefficient of
    variation > 1). With return_states, returns (offsets, state of each arrival).
    """
    rates = [_rate(f"rates[{i}]", r) for i, r in enumerate(rates)]
    if len(rates) < 2:
        raise ValueError("mmpp needs at least two states (rates)")
    dwell = [mean_dwell] * len(rates) if np.ndim(mean_dwell) == 0 else list(mean_dwell)  # type: ignore[list-item,arg-type]
    if len(dwell) != len(rates):
        raise ValueError(f"mmpp: {len(dwell)} mean_dwell values for {len(rates)} states")
    dwell = [_positive(f"mean_dwell[{i}]", x) for i, x in enumerate(dwell)]
    duration = _positive("duration", duration, MAX_DURATION_S)
    _expect_at_most(max(rates) * duration, "mmpp")
    if duration / min(dwell) > MAX_ARRIVALS:
        raise ValueError(f"mmpp: duration/mean_dwell = {duration / min(dwell):.0f} state changes "
                         f"expected; the limit is {MAX_ARRIVALS}")
    rng = np.random.default_rng(seed)
    t, state, parts, states = 0.0, 0, [], []
    while t < duration:
        length = min(rng.exponential(dwell[state]), duration - t)
        part = _uniform_poisson(rng, rates[state], t, length)
        parts.append(part)
        states.append(np.full(len(part), state, dtype=np.int64))
        t += length
        state = int(rng.choice([s for s in range(len(rates)) if s != state]))
    offsets = np.concatenate(parts)[:MAX_ARRIVALS]
    return (offsets, np.concatenate(states)[:MAX_ARRIVALS]) if return_states else offsets


class Trace(NamedTuple):
    """A recorded arrival trace: offsets from 0 (sorted), the workflow and id of each."""

    offsets: np.ndarray
    workflows: list[str]
    request_ids: list[str]


def trace(path: str | Path) -> Trace:
    """Read a CSV trace with header `timestamp,workflow,request_id`.

    Timestamps are seconds, relative or absolute (Unix): they are shifted to start at 0 and
    rows are sorted by them (stable). request_id may be empty; non-empty ids must be unique.
    A bad row raises ValueError naming the file and line.
    """
    path = Path(path)
    rows: list[tuple[float, str, str]] = []
    seen: dict[str, int] = {}
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or tuple(h.strip() for h in header) != TRACE_HEADER:
            raise ValueError(f"{path}:1: header must be {','.join(TRACE_HEADER)}, got {header!r}")
        for row in reader:
            line = reader.line_num
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if len(row) != 3:
                raise ValueError(f"{path}:{line}: expected 3 fields (timestamp,workflow,"
                                 f"request_id), got {len(row)}: {row!r}")
            ts_text, workflow, rid = (x.strip() for x in row)
            try:
                ts = float(ts_text)
            except ValueError:
                raise ValueError(f"{path}:{line}: timestamp {ts_text!r} is not a number") from None
            if not math.isfinite(ts) or ts < 0:
                raise ValueError(f"{path}:{line}: timestamp {ts_text!r} must be finite and >= 0")
            if not workflow:
                raise ValueError(f"{path}:{line}: workflow is empty")
            if rid:
                if not TRACE_ID_RE.match(rid):
                    raise ValueError(f"{path}:{line}: request_id {rid!r} must be 1-48 of "
                                     "[A-Za-z0-9_.-]")
                if rid in seen:
                    raise ValueError(f"{path}:{line}: request_id {rid!r} repeats line {seen[rid]}")
                seen[rid] = line
            rows.append((ts, workflow, rid))
            if len(rows) > MAX_ARRIVALS:
                raise ValueError(f"{path}: more than {MAX_ARRIVALS} rows")
    if not rows:
        raise ValueError(f"{path}: no rows after the header")
    order = sorted(range(len(rows)), key=lambda i: rows[i][0])
    ts = np.array([rows[i][0] for i in order], dtype=np.float64)
    offsets = ts - ts[0]
    if offsets[-1] > MAX_DURATION_S:
        raise ValueError(f"{path}: spans {offsets[-1]:.0f}s; the limit is {MAX_DURATION_S:.0f}s")
    return Trace(offsets, [rows[i][1] for i in order], [rows[i][2] for i in order])


def write_trace(path: str | Path, offsets: Sequence[float], workflows: Sequence[str],
                request_ids: Sequence[str] | None = None) -> None:
    """Write a trace `trace()` reads back (timestamps to the microsecond)."""
    n = len(offsets)
    if len(workflows) != n or (request_ids is not None and len(request_ids) != n):
        raise ValueError("offsets, workflows and request_ids must have the same length")
    ids = request_ids if request_ids is not None else [""] * len(offsets)
    with Path(path).open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(TRACE_HEADER)
        for t, wf, rid in zip(offsets, workflows, ids, strict=True):
            w.writerow([f"{float(t):.6f}", wf, rid])


def interarrival_cv(offsets: np.ndarray) -> float:
    """Coefficient of variation of interarrival times: ~1 for Poisson, > 1 for bursty."""
    gaps = np.diff(np.asarray(offsets, dtype=np.float64))
    if len(gaps) < 2 or gaps.mean() == 0:
        raise ValueError("need at least three arrivals spread in time")
    return float(gaps.std() / gaps.mean())
