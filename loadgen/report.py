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
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

if TYPE_CHECKING:  # client imports grpc; this module must not
    from aragog.loadgen.client import RequestRecord

STATUSES = ("ok", "failed", "timeout", "rejected", "error")  # = client.STATUSES
FLUCTUATING = ("square", "mmpp", "trace")
BASELINES = ("per-input", "per-workflow")
THROUGHPUT_TARGETS = {"per-input": 1.43, "per-workflow": 1.78}  # aragog max throughput ratio
TRUE_F_SPREAD = "true F(r), spread"
"""Key of Settings.capacity_bound: any router's bound (requests spread over their true F(r))."""
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
        "configuration for the (family, workflow), per second of the same window as achieved "
        "throughput."),
    "accuracy": ("mean(correct) over requests that have an expected answer; a request that "
                 "failed, timed out, was rejected or errored counts as wrong."),
    "gap to largest": (
        "Accuracy points a policy's answered (ok) requests score above (+) or below (-) the "
        "largest configuration on the same items: every run of a workflow walks the same "
        "held-out items from the first, so requests are matched by their item, and a policy's "
        "repeated runs of an item are averaged. The largest configuration's answers come from "
        "the profile (the same EMULATED answer function; the `largest` runs are checked "
        "against it), so every item a policy answered counts. Requests that failed or timed "
        "out are not in it: they count as wrong in accuracy and show in throughput."),
    "GPU-seconds per request": "Mean gpu_seconds of the ok requests.",
    "queueing": "Sum of a request's stages' schedule_ms, averaged over the ok requests.",
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

    @property
    def label(self) -> str:
        return f"{self.pool_family}/{self.workflow}/{self.policy}/{self.pattern}@{self.rate:g}"


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


def _pct(xs: Sequence[float], q: float) -> float | None:
    return float(np.percentile(xs, q)) if len(xs) else None


def _mean(xs: Iterable[float | None]) -> float | None:
    vals = [x for x in xs if x is not None]
    return float(np.mean(vals)) if vals else None


def accuracy(records: Iterable[RequestRecord]) -> float | None:
    """Share correct among records with an expected answer; no answer (None) is wrong."""
    graded = [r.correct is True for r in records if r.expected is not None]
    return sum(graded) / len(graded) if graded else None


def graded_items(records: Iterable[RequestRecord]) -> dict[int, float]:
    """Per item (`index`: runs of one workflow share their item order), the share of its
    answered (ok) requests that were right."""
    seen: dict[int, list[bool]] = defaultdict(list)
    for r in records:
        if r.expected is not None and r.status == "ok":
            seen[r.index].append(r.correct is True)
    return {i: float(np.mean(v)) for i, v in seen.items()}


def gap_points(records: Iterable[RequestRecord], reference: Mapping[int, float]
               ) -> tuple[float | None, int]:
    """Accuracy points of the answered `records` above `reference` (item -> share right) on
    the items both graded, and how many items that is."""
    mine = graded_items(records)
    common = sorted(mine.keys() & reference.keys())
    if not common:
        return None, 0
    return 100 * float(np.mean([mine[i] - reference[i] for i in common])), len(common)


def gpu_per_request(records: Iterable[RequestRecord]) -> float | None:
    return _mean(r.gpu_seconds for r in records if r.status == "ok")


def offered_bound(rate: float, duration_s: float) -> float:
    """The most a run offered at `rate` for `duration_s` can complete per second: the rate
    plus three standard deviations of a Poisson count over the window, plus one request."""
    d = max(duration_s, 1e-9)
    return rate + 3 * math.sqrt(rate / d) + 1 / d


def summarize(run: Run, settings: Settings) -> dict[str, Any]:
    """One run's figures (see DEFINITIONS) and the coherence checks they must pass."""
    recs = run.records
    by_status = dict.fromkeys(STATUSES, 0)
    for r in recs:  # an unknown status is kept (and makes the run incoherent)
        by_status[r.status] = by_status.get(r.status, 0) + 1
    ok = [r for r in recs if r.status == "ok"]
    sends = [r.sent_at for r in recs if r.sent_at > 0]
    ends = [r.completed_at for r in recs if r.completed_at > 0]
    span = max(ends) - min(sends) if sends and ends else 0.0
    window = max(span, run.duration_s, 1e-9)
    lat = [r.latency_s for r in ok]
    idle = settings.idle_latency_s.get((run.pool_family, run.workflow))
    slo = settings.slo_multiple * idle if idle else None
    positions: dict[int, Counter] = defaultdict(Counter)
    for r in recs:  # every stage that ran: the routing decision was made either way
        for i, st in enumerate(r.stages):
            positions[i][st.model or "?"] += 1
    cpu = [f for _, f in run.cpu]
    cpu_p95 = _pct(cpu, 95)
    throughput = len(ok) / window
    checks = {
        "statuses_add_up": sum(by_status[s] for s in STATUSES) == len(recs),
        "throughput_within_offered": throughput <= offered_bound(run.rate, run.duration_s),
    }
    return {
        "run": run.label, "family": run.pool_family, "workflow": run.workflow,
        "policy": run.policy, "pattern": run.pattern, "offered_rate": run.rate,
        "duration_s": run.duration_s, "window_s": window, "total": len(recs),
        "by_status": by_status, "throughput": throughput,
        "latency_p50_s": _pct(lat, 50), "latency_p95_s": _pct(lat, 95),
        "latency_p99_s": _pct(lat, 99), "slo_s": slo,
        "goodput": sum(x <= slo for x in lat) / window if slo else None,
        "accuracy": accuracy(recs), "graded": sum(r.expected is not None for r in recs),
        "gpu_seconds_per_request": gpu_per_request(recs),
        "queue_ms_mean": _mean(sum(s.schedule_ms for s in r.stages) for r in ok),
        "models_by_position": [{m: n / c.total() for m, n in c.most_common()}
                               for _, c in sorted(positions.items())],
        "cpu_mean": _mean(cpu), "cpu_p95": cpu_p95,
        "cpu_bound": cpu_p95 is not None and cpu_p95 >= settings.cpu_bound_threshold,
        "checks": checks, "coherent": all(checks.values()),
    }


def sweep_curves(summaries: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (family, workflow, policy): the throughput-latency curve over the sweep's runs."""
    groups: dict[tuple[str, str, str], list[dict]] = defaultdict(list)
    for s in summaries:
        if s["pattern"] == "sweep":
            groups[(s["family"], s["workflow"], s["policy"])].append(s)
    out = []
    for (fam, wf, pol), ss in sorted(groups.items()):
        ss = sorted(ss, key=lambda s: s["offered_rate"])
        keys = ("offered_rate", "throughput", "latency_p50_s", "latency_p95_s", "goodput",
                "cpu_bound")
        top = ss[-1]["offered_rate"]
        at_top = [s for s in ss if s["offered_rate"] == top]
        out.append({
            "family": fam, "workflow": wf, "policy": pol,
            "points": [{k: s[k] for k in keys} for s in ss],
            "max_throughput": max(s["throughput"] for s in ss), "top_rate": top,
            "p50_at_top_s": _mean(s["latency_p50_s"] for s in at_top),
            "p95_at_top_s": _mean(s["latency_p95_s"] for s in at_top),
            "cpu_bound_steps": sum(s["cpu_bound"] for s in ss),
        })
    return out


def _ratio(x: float | None, y: float | None) -> float | None:
    return x / y if x is not None and y else None


def compare(runs: Sequence[Run], curves: Sequence[dict[str, Any]],
            settings: Settings | None = None) -> list[dict[str, Any]]:
    """Per (family, workflow): every policy's figures, and aragog against each baseline."""
    bound = settings.capacity_bound if settings else {}
    recs: dict[tuple[str, str], dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for run in runs:  # accuracy and GPU-seconds pool every pattern's records
        recs[(run.pool_family, run.workflow)][run.policy] += run.records
    out = []
    for (fam, wf), by_policy in sorted(recs.items()):
        cv = {c["policy"]: c for c in curves if (c["family"], c["workflow"]) == (fam, wf)}
        profiled = settings.largest_correct.get((fam, wf)) if settings else None
        measured = graded_items(by_policy.get("largest", []))
        reference = ({i: float(ok) for i, ok in profiled.items()} if profiled is not None
                     else measured)
        policies = {}
        for pol, rs in sorted(by_policy.items()):
            acc, c = accuracy(rs), cv.get(pol, {})
            gap, matched = gap_points(rs, reference) if reference else (None, 0)
            policies[pol] = {
                "max_throughput": c.get("max_throughput"), "top_rate": c.get("top_rate"),
                "capacity_bound": bound.get((fam, wf), {}).get(pol),
                "p50_at_top_s": c.get("p50_at_top_s"), "p95_at_top_s": c.get("p95_at_top_s"),
                "accuracy": acc, "gpu_seconds_per_request": gpu_per_request(rs),
                "gap_to_largest_points": gap, "gap_matched_requests": matched,
                "cpu_bound_steps": c.get("cpu_bound_steps", 0),
            }
        vs, a = {}, policies.get("aragog")
        for base in BASELINES if a else ():
            if (b := policies.get(base)) is None:
                continue
            p50 = _ratio(a["p50_at_top_s"], b["p50_at_top_s"])
            vs[base] = {"throughput_ratio": _ratio(a["max_throughput"], b["max_throughput"]),
                        "p50_reduction": None if p50 is None else 1 - p50,
                        "host_cpu_bound": bool(a["cpu_bound_steps"] or b["cpu_bound_steps"])}
        agree = ([measured[i] == reference[i] for i in measured.keys() & reference.keys()]
                 if profiled is not None else [])
        out.append({"family": fam, "workflow": wf, "policies": policies, "aragog_vs": vs,
                    "capacity_bound": dict(bound.get((fam, wf), {})),
                    "gap_reference": "profile" if profiled is not None else "largest runs",
                    "largest_runs_agree_with_profile": [sum(agree), len(agree)]})
    return out


def _target(comp: dict, name: str, value: float | None, required: float, unit: str,
            scale: float = 1.0) -> dict[str, Any]:
    met = None if value is None else value >= required
    margin = None if value is None else (value - required) * scale
    if value is None:
        shown, text = "–", "n/a (missing data)"
    else:
        shown = f"{value:.2f}x" if unit == "x" else (
            f"{value:.1%}" if scale == 100 else f"{value:+.1f}{unit}")
        text = f"{'met' if met else 'missed'} by {abs(margin):.2f}{unit}"
    return {"family": comp["family"], "workflow": comp["workflow"], "target": name,
            "value": value, "required": required, "met": met, "margin": margin,
            "unit": unit.strip(), "shown": shown, "text": text}


def targets(comparisons: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The evaluation's goals per (family, workflow); a goal whose policies are absent is left
    out, one whose figure could not be computed is reported as n/a. A throughput goal carries
    the capacity-bound ratios that say whether the pool allows it at all."""
    out = []
    for c in comparisons:
        vs, pols, cap = c["aragog_vs"], c["policies"], c.get("capacity_bound", {})
        for base, req in THROUGHPUT_TARGETS.items():
            if base in vs:
                t = _target(c, f"max throughput >= {req}x {base}",
                            vs[base]["throughput_ratio"], req, "x")
                t["bound_ratio"] = _ratio(cap.get("aragog"), cap.get(base))
                t["bound_ratio_true_f"] = _ratio(cap.get(TRUE_F_SPREAD), cap.get(base))
                out.append(t)
        if "aragog" in pols and "largest" in pols:
            out.append(_target(c, f"accuracy within {ACCURACY_GAP_POINTS:g} points of largest",
                               pols["aragog"]["gap_to_largest_points"], -ACCURACY_GAP_POINTS,
                               " points"))
        if "per-input" in vs:
            out.append(_target(c, f"p50 at highest swept rate >= {P50_REDUCTION_TARGET:.0%} "
                               "below per-input", vs["per-input"]["p50_reduction"],
                               P50_REDUCTION_TARGET, " points", scale=100.0))
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


def _write_plots(runs: Sequence[Run], curves: Sequence[dict], comps: Sequence[dict],
                 out: Path) -> list[str]:
    files = []
    for fam, wf in sorted({(c["family"], c["workflow"]) for c in curves}):
        files.append(_plot_curves(fam, wf, [c for c in curves
                                            if (c["family"], c["workflow"]) == (fam, wf)], out))
    for fam in sorted({c["family"] for c in comps}):
        files.append(_plot_accuracy(fam, [c for c in comps if c["family"] == fam], out))
    for run in runs:
        if run.pattern in FLUCTUATING:
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
              "admitted_configurations", "send_lag_s", "tenant")
    with (out / "requests.csv").open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["family", "workflow", "policy", "pattern", "rate", *fields, "admitted_policy",
                    "queue_ms", "service_ms", "stages", "models"])
        for run in runs:
            for r in run.records:
                w.writerow([run.pool_family, run.workflow, run.policy, run.pattern, run.rate,
                            *(getattr(r, k) for k in fields), r.policy,
                            sum(s.schedule_ms for s in r.stages),
                            sum(s.service_ms for s in r.stages),
                            "+".join(s.stage for s in r.stages),
                            "+".join(s.model for s in r.stages)])


def _f(x: float | None, fmt: str = ".2f", scale: float = 1.0) -> str:
    return "–" if x is None else format(x * scale, fmt)


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
    md += ["", "## Comparison", ""] + _table(
        ["family", "workflow", "baseline", "max throughput ratio (aragog / baseline)",
         "p50 reduction at highest swept rate", "a host-CPU-bound sweep step"],
        [[c["family"], c["workflow"], base, _f(v["throughput_ratio"]) + "x",
          _f(v["p50_reduction"], ".1%"), "yes" if v["host_cpu_bound"] else "no"]
         for c in comps for base, v in c["aragog_vs"].items()])
    md += [""] + _table(
        ["family", "workflow", "policy", "max throughput (req/s)", "capacity bound (req/s)",
         "top rate (req/s)",
         "p50 / p95 at top rate (ms)", "accuracy",
         "gap to largest (points, same requests)", "GPU-s / request"],
        [[c["family"], c["workflow"], pol, _f(p["max_throughput"]), _f(p["capacity_bound"]),
          _f(p["top_rate"], "g"),
          f"{_f(p['p50_at_top_s'], '.0f', 1e3)} / {_f(p['p95_at_top_s'], '.0f', 1e3)}",
          _f(p["accuracy"], ".1%"),
          f"{_f(p['gap_to_largest_points'], '+.1f')} ({p['gap_matched_requests']})",
          _f(p["gpu_seconds_per_request"], ".3f")]
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
    curves = sweep_curves(summaries)
    comps = compare(runs, curves, settings)
    res: dict[str, Any] = {
        "title": title, "emulated": EMULATED, "definitions": DEFINITIONS,
        "settings": {"slo_multiple": settings.slo_multiple,
                     "cpu_bound_threshold": settings.cpu_bound_threshold,
                     "idle_latency_s": {f"{f}/{w}": v
                                        for (f, w), v in settings.idle_latency_s.items()}},
        "notes": list(notes), "runs": summaries, "curves": curves, "comparisons": comps,
        "targets": targets(comps),
        "cpu_bound_runs": [s["run"] for s in summaries if s["cpu_bound"]],
        "incoherent_runs": [s["run"] for s in summaries if not s["coherent"]],
        "plots": _write_plots(runs, curves, comps, out),
    }
    _write_csvs(runs, summaries, out)  # first: the records survive whatever follows
    (out / "results.json").write_text(json.dumps(res, indent=2, default=_plain),
                                      encoding="utf-8")
    (out / "summary.md").write_text(render_summary(res), encoding="utf-8")
    return res
