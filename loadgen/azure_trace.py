"""Real arrivals: the Azure LLM inference trace (2023, coding service), replayed as a mixed
workload of the benchmarked workflows.

The trace (Azure/AzurePublicDataset, `data/AzureLLMInferenceTrace_code.csv`, CC-BY 4.0;
Patel et al., "Splitwise: Efficient generative LLM inference using phase splitting", ISCA
2024) records 8,819 requests to a production code-completion service over ~57 minutes:
arrival time, prompt (context) tokens and generated tokens. It ships compacted in
`traces/azure-code-2023.csv.gz` (arrival offset in ms from the first request, the two token
counts; `traces/README.md` says how it was made and checked). `compact` makes that file from
the original CSV:

    python -m aragog.loadgen.azure_trace compact AzureLLMInferenceTrace_code.csv \\
        loadgen/traces/azure-code-2023.csv.gz

**Which workflow a trace request becomes** (`workflow_of`, deterministic): its two token
counts are compared with the whole trace's medians (1,469 context tokens, 13 generated):

| context tokens \\ generated tokens | at most the median | above the median |
|---|---|---|
| at most the median | `voting` | `self-refine` |
| above the median | `text-to-sql` | `task-decomposition` |

(voting: a short question, four short answers; self-refine: a long generation, generated
again after a critique; text-to-sql: a long schema in, a short query out;
task-decomposition: a large task, three long partial answers). So long generations go to
the two workflows that generate the most tokens (self-refine 640, task-decomposition 608
per request) and long prompts to the two whose real counterparts read the most context (a
database schema, a whole problem to split). The four cells hold 23-27% of the trace each.
The token counts only choose the workflow: the request sent is one of that workflow's
held-out benchmark requests (all short texts), and what it costs is its workflow's (EMULATED
models, the YAML's output tokens).

**A window** (`window`): `n` consecutive trace requests (of the chosen workflows) from a start
index, their offsets scaled so that the window's span, up to the next request, lasts `n /
rate` seconds: the mean rate is exactly `rate`, and every gap keeps its share of the span,
so the window's bursts and lulls are the trace's. `window_start` draws the start uniformly
from a seed: seeds are independent samples of the trace's windows.
"""

from __future__ import annotations

import csv
import datetime
import gzip
import hashlib
import importlib.resources
import io
import math
import sys
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

import numpy as np

SHIPPED = "traces/azure-code-2023.csv.gz"
HEADER = ("offset_ms", "context_tokens", "generated_tokens")
SOURCE_HEADER = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
MAX_ROWS = 1_000_000
CELLS = {  # (long context, long generation) -> workflow; see the module docstring
    (False, False): "voting",
    (False, True): "self-refine",
    (True, False): "text-to-sql",
    (True, True): "task-decomposition",
}


class TokenTrace(NamedTuple):
    """Arrival offsets in seconds from the first request (sorted) and each request's tokens."""

    offsets: np.ndarray
    context_tokens: np.ndarray
    generated_tokens: np.ndarray

    def __len__(self) -> int:  # type: ignore[override] - the number of requests
        return len(self.offsets)


class Window(NamedTuple):
    """A replayed stretch of the trace: arrival offsets (s), the workflow of each, the first
    request's index in the trace, and the compression (trace seconds per replayed second)."""

    offsets: np.ndarray
    workflows: list[str]
    start: int
    compression: float


def _timestamp(text: str) -> float:
    """'2023-11-16 18:17:03.9799600' (UTC, up to 7 decimals) -> seconds since the epoch."""
    day, _, frac = text.strip().partition(".")
    t = datetime.datetime.strptime(day, "%Y-%m-%d %H:%M:%S").replace(tzinfo=datetime.UTC)
    return t.timestamp() + (float(f"0.{frac}") if frac else 0.0)


def compact(src: str | Path, dst: str | Path) -> TokenTrace:
    """Write the original CSV as `offset_ms,context_tokens,generated_tokens` (gzip, no
    timestamp in the gzip header, so the bytes depend on the data alone); return it read
    back. Offsets are rounded to the millisecond; rows keep the source's order after a
    stable sort by time."""
    rows: list[tuple[float, int, int]] = []
    with open(src, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or tuple(h.strip() for h in header) != SOURCE_HEADER:
            raise ValueError(f"{src}:1: header must be {','.join(SOURCE_HEADER)}, got {header!r}")
        for row in reader:
            if not row:
                continue
            try:
                ts, ctx, gen = row
                rows.append((_timestamp(ts), int(ctx), int(gen)))
            except ValueError as e:
                raise ValueError(f"{src}:{reader.line_num}: {e}: {row!r}") from None
    if not rows:
        raise ValueError(f"{src}: no rows after the header")
    rows.sort(key=lambda r: r[0])
    t0 = rows[0][0]
    text = io.StringIO()
    w = csv.writer(text, lineterminator="\n")
    w.writerow(HEADER)
    for t, ctx, gen in rows:
        w.writerow([round((t - t0) * 1000), ctx, gen])
    with open(dst, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0,
                                                filename="") as gz:
        gz.write(text.getvalue().encode("ascii"))
    return read(dst)


def read(path: str | Path) -> TokenTrace:
    """Read a compacted trace (gzip or plain CSV). A bad row raises ValueError naming its line:
    offsets must be integers >= 0 in non-decreasing order, token counts integers >= 0."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    offs: list[int] = []
    ctx: list[int] = []
    gen: list[int] = []
    with opener(path, "rt", newline="", encoding="ascii") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or tuple(header) != HEADER:
            raise ValueError(f"{path}:1: header must be {','.join(HEADER)}, got {header!r}")
        for row in reader:
            line = reader.line_num
            try:
                o, c, g = (int(x) for x in row)
            except ValueError:
                raise ValueError(f"{path}:{line}: expected three integers, got {row!r}") from None
            if o < 0 or c < 0 or g < 0:
                raise ValueError(f"{path}:{line}: negative value in {row!r}")
            if offs and o < offs[-1]:
                raise ValueError(f"{path}:{line}: offset {o} ms is before the previous row's "
                                 f"{offs[-1]} ms (rows must be in time order)")
            offs.append(o)
            ctx.append(c)
            gen.append(g)
            if len(offs) > MAX_ROWS:
                raise ValueError(f"{path}: more than {MAX_ROWS} rows")
    if len(offs) < 2:
        raise ValueError(f"{path}: a trace needs at least two requests")
    first = offs[0]
    return TokenTrace(np.array(offs, dtype=np.float64) / 1000 - first / 1000,
                      np.array(ctx, dtype=np.int64), np.array(gen, dtype=np.int64))


@lru_cache(maxsize=1)
def load() -> TokenTrace:
    """The shipped trace (package data of aragog.loadgen)."""
    ref = importlib.resources.files("aragog.loadgen").joinpath(SHIPPED)
    with importlib.resources.as_file(ref) as path:
        return read(path)


def workflow_of(trace: TokenTrace) -> list[str]:
    """Each request's workflow by the rule of the module docstring (medians of this trace)."""
    long_ctx = trace.context_tokens > np.median(trace.context_tokens)
    long_gen = trace.generated_tokens > np.median(trace.generated_tokens)
    return [CELLS[(bool(c), bool(g))] for c, g in zip(long_ctx, long_gen, strict=True)]


def mix(trace: TokenTrace, workflows: Sequence[str] | None = None) -> dict[str, float]:
    """Share of each workflow among the trace's requests (of `workflows`, if given)."""
    wf = [w for w in workflow_of(trace) if workflows is None or w in workflows]
    if not wf:
        raise ValueError(f"no trace request maps to {list(workflows or [])}")
    names = sorted(set(wf))
    counts = np.array([wf.count(n) for n in names], dtype=np.float64)
    return dict(zip(names, (counts / counts.sum()).tolist(), strict=True))


def arrivals_needed(rate: float, duration: float) -> int:
    """Arrivals of a window at `rate` per second over `duration` seconds."""
    if not (math.isfinite(rate) and rate > 0 and math.isfinite(duration) and duration > 0):
        raise ValueError(f"rate and duration must be positive, got {rate!r}, {duration!r}")
    return max(1, round(rate * duration))


def window_start(trace: TokenTrace, n: int, seed: int,
                 workflows: Sequence[str] | None = None) -> int:
    """A start index (among the requests of `workflows`) drawn uniformly from `seed`, such
    that `n` requests and the one after them follow it."""
    size = len(_select(trace, workflows)[0])
    if n + 1 > size:
        raise ValueError(f"a window of {n} requests needs {n + 1} of the trace's; it has {size}")
    return int(np.random.default_rng(seed).integers(0, size - n))


def _select(trace: TokenTrace, workflows: Sequence[str] | None) -> tuple[np.ndarray, list[str]]:
    wf = workflow_of(trace)
    if workflows is None:
        return trace.offsets, wf
    keep = np.array([w in workflows for w in wf])
    if not keep.any():
        raise ValueError(f"no trace request maps to {list(workflows)}")
    return trace.offsets[keep], [w for w, k in zip(wf, keep, strict=True) if k]


def window(trace: TokenTrace, start: int, n: int, rate: float,
           workflows: Sequence[str] | None = None) -> Window:
    """Requests start..start+n-1 of the trace (counting only those mapped to `workflows`,
    if given), time-compressed to a mean rate of `rate` per second: their span up to request
    start+n lasts n / rate seconds, every gap scaled alike."""
    offsets, wf = _select(trace, workflows)
    if n < 1 or start < 0 or start + n >= len(offsets):
        raise ValueError(f"window [{start}, {start + n}] is outside the trace's {len(offsets)} "
                         "requests (it needs the request after its last)")
    if not (math.isfinite(rate) and rate > 0):
        raise ValueError(f"rate must be positive, got {rate!r}")
    span = offsets[start + n] - offsets[start]
    if span <= 0:
        raise ValueError(f"requests {start}..{start + n} of the trace arrive at the same time")
    duration = n / rate
    scaled = (offsets[start:start + n] - offsets[start]) * (duration / span)
    return Window(scaled, wf[start:start + n], start, float(span / duration))


def digest(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 3 or args[0] != "compact":
        sys.exit("usage: python -m aragog.loadgen.azure_trace compact SOURCE.csv OUT.csv.gz")
    t = compact(args[1], args[2])
    shares = ", ".join(f"{k} {v:.1%}" for k, v in mix(t).items())
    print(f"{args[2]}: {len(t)} requests over {t.offsets[-1]:.1f} s "
          f"(mean {len(t) / t.offsets[-1]:.2f}/s); source sha256 {digest(args[1])}, "
          f"output sha256 {digest(args[2])}; mix: {shares}")


if __name__ == "__main__":
    main()
