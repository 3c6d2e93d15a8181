"""Evaluation report: load-generator runs in, a directory out (results.json, runs.csv,
requests.csv, PNG plots, summary.md).

Pure computation and rendering, no services and no gRPC, so a report can be rebuilt from saved
records. Every record counts whatever its status: dropping failures would flatter the policy
that causes them. A run whose host CPU was saturated measured the machine, not the policy, so
it is flagged instead of being compared silently.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.stats
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

if TYPE_CHECKING:  # client imports grpc; this module must not
    from aragog.loadgen.client import RequestRecord

STATUSES = ("ok", "failed", "timeout", "rejected", "error")  # = client.STATUSES
FLUCTUATING = ("square", "mmpp", "trace")
BASELINES = ("per-input", "per-input:router", "per-input:load", "per-workflow")
AR_PROFILED = "aragog-profiled"
"""`aragog` over each request's profiled F(r) (aragog.loadgen.eval_policies)."""
PAIRS = (*(("aragog", b) for b in BASELINES), (AR_PROFILED, "per-input"),
         (AR_PROFILED, "aragog"))
"""(policy, baseline) pairs whose ratios the report gives: aragog against each baseline;
aragog over the profiled F(r) against per-input, which binds the cheapest of that same F(r)
at arrival (the like-for-like test of deciding per stage), and against aragog (what a
perfect router would add)."""
THROUGHPUT_TARGETS = {"per-input": 1.43, "per-workflow": 1.78}  # aragog max throughput ratio
TRUE_F_SPREAD = "true F(r), spread"
"""Key of Settings.capacity_bound: any router's bound (requests spread over their true F(r))."""
MIXED = "mixed"
"""The workflow name of runs that interleave several workflows (Run.items says which)."""
ACCURACY_GAP_POINTS = 2.0  # aragog within this many points of `largest`
P50_REDUCTION_TARGET = 0.32  # aragog p50 at the highest swept rate vs per-input
EMULATED = ("The model pool is EMULATED: each model is a latency profile played on a time "
            "scale, and answers come from a generated benchmark. Throughput, latency and "
            "accuracy here measure Aragog's serving system against that emulation, not real "
            "LLM inference.")
DEFINITIONS = {
    "maximum serving throughput": (
        "The highest achieved throughput on a policy's throughput-latency curve over the rate "
        "sweep. Achieved throughput of a run = requests completed ok / (time from the first "
        "send to the last completion of any request, but at least the arrival window)."),
    "latency at the highest swept rate": (
        "p50 and p95 of the end-to-end latency (send to the end of the stream) of the ok "
        "requests in the sweep step with the highest offered rate (the mean if several runs "
        "share that rate)."),
    "capacity bound": (
        "The most requests/s the pool could serve under the policy with every model busy all "
        "the time (aragog.loadgen.capacity): bound-at-arrival policies fix each request's "
        "load per model; aragog's spreads each request over its router F(r) as well as a "
        "linear program can. It ignores queueing and latency, so measured throughput stays "
        "below it; it says what the pool's provisioning allows each policy at best."),
    "bound ratio": (
        "For a throughput target: aragog's capacity bound over the baseline's (this router), and "
        "the bound of a perfect spread over each request's true F(r) over the baseline's (any "
        "router). A bound ratio under the target means the pool's provisioning keeps the target "
        "out of reach of this router, or of any router, unless the baseline falls short of its "
        "own bound."),
    "goodput under the SLO": (
        "Requests completed ok with latency <= slo_multiple x the idle latency of the largest "
        "configuration for the (family, workflow) (in a mixed run, the request's own "
        "workflow), per second of the same window as achieved throughput."),
    "accuracy": ("mean(correct) over requests that have an expected answer; a request that "
                 "failed, timed out, was rejected or errored counts as wrong."),
    "gap to largest": (
        "Accuracy points a policy's answered (ok) requests score above (+) or below (-) the "
        "largest configuration on the same items: every run of a workflow walks the same "
        "held-out items from the first (a mixed run records the workflow and item each arrival "
        "sent), so requests are matched by their item, and a policy's repeated runs of an item "
        "are averaged (with several seeds: per seed, then the mean over seeds). The largest "
        "configuration's answers come from the profile (the same EMULATED answer function; "
        "the `largest` runs are checked against it), so every item a policy answered counts. "
        "Requests that failed or timed out are not in it: they count as wrong in accuracy and "
        "show in throughput."),
    "GPU-seconds per request": "Mean gpu_seconds of the ok requests.",
    "queueing": "Sum of a request's stages' schedule_ms, averaged over the ok requests.",
    "seed": (
        "One independent draw of the arrivals and of the requests sent: a sweep is repeated "
        "for each seed, every policy on the same arrivals and requests of that seed. A "
        "figure over seeds is their mean; a ratio is paired by seed (each seed's ratio of "
        "the two policies' figures)."),
    "confidence interval": (
        "95% Student t interval over the seeds (n-1 degrees of freedom): for a mean, mean +- "
        "t x sd / sqrt(n); for a ratio, the same on the per-seed log ratios, back-transformed "
        "(so the ratio shown is the geometric mean of the per-seed ratios). With one seed there "
        "is none. A ratio is *resolved* when its interval excludes 1 (the interval is "
        "narrower than the effect), and a target is *met* or *missed* with confidence only "
        "when the interval lies wholly on one side of it (else *undecided*)."),
    "maximum goodput": "The highest goodput under the SLO over a policy's sweep, per seed.",
    "share of the capacity bound": (
        "Measured maximum throughput / the policy's capacity bound. It can only be high if "
        "the sweep offered at least that much: the table says when the top step was below."),
    "host CPU bound": (
        "p95 of the host CPU busy fraction >= cpu_bound_threshold: the host, not the emulated "
        "pool, was the bottleneck, so the run measures the machine, not the policy."),
}


@dataclasses.dataclass
class Run:
    """One evaluation run: a policy serving one arrival pattern on one pool family."""

    pool_family: str
    workflow: str
    policy: str
    pattern: str  # sweep | square | mmpp | trace
    rate: float  # offered requests/s (a sweep step's rate, else the mean rate)
    duration_s: float  # the arrival window
    records: list[RequestRecord]
    cpu: list[tuple[float, float]] = dataclasses.field(default_factory=list)
    occupancy: list[tuple[float, dict[str, int]]] = dataclasses.field(default_factory=list)
    start_wall: float = 0.0  # Unix time of arrival offset 0 (0: inferred from the records)
    seed: int | None = None  # the arrivals' and requests' seed, when a sweep is repeated
    items: list[tuple[str, int]] | None = None
    """Per arrival index: (workflow, held-out item) it was sent; None: item = arrival index
    (runs of one workflow that walk its items in order)."""
    arrivals: str = ""  # how the arrivals were made ("poisson", "azure-trace window ...")
    timeline: bool = False  # plot this run's timeline even if it is a sweep step

    @property
    def label(self) -> str:
        seed = "" if self.seed is None else f"#{self.seed}"
        return (f"{self.pool_family}/{self.workflow}/{self.policy}/{self.pattern}"
                f"@{self.rate:g}{seed}")


@dataclasses.dataclass
class Settings:
    """idle_latency_s: (family, workflow) -> the largest configuration's latency at idle;
    capacity_bound: (family, workflow) -> policy -> its fluid capacity bound, requests/s
    (aragog.loadgen.capacity), shown next to what was measured;
    largest_correct: (family, workflow) -> item index -> whether the largest configuration
    answers it right, from the profile (the same answer function the EMULATED pool runs), so
    the gap to largest covers every item a policy answered, not just the few that the slow
    `largest` runs reach (without it, those runs are the reference)."""

    slo_multiple: float = 5.0
    idle_latency_s: dict[tuple[str, str], float] = dataclasses.field(default_factory=dict)
    cpu_bound_threshold: float = 0.9
    capacity_bound: dict[tuple[str, str], dict[str, float]] = dataclasses.field(
        default_factory=dict)
    largest_correct: dict[tuple[str, str], dict[int, bool]] = dataclasses.field(
        default_factory=dict)
    confidence: float = 0.95
    throughput_targets: dict[str, float] = dataclasses.field(
        default_factory=lambda: dict(THROUGHPUT_TARGETS))
    """Baseline -> the max throughput ratio aragog must reach against it."""
    goodput_targets: dict[str, float] = dataclasses.field(default_factory=dict)
    """Baseline -> the max goodput ratio aragog must reach against it."""
    accuracy_gap_points: float = ACCURACY_GAP_POINTS
    p50_reduction_target: float | None = P50_REDUCTION_TARGET
    bound_share_target: float | None = None
    """If set: every policy's max throughput must reach this share of its capacity bound."""


def _pct(xs: Sequence[float], q: float) -> float | None:
    return float(np.percentile(xs, q)) if len(xs) else None


def _mean(xs: Iterable[float | None]) -> float | None:
    vals = [x for x in xs if x is not None]
    return float(np.mean(vals)) if vals else None


def t_quantile(confidence: float, df: int) -> float:
    """The two-sided Student t quantile: mean +- this x standard error covers `confidence`."""
    if not 0 < confidence < 1 or df < 1:
        raise ValueError(f"need 0 < confidence < 1 and df >= 1, got {confidence}, {df}")
    return float(scipy.stats.t.ppf(0.5 + confidence / 2, df))


def mean_ci(values: Iterable[float | None], confidence: float = 0.95
            ) -> tuple[float | None, float | None, float | None]:
    """(mean, low, high): the t interval of the mean of independent values (None values are
    left out); with fewer than two values the interval is unknown (None, None)."""
    x = np.array([v for v in values if v is not None], dtype=np.float64)
    if not len(x):
        return None, None, None
    m = float(x.mean())
    if len(x) < 2:
        return m, None, None
    h = t_quantile(confidence, len(x) - 1) * float(x.std(ddof=1)) / math.sqrt(len(x))
    return m, m - h, m + h


def ratio_ci(num: Mapping[Any, float | None], den: Mapping[Any, float | None],
             confidence: float = 0.95) -> dict[str, Any]:
    """The ratio num/den paired by key (seed): the geometric mean of the per-key ratios and
    the t interval of their mean log, back-transformed. Keys missing from either side, or
    whose figure is None or not positive (a ratio with nothing served has no log), are left
    out; `n` says how many count and `left_out` which did not."""
    keys = sorted(num.keys() | den.keys(), key=str)
    ok = [k for k in keys if (num.get(k) or 0) > 0 and (den.get(k) or 0) > 0]
    logs = [math.log(num[k] / den[k]) for k in ok]  # type: ignore[operator]
    m, lo, hi = mean_ci(logs, confidence)
    return {"ratio": None if m is None else math.exp(m),
            "ci": None if lo is None else [math.exp(lo), math.exp(hi)],
            "by_seed": {str(k): num[k] / den[k] for k in ok},  # type: ignore[operator]
            "n": len(ok), "left_out": [str(k) for k in keys if k not in ok]}


def resolved(ci: Sequence[float] | None, null: float = 1.0) -> bool | None:
    """Whether an interval excludes `null` (no difference): the effect is larger than the
    uncertainty. None without an interval."""
    return None if ci is None else bool(ci[0] > null or ci[1] < null)


def verdict(value: float | None, ci: Sequence[float] | None, required: float) -> str:
    """'met' / 'missed' when the interval lies wholly on one side of `required` (or, without
    an interval, by the value alone), 'undecided' when it straddles it, 'n/a' without data."""
    if value is None:
        return "n/a"
    if ci is None:
        return "met" if value >= required else "missed"
    if ci[0] >= required:
        return "met"
    if ci[1] < required:
        return "missed"
    return "undecided"


def accuracy(records: Iterable[RequestRecord]) -> float | None:
    """Share correct among records with an expected answer; no answer (None) is wrong."""
    graded = [r.correct is True for r in records if r.expected is not None]
    return sum(graded) / len(graded) if graded else None


def _item(items: Sequence[tuple[str, int]] | None, r: RequestRecord) -> Any:
    return r.index if items is None else (str(items[r.index][0]), int(items[r.index][1]))


def graded_items(records: Iterable[RequestRecord],
                 items: Sequence[tuple[str, int]] | None = None) -> dict[Any, float]:
    """Per item, the share of its answered (ok) requests that were right. The item is the
    record's `index` (runs of one workflow share their item order), or with `items` (a run's
    Run.items) the (workflow, item) its arrival was sent."""
    return _share_right([(_item(items, r), r) for r in records])


def _share_right(keyed: Iterable[tuple[Any, RequestRecord]]) -> dict[Any, float]:
    seen: dict[Any, list[bool]] = defaultdict(list)
    for key, r in keyed:
        if r.expected is not None and r.status == "ok":
            seen[key].append(r.correct is True)
    return {i: float(np.mean(v)) for i, v in seen.items()}


def _graded_runs(runs: Iterable[Run]) -> dict[Any, float]:
    return _share_right([(_item(run.items, r), r) for run in runs for r in run.records])


def _gap(mine: Mapping[Any, float], reference: Mapping[Any, float]) -> tuple[float | None, int]:
    common = sorted(mine.keys() & reference.keys(), key=str)
    if not common:
        return None, 0
    return 100 * float(np.mean([mine[i] - reference[i] for i in common])), len(common)


def gap_points(records: Iterable[RequestRecord], reference: Mapping[Any, float],
               items: Sequence[tuple[str, int]] | None = None) -> tuple[float | None, int]:
    """Accuracy points of the answered `records` above `reference` (item -> share right) on
    the items both graded, and how many items that is."""
    return _gap(graded_items(records, items), reference)


def model_shares(records: Iterable[RequestRecord]) -> dict[str, float]:
    """Share of the stage executions (every stage that ran, whatever the request's end) that
    each model served: where a policy puts its work, whatever the workflow."""
    c = Counter(st.model or "?" for r in records for st in r.stages)
    return {m: n / c.total() for m, n in sorted(c.items())}


def gpu_per_request(records: Iterable[RequestRecord]) -> float | None:
    return _mean(r.gpu_seconds for r in records if r.status == "ok")


def offered_bound(rate: float, duration_s: float) -> float:
    """The most a run offered at `rate` for `duration_s` can complete per second: the rate
    plus three standard deviations of a Poisson count over the window, plus one request."""
    d = max(duration_s, 1e-9)
    return rate + 3 * math.sqrt(rate / d) + 1 / d


def summarize(run: Run, settings: Settings) -> dict[str, Any]:
    """One run's figures (see DEFINITIONS) and the coherence checks they must pass."""
    tally = Tally(run, settings)
    for r in run.records:
        tally.add(r)
    return tally.summary()


class LogHistogram:
    """Counts of positive values in bins of relative width `rel` (and one bin for <= 0):
    memory grows with the range of the values, never with their number. A percentile is
    its bin's geometric middle, within rel/2 of the exact one."""

    def __init__(self, rel: float = 1e-3):
        self.log_base = math.log1p(rel)
        self.bins: Counter[int] = Counter()
        self.n = 0

    def add(self, x: float) -> None:
        self.bins[math.floor(math.log(x) / self.log_base) if x > 0 else -(1 << 62)] += 1
        self.n += 1

    def __len__(self) -> int:
        return self.n

    def percentile(self, q: float) -> float | None:
        if not self.n:
            return None
        rank, seen = q / 100 * (self.n - 1), 0
        for k in sorted(self.bins):
            seen += self.bins[k]
            if seen > rank:
                return 0.0 if k == -(1 << 62) else math.exp((k + 0.5) * self.log_base)
        raise AssertionError("unreachable: the counts add up to n")


class Tally:
    """`summarize`'s figures accumulated one record at a time, so a long run (the simulator's
    millions of requests) need not keep its records: counts and sums, and the latencies of
    answered requests either all kept (`exact`, what `summarize` does) or in a LogHistogram
    whose memory does not grow with the run."""

    def __init__(self, run: Run, settings: Settings, exact: bool = True):
        self.run, self.settings = run, settings
        self.by_status = dict.fromkeys(STATUSES, 0)
        self.n = 0
        self.first_send, self.last_end = math.inf, -math.inf
        self.latencies: list[float] | LogHistogram = [] if exact else LogHistogram()
        idle = settings.idle_latency_s.get((run.pool_family, run.workflow))
        self.slo = settings.slo_multiple * idle if idle else None
        self.with_slo = self.slo is not None or (
            (run.items is not None or run.workflow == MIXED)
            and any(k[0] == run.pool_family for k in settings.idle_latency_s))
        self.good = 0  # answered within their SLO
        self.positions: dict[int, Counter] = defaultdict(Counter)
        self.models: Counter[str] = Counter()
        self.workflows: Counter[str] = Counter()
        self.graded = self.right = 0
        self.gpu = [0.0, 0]  # sum, count over answered requests
        self.queue_ms = [0.0, 0]

    def _slo_of(self, r: RequestRecord) -> float | None:  # a mixed run's requests: their own
        i = self.settings.idle_latency_s.get((self.run.pool_family, r.workflow))
        return self.settings.slo_multiple * i if i else self.slo

    def add(self, r: RequestRecord) -> None:
        self.n += 1
        self.by_status[r.status] = self.by_status.get(r.status, 0) + 1  # unknown: kept
        if r.sent_at > 0:
            self.first_send = min(self.first_send, r.sent_at)
        if r.completed_at > 0:
            self.last_end = max(self.last_end, r.completed_at)
        self.workflows[r.workflow] += 1
        if r.expected is not None:
            self.graded += 1
            self.right += r.correct is True
        for i, st in enumerate(r.stages):  # every stage that ran: the decision was made
            self.positions[i][st.model or "?"] += 1
            self.models[st.model or "?"] += 1
        if r.status != "ok":
            return
        if isinstance(self.latencies, list):
            self.latencies.append(r.latency_s)
        else:
            self.latencies.add(r.latency_s)
        slo = self._slo_of(r)
        self.good += slo is not None and r.latency_s <= slo
        if r.gpu_seconds is not None:
            self.gpu[0] += r.gpu_seconds
            self.gpu[1] += 1
        self.queue_ms[0] += sum(st.schedule_ms for st in r.stages)
        self.queue_ms[1] += 1

    def _pct(self, q: float) -> float | None:
        lat = self.latencies
        return _pct(lat, q) if isinstance(lat, list) else lat.percentile(q)

    def summary(self) -> dict[str, Any]:
        run, settings = self.run, self.settings
        span = (self.last_end - self.first_send
                if self.first_send < math.inf and self.last_end > -math.inf else 0.0)
        window = max(span, run.duration_s, 1e-9)
        cpu = [f for _, f in run.cpu]
        cpu_p95 = _pct(cpu, 95)
        throughput = self.by_status["ok"] / window
        checks = {
            "statuses_add_up": sum(self.by_status[s] for s in STATUSES) == self.n,
            "throughput_within_offered": throughput <= offered_bound(run.rate, run.duration_s),
        }
        total_stages = self.models.total()
        return {
            "run": run.label, "family": run.pool_family, "workflow": run.workflow,
            "policy": run.policy, "pattern": run.pattern, "offered_rate": run.rate,
            "seed": run.seed, "arrivals": run.arrivals,
            "duration_s": run.duration_s, "window_s": window, "total": self.n,
            "by_status": self.by_status, "throughput": throughput,
            "latency_p50_s": self._pct(50), "latency_p95_s": self._pct(95),
            "latency_p99_s": self._pct(99), "slo_s": self.slo,
            "goodput": self.good / window if self.with_slo else None,
            "requests_by_workflow": dict(self.workflows) if len(self.workflows) > 1 else {},
            "accuracy": self.right / self.graded if self.graded else None,
            "graded": self.graded,
            "gpu_seconds_per_request": self.gpu[0] / self.gpu[1] if self.gpu[1] else None,
            "queue_ms_mean": self.queue_ms[0] / self.queue_ms[1] if self.queue_ms[1] else None,
            "models_by_position": [{m: n / c.total() for m, n in c.most_common()}
                                   for _, c in sorted(self.positions.items())],
            "model_shares": {m: n / total_stages for m, n in sorted(self.models.items())},
            "cpu_mean": _mean(cpu), "cpu_p95": cpu_p95,
            "cpu_bound": cpu_p95 is not None and cpu_p95 >= settings.cpu_bound_threshold,
            "checks": checks, "coherent": all(checks.values()),
        }


def _seed(s: Mapping[str, Any]) -> int:
    return -1 if s.get("seed") is None else int(s["seed"])


def sweep_curves(summaries: Sequence[dict[str, Any]], confidence: float = 0.95
                 ) -> list[dict[str, Any]]:
    """Per (family, workflow, policy): the throughput-latency curve over the sweep's runs.

    Each point is an offered rate: its figures are means over the seeds that ran it, with
    their intervals. Per seed: the maximum throughput and goodput over the seed's steps;
    `max_throughput` and `max_goodput` are their means over seeds."""
    groups: dict[tuple[str, str, str], list[dict]] = defaultdict(list)
    for s in summaries:
        if s["pattern"] == "sweep":
            groups[(s["family"], s["workflow"], s["policy"])].append(s)
    out = []
    for (fam, wf, pol), ss in sorted(groups.items()):
        ss = sorted(ss, key=lambda s: (s["offered_rate"], _seed(s)))
        points = []
        for rate in sorted({s["offered_rate"] for s in ss}):
            at = [s for s in ss if s["offered_rate"] == rate]
            p: dict[str, Any] = {"offered_rate": rate, "n": len(at),
                                 "cpu_bound": any(s["cpu_bound"] for s in at)}
            for k in ("throughput", "latency_p50_s", "latency_p95_s", "goodput"):
                m, lo, hi = mean_ci([s[k] for s in at], confidence)
                p[k], p[f"{k}_ci"] = m, None if lo is None else [lo, hi]
            points.append(p)
        seeds = []
        for seed in sorted({_seed(s) for s in ss}):
            mine = [s for s in ss if _seed(s) == seed]
            goodputs = [s["goodput"] for s in mine if s["goodput"] is not None]
            seeds.append({
                "seed": seed, "max_throughput": max(s["throughput"] for s in mine),
                "max_goodput": max(goodputs) if goodputs else None,
                "steps": [{k: s[k] for k in ("offered_rate", "throughput", "goodput",
                                              "latency_p50_s", "latency_p95_s")} for s in mine]})
        top = ss[-1]["offered_rate"]
        at_top = [s for s in ss if s["offered_rate"] == top]
        mt = mean_ci([x["max_throughput"] for x in seeds], confidence)
        mg = mean_ci([x["max_goodput"] for x in seeds], confidence)
        out.append({
            "family": fam, "workflow": wf, "policy": pol,
            "points": points, "seeds": seeds,
            "max_throughput": mt[0], "max_throughput_ci": None if mt[1] is None else mt[1:],
            "max_goodput": mg[0], "max_goodput_ci": None if mg[1] is None else mg[1:],
            "top_rate": top,
            "p50_at_top_s": _mean(s["latency_p50_s"] for s in at_top),
            "p95_at_top_s": _mean(s["latency_p95_s"] for s in at_top),
            "cpu_bound_steps": sum(s["cpu_bound"] for s in ss),
        })
    return out


def _ratio(x: float | None, y: float | None) -> float | None:
    return x / y if x is not None and y else None


def _by_seed(curve: Mapping[str, Any], key: str) -> dict[int, float | None]:
    return {x["seed"]: x[key] for x in curve.get("seeds", [])}


def _p50_at(curve: Mapping[str, Any], rate: float) -> dict[int, float | None]:
    """Per seed, the p50 latency of the step at `rate` (the mean if it ran several)."""
    out = {}
    for x in curve.get("seeds", []):
        v = [st["latency_p50_s"] for st in x["steps"] if st["offered_rate"] == rate]
        if v:
            out[x["seed"]] = _mean(v)
    return out


def pair(a: Mapping[str, Any], b: Mapping[str, Any], confidence: float = 0.95
         ) -> dict[str, Any]:
    """Curve `a` against curve `b`, paired by seed: the max throughput and max goodput ratios,
    and the p50 latency reduction at the highest offered rate both ran, with intervals."""
    tp = ratio_ci(_by_seed(a, "max_throughput"), _by_seed(b, "max_throughput"), confidence)
    gp = ratio_ci(_by_seed(a, "max_goodput"), _by_seed(b, "max_goodput"), confidence)
    common = sorted({p["offered_rate"] for p in a["points"]}
                    & {p["offered_rate"] for p in b["points"]})
    p50 = (ratio_ci(_p50_at(a, common[-1]), _p50_at(b, common[-1]), confidence) if common
           else {"ratio": None, "ci": None, "n": 0})
    return {
        "throughput_ratio": tp["ratio"], "throughput_ratio_ci": tp["ci"],
        "throughput_ratio_by_seed": tp["by_seed"],
        "goodput_ratio": gp["ratio"], "goodput_ratio_ci": gp["ci"],
        "p50_rate": common[-1] if common else None,
        "p50_reduction": None if p50["ratio"] is None else 1 - p50["ratio"],
        "p50_reduction_ci": None if p50["ci"] is None else [1 - p50["ci"][1], 1 - p50["ci"][0]],
        "n_seeds": tp["n"],
        "host_cpu_bound": bool(a["cpu_bound_steps"] or b["cpu_bound_steps"]),
    }


def _reference(settings: Settings | None, fam: str, wf: str, mixed: bool
               ) -> dict[Any, float] | None:
    """The largest configuration's answers from the profile, keyed as the runs' items are."""
    if settings is None:
        return None
    if not mixed:
        prof = settings.largest_correct.get((fam, wf))
        return None if prof is None else {i: float(ok) for i, ok in prof.items()}
    ref = {(w, i): float(ok) for (f, w), prof in settings.largest_correct.items() if f == fam
           for i, ok in prof.items()}
    return ref or None


def compare(runs: Sequence[Run], curves: Sequence[dict[str, Any]],
            settings: Settings | None = None) -> list[dict[str, Any]]:
    """Per (family, workflow): every policy's figures, and each pair of PAIRS."""
    bound = settings.capacity_bound if settings else {}
    conf = settings.confidence if settings else 0.95
    groups: dict[tuple[str, str], dict[str, list[Run]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:  # accuracy and GPU-seconds pool every pattern's records
        groups[(run.pool_family, run.workflow)][run.policy].append(run)
    out = []
    for (fam, wf), by_policy in sorted(groups.items()):
        cv = {c["policy"]: c for c in curves if (c["family"], c["workflow"]) == (fam, wf)}
        mixed = any(r.items is not None for rs in by_policy.values() for r in rs)
        profiled = _reference(settings, fam, wf, mixed)
        measured = _graded_runs(by_policy.get("largest", []))
        reference = profiled if profiled is not None else measured
        cap = bound.get((fam, wf), {})
        policies = {}
        for pol, prs in sorted(by_policy.items()):
            rs = [r for run in prs for r in run.records]
            c = cv.get(pol, {})
            gap, matched = _gap(_graded_runs(prs), reference) if reference else (None, 0)
            seeds = sorted({-1 if r.seed is None else r.seed for r in prs})
            per_seed = [[r for r in prs if (-1 if r.seed is None else r.seed) == s]
                        for s in seeds]
            acc_ci = mean_ci([accuracy([x for r in g for x in r.records]) for g in per_seed],
                             conf)
            gaps = [_gap(_graded_runs(g), reference)[0] for g in per_seed] if reference else []
            gap_ci = mean_ci(gaps, conf)
            if len(seeds) > 1 and gap_ci[0] is not None:
                gap = gap_ci[0]
            mt, b = c.get("max_throughput"), cap.get(pol)
            shares = {x["seed"]: x["max_throughput"] / b for x in c.get("seeds", [])} if b else {}
            share = mean_ci(shares.values(), conf)
            policies[pol] = {
                "max_throughput": mt, "max_throughput_ci": c.get("max_throughput_ci"),
                "max_goodput": c.get("max_goodput"), "max_goodput_ci": c.get("max_goodput_ci"),
                "top_rate": c.get("top_rate"), "capacity_bound": b,
                "bound_share": share[0], "bound_share_ci": None if share[1] is None else share[1:],
                "p50_at_top_s": c.get("p50_at_top_s"), "p95_at_top_s": c.get("p95_at_top_s"),
                "accuracy": accuracy(rs),
                "accuracy_ci": None if acc_ci[1] is None else acc_ci[1:],
                "gpu_seconds_per_request": gpu_per_request(rs),
                "admission_p50_ms": _pct([r.admission_s * 1e3 for r in rs if r.admission_s], 50),
                "admission_p99_ms": _pct([r.admission_s * 1e3 for r in rs if r.admission_s], 99),
                "model_shares": model_shares(rs),
                "gap_to_largest_points": gap, "gap_matched_requests": matched,
                "gap_to_largest_ci": None if gap_ci[1] is None else gap_ci[1:],
                "seeds": len(seeds), "cpu_bound_steps": c.get("cpu_bound_steps", 0),
            }
        pairs = []
        for a, b in PAIRS:
            if a in cv and b in cv:
                pairs.append({"policy": a, "baseline": b, **pair(cv[a], cv[b], conf)})
        vs = {p["baseline"]: p for p in pairs if p["policy"] == "aragog"}
        agree = ([measured[i] == reference[i] for i in measured.keys() & reference.keys()]
                 if profiled is not None else [])
        out.append({"family": fam, "workflow": wf, "policies": policies, "aragog_vs": vs,
                    "pairs": pairs, "capacity_bound": dict(cap),
                    "gap_reference": "profile" if profiled is not None else "largest runs",
                    "largest_runs_agree_with_profile": [sum(agree), len(agree)]})
    return out


def _target(comp: dict, name: str, value: float | None, required: float, unit: str,
            scale: float = 1.0, ci: Sequence[float] | None = None) -> dict[str, Any]:
    met = None if value is None else value >= required
    margin = None if value is None else (value - required) * scale
    result = verdict(value, ci, required)
    if value is None:
        shown, text = "–", "n/a (missing data)"
    else:
        def fmt(v: float) -> str:
            return f"{v:.2f}x" if unit == "x" else (
                f"{v:.1%}" if scale == 100 else f"{v:+.1f}{unit}")
        shown = fmt(value)
        text = f"{'met' if met else 'missed'} by {abs(margin):.2f}{unit}"  # type: ignore[arg-type]
        if ci is not None:
            shown += f" [{fmt(ci[0])}, {fmt(ci[1])}]"
            text += {"met": "; the 95% CI clears it", "missed": "; the 95% CI is below it",
                     "undecided": "; the 95% CI straddles it: undecided"}[result]
    return {"family": comp["family"], "workflow": comp["workflow"], "target": name,
            "value": value, "required": required, "met": met, "margin": margin,
            "ci": None if ci is None else list(ci), "verdict": result,
            "unit": unit.strip(), "shown": shown, "text": text}


def targets(comparisons: Sequence[dict[str, Any]], settings: Settings | None = None
            ) -> list[dict[str, Any]]:
    """The evaluation's goals per (family, workflow) (Settings says which); a goal whose
    policies are absent is left out, one whose figure could not be computed is reported as
    n/a. A throughput goal carries the capacity-bound ratios that say whether the pool allows
    it at all; a goal with a confidence interval is met or missed only when the interval
    says so (`verdict`)."""
    st = settings or Settings()
    out = []
    for c in comparisons:
        vs, pols, cap = c["aragog_vs"], c["policies"], c.get("capacity_bound", {})
        for base, req in st.throughput_targets.items():
            if base in vs:
                t = _target(c, f"max throughput >= {req}x {base}",
                            vs[base]["throughput_ratio"], req, "x",
                            ci=vs[base].get("throughput_ratio_ci"))
                t["bound_ratio"] = _ratio(cap.get("aragog"), cap.get(base))
                t["bound_ratio_true_f"] = _ratio(cap.get(TRUE_F_SPREAD), cap.get(base))
                out.append(t)
        for base, req in st.goodput_targets.items():
            if base in vs:
                out.append(_target(c, f"max goodput >= {req}x {base}", vs[base]["goodput_ratio"],
                                   req, "x", ci=vs[base].get("goodput_ratio_ci")))
        if "aragog" in pols and ("largest" in pols or c["gap_reference"] == "profile"):
            a = pols["aragog"]
            out.append(_target(c, f"accuracy within {st.accuracy_gap_points:g} points of "
                               "largest", a["gap_to_largest_points"], -st.accuracy_gap_points,
                               " points", ci=a.get("gap_to_largest_ci")))
        if "per-input" in vs and st.p50_reduction_target is not None:
            v = vs["per-input"]
            out.append(_target(c, f"p50 at highest swept rate >= {st.p50_reduction_target:.0%} "
                               "below per-input", v["p50_reduction"], st.p50_reduction_target,
                               " points", scale=100.0, ci=v.get("p50_reduction_ci")))
        if st.bound_share_target is not None:
            for pol, p in pols.items():
                if p["capacity_bound"] and p["max_throughput"] is not None:
                    t = _target(c, f"{pol} max throughput >= {st.bound_share_target:.0%} of its "
                                "capacity bound", p["bound_share"], st.bound_share_target,
                                " points", scale=100.0, ci=p.get("bound_share_ci"))
                    t["offered_enough"] = (p["top_rate"] or 0) >= (
                        st.bound_share_target * p["capacity_bound"])
                    if not t["offered_enough"]:
                        t["text"] += " (the sweep's top step offered less than that)"
                    out.append(t)
    return out


def _safe(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", s)


def _save(fig: Figure, path: Path) -> str:
    FigureCanvasAgg(fig)  # render with Agg whatever pyplot's backend is
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path.name


def _plot_curves(fam: str, wf: str, curves: Sequence[dict], out: Path) -> str:
    fig = Figure(figsize=(7.5, 4.8))
    ax = fig.add_subplot()
    for i, c in enumerate(curves):
        pts = [p for p in c["points"] if p["latency_p50_s"] is not None]
        x = [p["throughput"] for p in pts]
        for q, style in (("50", "-o"), ("95", "--^")):
            ax.plot(x, [p[f"latency_p{q}_s"] * 1e3 for p in pts], style, color=f"C{i}",
                    label=f"{c['policy']} p{q}")
    bound = [p for c in curves for p in c["points"] if p["cpu_bound"] and p["latency_p50_s"]]
    if bound:
        ax.plot([p["throughput"] for p in bound], [p["latency_p50_s"] * 1e3 for p in bound],
                "kx", ms=10, label="host CPU-bound step")
    ax.set(xlabel="achieved throughput (requests/s)", ylabel="latency (ms)", yscale="log",
           title=f"{fam} / {wf}: latency vs throughput (emulated pool)")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, out / f"latency_vs_throughput_{_safe(fam)}_{_safe(wf)}.png")


def _plot_accuracy(fam: str, comps: Sequence[dict], out: Path) -> str:
    wfs = [c["workflow"] for c in comps]
    pols = sorted({p for c in comps for p in c["policies"]})
    fig = Figure(figsize=(max(6.0, 1.6 * len(wfs) * max(1, len(pols)) / 3), 4.5))
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(pols))
    for j, pol in enumerate(pols):
        acc = [(c["policies"].get(pol) or {}).get("accuracy") for c in comps]
        bars = ax.bar(np.arange(len(wfs)) + j * width,
                      [100 * a if a is not None else np.nan for a in acc], width, label=pol,
                      color=f"C{j}")
        ax.bar_label(bars, fmt="%.1f", fontsize=7)
    ax.set_xticks(np.arange(len(wfs)) + width * (len(pols) - 1) / 2, wfs)
    ax.set(ylabel="accuracy (%)", ylim=(0, 100), title=f"{fam}: accuracy (emulated pool)")
    ax.legend(fontsize=8)
    return _save(fig, out / f"accuracy_{_safe(fam)}.png")


def _plot_timeline(run: Run, name: str, out: Path) -> str:
    """Arrivals, per-model occupancy and per-model stage starts, on one time axis."""
    sent = [r.sent_at - r.arrival for r in run.records if r.sent_at]
    t0 = run.start_wall or (min(sent) if sent else 0.0)
    stages = [st for r in run.records for st in r.stages]
    models = sorted({st.model for st in stages} | {m for _, d in run.occupancy for m in d})
    color = {m: f"C{i % 10}" for i, m in enumerate(models)}
    # the axis spans the arrivals plus the longest request, whatever the stages' clocks say
    end = max([run.duration_s] + [r.arrival + r.latency_s for r in run.records])
    bins = np.arange(0.0, max(1.0, np.ceil(end)) + 1.0)
    fig = Figure(figsize=(9, 7.5))
    ax = fig.subplots(3, 1, sharex=True)
    counts, _ = np.histogram([r.arrival for r in run.records], bins)
    ax[0].step(bins[:-1], counts, where="post", color="k")
    ax[0].set(ylabel="arrivals / s", title=f"{run.label} (emulated pool)")
    if run.occupancy:
        ts = [t for t, _ in run.occupancy]
        for m in models:
            ax[1].step(ts, [d.get(m, 0) for _, d in run.occupancy], where="post", color=color[m],
                       label=m)
    else:  # reconstructed from the stages the client saw start and finish
        events: dict[str, list[tuple[float, int]]] = defaultdict(list)
        for st in stages:
            if st.started_at and st.finished_at:
                events[st.model] += [(st.started_at - t0, 1), (st.finished_at - t0, -1)]
        for m, ev in sorted(events.items()):
            ev.sort()
            ax[1].step([0.0] + [t for t, _ in ev], np.cumsum([0] + [d for _, d in ev]),
                       where="post", color=color[m], label=m)
    ax[1].set(ylabel="stages in flight")
    for m in models:
        starts = [st.started_at - t0 for st in stages if st.model == m and st.started_at]
        c, _ = np.histogram(starts, bins)
        ax[2].step(bins[:-1], c, where="post", color=color[m], label=m)
    ax[2].set(ylabel="stage starts / s", xlabel="time since the run's start (s)",
              xlim=(0, bins[-1]))
    for i, a in enumerate(ax):
        a.grid(alpha=0.3)
        if i and models:
            a.legend(fontsize=7, loc="upper right")
    return _save(fig, out / name)


def _band(ax: Any, x: Sequence[float], pts: Sequence[dict], key: str, color: str, label: str,
          scale: float = 1.0, style: str = "-o") -> None:
    keep = [(xi, p) for xi, p in zip(x, pts, strict=True) if p[key] is not None]
    if not keep:
        return
    ax.plot([xi for xi, _ in keep], [p[key] * scale for _, p in keep], style, color=color,
            label=label, ms=4)
    ci = [(xi, p[f"{key}_ci"]) for xi, p in keep if p.get(f"{key}_ci")]
    if ci:
        ax.fill_between([xi for xi, _ in ci], [c[0] * scale for _, c in ci],
                        [c[1] * scale for _, c in ci], color=color, alpha=0.18, lw=0)


def _plot_bands(fam: str, wf: str, curves: Sequence[dict], out: Path) -> str:
    """Throughput, p50 latency and goodput against the offered rate: means over seeds with
    their 95% bands."""
    fig = Figure(figsize=(13, 4.6))
    ax = fig.subplots(1, 3)
    top = max(p["offered_rate"] for c in curves for p in c["points"])
    ax[0].plot([0, top], [0, top], ":", color="grey", label="offered")
    for i, c in enumerate(curves):
        pts = c["points"]
        x = [p["offered_rate"] for p in pts]
        _band(ax[0], x, pts, "throughput", f"C{i}", c["policy"])
        _band(ax[1], x, pts, "latency_p50_s", f"C{i}", c["policy"], 1e3)
        _band(ax[2], x, pts, "goodput", f"C{i}", c["policy"])
    ax[0].set(xlabel="offered rate (requests/s)", ylabel="achieved throughput (requests/s)",
              title="throughput")
    ax[1].set(xlabel="offered rate (requests/s)", ylabel="p50 latency (ms)", yscale="log",
              title="median latency")
    ax[2].set(xlabel="offered rate (requests/s)", ylabel="goodput (requests/s within SLO)",
              title="goodput under the SLO")
    n = max(len(c["seeds"]) for c in curves)
    fig.suptitle(f"{fam} / {wf}: means over {n} seeds, 95% bands (emulated pool)")
    for a in ax:
        a.grid(alpha=0.3)
    ax[0].legend(fontsize=7)
    return _save(fig, out / f"bands_{_safe(fam)}_{_safe(wf)}.png")


def _plot_ratios(comp: dict, targets_: Sequence[dict], out: Path) -> str:
    """Each pair's max throughput and max goodput ratio with its 95% interval."""
    rows = [(f"{p['policy']} / {p['baseline']}", p) for p in comp["pairs"]]
    fig = Figure(figsize=(9, 1.0 + 0.45 * max(1, len(rows))))
    ax = fig.subplots(1, 2, sharey=True)
    y = np.arange(len(rows))[::-1]
    for a, key, title in ((ax[0], "throughput", "max throughput ratio"),
                          (ax[1], "goodput", "max goodput ratio")):
        for yi, (_, p) in zip(y, rows, strict=True):
            v, ci = p[f"{key}_ratio"], p[f"{key}_ratio_ci"]
            if v is None:
                continue
            err = None if ci is None else [[v - ci[0]], [ci[1] - v]]
            a.errorbar([v], [yi], xerr=err, fmt="o", color="C0", capsize=3)
        for t in targets_:
            if (t["family"], t["workflow"]) == (comp["family"], comp["workflow"]) and \
                    t["target"].startswith(f"max {key} >="):
                base = t["target"].split("x ", 1)[1]
                yi = [yy for yy, (lab, _) in zip(y, rows, strict=True)
                      if lab == f"aragog / {base}"]
                if yi:
                    a.plot([t["required"]], yi, "r|", ms=16, mew=2)
        a.axvline(1.0, color="grey", lw=1)
        a.set(xscale="log", title=title)
        a.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
        a.grid(alpha=0.3)
    ax[0].set_yticks(y, [lab for lab, _ in rows], fontsize=8)
    fig.suptitle(f"{comp['family']} / {comp['workflow']}: ratios, 95% CI over seeds "
                 "(red: target)", fontsize=10)
    return _save(fig, out / f"ratios_{_safe(comp['family'])}_{_safe(comp['workflow'])}.png")


def _plot_bounds(comp: dict, out: Path) -> str:
    """Each policy's capacity bound beside its measured max throughput (95% interval)."""
    pols = [p for p, v in comp["policies"].items() if v["max_throughput"] is not None]
    fig = Figure(figsize=(max(6.0, 1.1 * len(pols)), 4.4))
    ax = fig.add_subplot()
    x = np.arange(len(pols))
    bound = [comp["policies"][p]["capacity_bound"] or np.nan for p in pols]
    meas = [comp["policies"][p]["max_throughput"] for p in pols]
    err = [[m - (comp["policies"][p]["max_throughput_ci"] or [m, m])[0] for p, m in
            zip(pols, meas, strict=True)],
           [(comp["policies"][p]["max_throughput_ci"] or [m, m])[1] - m for p, m in
            zip(pols, meas, strict=True)]]
    ax.bar(x - 0.2, bound, 0.4, color="lightgrey", edgecolor="grey", label="capacity bound")
    ax.bar(x + 0.2, meas, 0.4, yerr=err, capsize=3, color="C0", label="measured max throughput")
    ax.set_xticks(x, pols, rotation=20, fontsize=8)
    ax.set(ylabel="requests/s", title=f"{comp['family']} / {comp['workflow']}: capacity bound "
           "and measured max throughput (emulated pool)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    return _save(fig, out / f"bounds_{_safe(comp['family'])}_{_safe(comp['workflow'])}.png")


def _write_plots(runs: Sequence[Run], curves: Sequence[dict], comps: Sequence[dict],
                 out: Path, targets_: Sequence[dict] = ()) -> list[str]:
    files = []
    for fam, wf in sorted({(c["family"], c["workflow"]) for c in curves}):
        group = [c for c in curves if (c["family"], c["workflow"]) == (fam, wf)]
        files.append(_plot_curves(fam, wf, group, out))
        if max(len(c["seeds"]) for c in group) > 1:
            files.append(_plot_bands(fam, wf, group, out))
            comp = next(c for c in comps if (c["family"], c["workflow"]) == (fam, wf))
            if comp["pairs"]:
                files.append(_plot_ratios(comp, targets_, out))
            files.append(_plot_bounds(comp, out))
    for fam in sorted({c["family"] for c in comps}):
        files.append(_plot_accuracy(fam, [c for c in comps if c["family"] == fam], out))
    for run in runs:
        if run.pattern in FLUCTUATING or run.timeline:
            base = "_".join(_safe(x) for x in ("timeline", run.pool_family, run.workflow,
                                                run.policy, run.pattern))
            name, k = f"{base}.png", 2
            while name in files:  # several runs of one pattern: keep every plot
                name, k = f"{base}_{k}.png", k + 1
            files.append(_plot_timeline(run, name, out))
    return files


def _write_csvs(runs: Sequence[Run], summaries: Sequence[dict], out: Path) -> None:
    with (out / "runs.csv").open("w", newline="", encoding="utf-8") as f:
        rows = [{**{k: json.dumps(v, default=_plain) if isinstance(v, dict | list) else v
                    for k, v in s.items() if k != "by_status"},
                 **{f"n_{k}": v for k, v in s["by_status"].items()}} for s in summaries]
        cols = list(dict.fromkeys(k for row in rows for k in row))
        w = csv.DictWriter(f, cols)
        w.writeheader()
        w.writerows(rows)
    fields = ("request_id", "index", "arrival", "sent_at", "completed_at", "latency_s", "status",
              "grpc_code", "error", "expected", "answer", "correct", "gpu_seconds",
              "admitted_configurations", "send_lag_s", "admission_s", "tenant")
    with (out / "requests.csv").open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["family", "workflow", "policy", "pattern", "rate", "seed", "item",
                    "request_workflow", *fields, "admitted_policy",
                    "queue_ms", "service_ms", "stages", "models"])
        for run in runs:
            for r in run.records:
                item = _item(run.items, r)
                w.writerow([run.pool_family, run.workflow, run.policy, run.pattern, run.rate,
                            "" if run.seed is None else run.seed,
                            item[1] if isinstance(item, tuple) else item, r.workflow,
                            *(getattr(r, k) for k in fields), r.policy,
                            sum(s.schedule_ms for s in r.stages),
                            sum(s.service_ms for s in r.stages),
                            "+".join(s.stage for s in r.stages),
                            "+".join(s.model for s in r.stages)])


def _f(x: float | None, fmt: str = ".2f", scale: float = 1.0) -> str:
    return "–" if x is None else format(x * scale, fmt)


def _fci(x: float | None, ci: Sequence[float] | None, fmt: str = ".2f", unit: str = "") -> str:
    """A figure with its interval: '1.52x [1.31, 1.77]'."""
    if x is None:
        return "–"
    out = format(x, fmt) + unit
    return out if not ci else f"{out} [{format(ci[0], fmt)}, {format(ci[1], fmt)}]"


def _yes(flag: bool | None) -> str:
    return "–" if flag is None else ("yes" if flag else "no")


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|---" * len(header) + "|",
            *("| " + " | ".join(str(x) for x in row) + " |" for row in rows)]


def render_summary(res: dict[str, Any]) -> str:
    """summary.md from the results dict (so it can be re-rendered from results.json)."""
    runs, comps, st = res["runs"], res["comparisons"], res["settings"]
    md = [f"# {res['title']}", "", f"> **{EMULATED}**", "",
          f"{len(runs)} runs, {sum(s['total'] for s in runs)} requests (every request counted, "
          f"whatever its status). SLO = {st['slo_multiple']:g} x the largest configuration's "
          "idle latency.", "", "## Definitions", ""]
    md += [f"- **{k}**: {v}" for k, v in res["definitions"].items()]
    md += ["", "## Comparison", "",
           f"Ratios are paired by seed; brackets are {st.get('confidence', 0.95):.0%} "
           "confidence intervals over the seeds (none with one seed). *Resolved*: the interval "
           "excludes 1, so it is narrower than the effect. The p50 figure compares the highest "
           "offered rate both policies ran.", ""] + _table(
        ["family", "workflow", "policy / baseline", "max throughput ratio", "resolved",
         "max goodput ratio", "resolved", "p50 reduction (rate)", "seeds",
         "a host-CPU-bound sweep step"],
        [[c["family"], c["workflow"], f"{v['policy']} / {v['baseline']}",
          _fci(v["throughput_ratio"], v.get("throughput_ratio_ci"), ".2f", "x"),
          _yes(resolved(v.get("throughput_ratio_ci"))),
          _fci(v.get("goodput_ratio"), v.get("goodput_ratio_ci"), ".2f", "x"),
          _yes(resolved(v.get("goodput_ratio_ci"))),
          _fci(v["p50_reduction"], v.get("p50_reduction_ci"), ".1%")
          + (f" ({v['p50_rate']:g}/s)" if v.get("p50_rate") is not None else ""),
          v.get("n_seeds", 1), "yes" if v["host_cpu_bound"] else "no"]
         for c in comps for v in c.get("pairs", c["aragog_vs"].values())])
    md += ["", "## Policies side by side", "",
           "Admission: from sending a request to its `admitted` event (the policy's routing "
           "work at arrival, with the router's gRPC and Redis round trips); `aragog` admits "
           "with a placeholder and routes while the first stage waits, so its routing is "
           "mostly not in this figure (the router's aragog_routing_seconds has it).", ""]
    md += _table(
        ["family", "workflow", "policy", "max throughput (req/s)", "capacity bound (req/s)",
         "share of bound", "top rate (req/s)", "max goodput (req/s)",
         "p50 / p95 at top rate (ms)", "accuracy",
         "gap to largest (points, same requests)", "GPU-s / request",
         "admission p50 / p99 (ms)"],
        [[c["family"], c["workflow"], pol,
          _fci(p["max_throughput"], p.get("max_throughput_ci")), _f(p["capacity_bound"]),
          _fci(p.get("bound_share"), p.get("bound_share_ci"), ".0%"),
          _f(p["top_rate"], "g"), _fci(p.get("max_goodput"), p.get("max_goodput_ci")),
          f"{_f(p['p50_at_top_s'], '.0f', 1e3)} / {_f(p['p95_at_top_s'], '.0f', 1e3)}",
          _fci(p["accuracy"], p.get("accuracy_ci"), ".1%"),
          f"{_fci(p['gap_to_largest_points'], p.get('gap_to_largest_ci'), '+.1f')} "
          f"({p['gap_matched_requests']})",
          _f(p["gpu_seconds_per_request"], ".3f"),
          f"{_f(p.get('admission_p50_ms'), '.1f')} / {_f(p.get('admission_p99_ms'), '.1f')}"]
         for c in comps for pol, p in c["policies"].items()])
    md += ["", "Reference of the gap to largest: " + "; ".join(
        f"{c['family']}/{c['workflow']} {c['gap_reference']}"
        + (" (the `largest` runs agree with it on {} of {} items)".format(
            *c["largest_runs_agree_with_profile"]) if c["gap_reference"] == "profile" else "")
        for c in comps) + "."]
    md += ["", "## Targets", ""] + (_table(
        ["family", "workflow", "target", "value", "result",
         "bound ratio: this router / any router"],
        [[t["family"], t["workflow"], t["target"], t["shown"], f"**{t['text']}**",
          f"{_f(t.get('bound_ratio'))}x / {_f(t.get('bound_ratio_true_f'))}x"
          if "bound_ratio" in t else ""]
         for t in res["targets"]]) if res["targets"] else
        ["No target could be checked: aragog or its baselines are missing."])
    pols = sorted({p for c in comps for p in c["policies"]})
    for title, key, fmt, scale in (("Accuracy per policy (%)", "accuracy", ".1f", 100.0),
                                   ("GPU-seconds per request", "gpu_seconds_per_request",
                                    ".3f", 1.0)):
        md += ["", f"## {title}", ""] + _table(["family", "workflow", *pols], [
            [c["family"], c["workflow"],
             *(_f((c["policies"].get(p) or {}).get(key), fmt, scale) for p in pols)]
            for c in comps])
    models = sorted({m for c in comps for p in c["policies"].values()
                     for m in p.get("model_shares", {})})
    if models:
        md += ["", "## Stage executions per model (share of the stages each policy ran)", ""]
        md += _table(["family", "workflow", "policy", *models], [
            [c["family"], c["workflow"], pol,
             *(_f(p.get("model_shares", {}).get(m), ".0%") for m in models)]
            for c in comps for pol, p in c["policies"].items()])
    md += ["", "## Host-CPU-bound runs", "",
           f"A run whose host CPU p95 reached the threshold ({st['cpu_bound_threshold']:g}) "
           "measures the machine, not the policy: its figures say how fast this host could "
           "drive the emulation, and should not be read as the policy's.", ""]
    md += [f"- {s['run']} (CPU p95 {s['cpu_p95']:.0%})" for s in runs if s["cpu_bound"]] or [
        "None."]
    md += ["", "## Coherence", ""]
    md += [f"- {s['run']}: failed " + ", ".join(k for k, v in s["checks"].items() if not v)
           for s in runs if not s["coherent"]] or [
        "Every run passes: statuses add up to the total, and achieved throughput <= the "
        "offered rate + 3 Poisson standard deviations + 1/duration."]
    md += ["", "## Runs", ""] + _table(
        ["run", "total", *STATUSES, "throughput", "goodput", "p50 / p95 / p99 (ms)", "accuracy",
         "CPU mean / p95"],
        [[s["run"], s["total"], *(s["by_status"][k] for k in STATUSES), _f(s["throughput"]),
          _f(s["goodput"]), " / ".join(_f(s[f"latency_p{q}_s"], ".0f", 1e3) for q in (50, 95, 99)),
          _f(s["accuracy"], ".1%"), f"{_f(s['cpu_mean'], '.0%')} / {_f(s['cpu_p95'], '.0%')}"]
         for s in runs])
    if res["notes"]:
        md += ["", "## Notes", ""] + [f"- {n}" for n in res["notes"]]
    md += ["", "## Plots", ""] + [f"![{p[:-4]}]({p})" for p in res["plots"]]
    return "\n".join(md) + "\n"


def _plain(x: Any) -> Any:
    """JSON for the numpy scalars that figures computed from numpy values turn into."""
    if isinstance(x, np.generic):
        return x.item()
    raise TypeError(f"{type(x).__name__} is not JSON serializable")


def write_report(runs: list[Run], settings: Settings, out_dir: str,
                 title: str = "Aragog evaluation (emulated model pool)",
                 notes: Sequence[str] = ()) -> dict[str, Any]:
    """Write results.json, runs.csv, requests.csv, the plots and summary.md; return results."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summaries = [summarize(r, settings) for r in runs]
    curves = sweep_curves(summaries, settings.confidence)
    comps = compare(runs, curves, settings)
    res: dict[str, Any] = {
        "title": title, "emulated": EMULATED, "definitions": DEFINITIONS,
        "settings": {"slo_multiple": settings.slo_multiple,
                     "cpu_bound_threshold": settings.cpu_bound_threshold,
                     "confidence": settings.confidence,
                     "idle_latency_s": {f"{f}/{w}": v
                                        for (f, w), v in settings.idle_latency_s.items()},
                     "capacity_bound": {f"{f}/{w}": v
                                        for (f, w), v in settings.capacity_bound.items()},
                     "throughput_targets": settings.throughput_targets,
                     "goodput_targets": settings.goodput_targets,
                     "accuracy_gap_points": settings.accuracy_gap_points,
                     "p50_reduction_target": settings.p50_reduction_target,
                     "bound_share_target": settings.bound_share_target},
        "notes": list(notes), "runs": summaries, "curves": curves, "comparisons": comps,
        "targets": targets(comps, settings),
        "cpu_bound_runs": [s["run"] for s in summaries if s["cpu_bound"]],
        "incoherent_runs": [s["run"] for s in summaries if not s["coherent"]],
    }
    res["plots"] = _write_plots(runs, curves, comps, out, res["targets"])
    _write_csvs(runs, summaries, out)  # first: the records survive whatever follows
    (out / "results.json").write_text(json.dumps(res, indent=2, default=_plain),
                                      encoding="utf-8")
    (out / "summary.md").write_text(render_summary(res), encoding="utf-8")
    return res
