"""aragog-sim: compare policies on a pool and a workload in simulated time.

    aragog-sim --pool llama3 --instances-scale 8 --workflow voting --workflow self-refine \\
        --policy largest --policy cheapest --rate 40 --duration 600 --seeds 3
    aragog-sim --pool llama3 --instances-scale 125 --policy aragog --policy per-input:router \\
        --rate 500 --rate 700 --duration 10 --seeds 3 --bounds   # a sweep, ratios, bounds

Arrivals are Poisson at --rate for --duration simulated seconds, or a window of the Azure
LLM inference trace time-compressed to --rate (--trace azure: its bursts and lulls are
real); each arrival is a held-out request of the generated benchmark (EMULATED answers) of
its workflow. Every policy serves the same arrivals of a seed. Printed: per policy, the
figures of the load generator's report (aragog.loadgen.report.summarize), means over seeds
with 95% intervals; with several --rate (a sweep), each policy's maximum throughput and
goodput over the rates and the first policy's ratios to the others, paired by seed
(report.sweep_curves, report.pair); with --bounds, each policy's fluid capacity bound
(aragog.loadgen.capacity) beside them. --out DIR also writes them as results.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from aragog.common.pool import PoolSpec, load_pool
from aragog.loadgen import arrivals as arrivals_mod
from aragog.loadgen import (
    azure_trace,
    eval_policies,  # noqa: F401  (aragog-profiled: the profiled F(r))
    report,
)
from aragog.loadgen.evaluate import item_draws
from aragog.sim.core import Arrival, ControlPath, Simulator
from aragog.sim.planning import plan_instances, served
from aragog.workflows import BENCHMARKED

MAX_ARRIVALS = 2_000_000


def scaled(pool: PoolSpec, instances_scale: int) -> PoolSpec:
    """The pool with every model's instances multiplied (a bigger cluster of the same GPUs)."""
    if instances_scale < 1:
        raise ValueError(f"--instances-scale must be >= 1, got {instances_scale}")
    return dataclasses.replace(pool, models=tuple(
        dataclasses.replace(m, instances=m.instances * instances_scale) for m in pool.models))


def gpus(pool: PoolSpec) -> int:
    return sum(m.instances * m.tensor_parallel for m in pool.models)


def gpus_for_slo(base: PoolSpec, make_sim: Callable[[PoolSpec], Simulator],
                 arrivals: Sequence[Arrival], policy: str, slo_s: dict[str, float], share: float,
                 max_scale: int = 1024) -> int | None:
    """The smallest k such that `base` with every model's instances x k serves `share` of
    the arrivals ok within their workflow's SLO (`slo_s`): doubling, then bisection (more
    instances never hurt here, near enough). None if no k up to `max_scale` does, or if the
    policy answers none of them (it refuses: no artifacts, say)."""
    def meets(k: int) -> bool | None:
        _, ok, good = served(make_sim(scaled(base, k)), arrivals, policy, slo_s)
        if not ok:
            return None
        return good >= share * len(arrivals)

    hi = 1
    while not (met := meets(hi)):
        if met is None or hi >= max_scale:
            return None
        hi *= 2
    lo = hi // 2  # 0, or a scale that fell short
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if meets(mid):
            hi = mid
        else:
            lo = mid
    return hi


class Arrivals:
    """A run's arrivals as arrays (offset, workflow, held-out item), made into Arrival
    objects one at a time as the simulator draws them: a million arrivals take ~20 MB,
    not the ~200 MB of a million objects. Iterable any number of times."""

    def __init__(self, offsets: np.ndarray, workflows: Sequence[str], wf_index: np.ndarray,
                 items: np.ndarray):
        self.offsets, self.workflows, self.wf_index, self.items = (
            offsets, list(workflows), wf_index, items)
        from aragog.emulation.generate import benchmark

        self._held = {w: benchmark(w).split("test") for w in self.workflows}

    def __len__(self) -> int:
        return len(self.offsets)

    def __getitem__(self, i: int) -> Arrival:
        w = self.workflows[self.wf_index[i]]
        item = self._held[w][int(self.items[i])]
        return Arrival(float(self.offsets[i]), w, item.input, item.answer, int(self.items[i]))

    def __iter__(self) -> Iterator[Arrival]:
        return (self[i] for i in range(len(self)))


PATTERNS = ("poisson", "square", "bursts")


def make_arrivals(workflows: Sequence[str], rate: float, duration: float, seed: int,
                  trace: str | None = None, pattern: str = "poisson", period: float = 60.0
                  ) -> tuple[Arrivals, str]:
    """The seed's arrivals and a line saying how they were made. Without a trace, `pattern`
    at mean `rate`: Poisson; a square wave (0.5x the rate for half of each `period`, 1.5x
    for the other half); or bursts (a Markov-modulated Poisson process switching between
    0.25x and 1.75x the rate, staying `period`/2 in each on average)."""
    if trace == "azure":
        tr = azure_trace.load()
        n = azure_trace.arrivals_needed(rate, duration)
        if n > MAX_ARRIVALS:
            raise ValueError(f"{n} arrivals exceed {MAX_ARRIVALS}")
        start = azure_trace.window_start(tr, n, seed, list(workflows))
        win = azure_trace.window(tr, start, n, rate, list(workflows))
        offsets, wfs = win.offsets, win.workflows
        how = (f"azure-trace window of {n} requests from #{start}, time-compressed "
               f"{win.compression:.1f}x to {rate:g}/s")
    elif trace is None:
        if rate * duration > MAX_ARRIVALS:
            raise ValueError(f"--rate x --duration = {rate * duration:g} arrivals exceed "
                             f"{MAX_ARRIVALS}")
        if pattern not in PATTERNS or not period > 0:
            raise ValueError(f"pattern is one of {PATTERNS} and period > 0, got {pattern!r}, "
                             f"{period}")

        def draw(length: float, s: Any) -> np.ndarray:  # the load generator's own processes
            if pattern == "square":
                return arrivals_mod.square_wave(0.5 * rate, 1.5 * rate, period, length, s)
            if pattern == "bursts":
                return np.asarray(arrivals_mod.mmpp([0.25 * rate, 1.75 * rate], period / 2,
                                                    length, s))
            return arrivals_mod.poisson(rate, length, s)

        # in windows short enough for the load generator's bound on one call (a Poisson
        # process over disjoint windows is the process over their union; a square wave's
        # windows are whole periods; a burst process restarts its chain at each window)
        peak = rate * {"poisson": 1.0, "square": 1.5, "bursts": 1.75}[pattern]
        window = min(duration, 0.9 * arrivals_mod.MAX_ARRIVALS / peak)
        if pattern == "square" and window < duration:
            window = max(period, period * (window // period))
        parts, start = [], 0.0
        while start < duration:
            length = min(window, duration - start)
            parts.append(start + draw(length, seed if not parts else [seed, len(parts)]))
            start += length
        offsets = np.concatenate(parts)
        rng = np.random.default_rng([seed, 1])
        wfs = [workflows[k] for k in rng.integers(0, len(workflows), len(offsets))]
        shape = {"poisson": "poisson", "square": f"square wave 0.5x/1.5x, period {period:g} s",
                 "bursts": f"bursts 0.25x/1.75x, mean dwell {period / 2:g} s"}[pattern]
        how = f"{shape}, mean {rate:g}/s over {duration:g} s, workflows drawn uniformly"
    else:
        raise ValueError(f"unknown trace {trace!r} (azure)")
    names = sorted(set(wfs))
    draws = item_draws(names, seed)
    wf_index = np.array([names.index(w) for w in wfs], dtype=np.int16)
    items = np.empty(len(wfs), dtype=np.int32)
    for k, w in enumerate(names):  # each workflow's arrivals take its draws in turn
        mine = np.flatnonzero(wf_index == k)
        items[mine] = np.resize(np.asarray(draws[w], dtype=np.int32), len(mine))
    return Arrivals(np.asarray(offsets, dtype=np.float64), names, wf_index, items), how


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="aragog-sim", description=__doc__.split("\n\n")[0])
    ap.add_argument("--pool", default=None,
                    help="a shipped pool name (llama3, qwen2.5, ...) or a pool file; default: "
                         "the embedded pool")
    ap.add_argument("--instances-scale", type=int, default=1,
                    help="multiply every model's instances (a bigger cluster)")
    ap.add_argument("--workflow", action="append", choices=BENCHMARKED,
                    help="benchmarked workflow(s) to mix (repeat; default: all)")
    ap.add_argument("--policy", action="append",
                    help="policies to compare (repeat); besides the router's, aragog-profiled: "
                         "aragog over each request's profiled F(r), the clairvoyant router; "
                         "oracle[:HORIZON_S]: that, knowing the arrivals of the next HORIZON_S "
                         "seconds (default 5; aragog.sim.oracle)")
    ap.add_argument("--rate", type=float, action="append", required=True,
                    help="mean arrivals per second (repeat: a sweep)")
    ap.add_argument("--duration", type=float, default=60.0, help="arrival window, simulated s")
    ap.add_argument("--trace", choices=["azure"], default=None,
                    help="arrivals from a window of the Azure trace instead of Poisson")
    ap.add_argument("--pattern", choices=PATTERNS, default="poisson",
                    help="without --trace: Poisson at --rate; a square wave between 0.5x and "
                         "1.5x it; or bursts between 0.25x and 1.75x it (Markov-modulated)")
    ap.add_argument("--period", type=float, default=60.0,
                    help="the square wave's period, or twice the bursts' mean dwell, seconds")
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--placement", choices=["cost-first", "work-conserving"],
                    default="cost-first")
    ap.add_argument("--time-scale", type=float, default=None,
                    help="play the pool's latencies at this scale (default: the pool's own)")
    ControlPath().add_arguments(ap)
    ap.add_argument("--artifacts", default=None,
                    help="routing artifacts root (default: the router's default) for the "
                         "policies that need a router")
    ap.add_argument("--slo-multiple", type=float, default=5.0)
    ap.add_argument("--gpus-for-slo", type=float, default=None, metavar="SHARE",
                    help="also find, per policy, the fewest GPUs (every model's instances "
                         "scaled alike) that serve SHARE of seed 0's arrivals at the highest "
                         "--rate ok within the SLO")
    ap.add_argument("--plan-instances", type=int, default=None, metavar="GPU_BUDGET",
                    help="also plan, per policy, the instances of each model (from the fluid "
                         "floor, confirmed by simulation) that serve --slo-share of seed 0's "
                         "arrivals at the highest --rate within the SLO, within GPU_BUDGET")
    ap.add_argument("--slo-share", type=float, default=0.95,
                    help="the share of arrivals --plan-instances must serve within the SLO")
    ap.add_argument("--bounds", action="store_true",
                    help="print each policy's fluid capacity bound (needs the artifacts)")
    ap.add_argument("--out", default=None, help="write results.json here")
    a = ap.parse_args(argv)
    try:
        pool = scaled(load_pool(a.pool), a.instances_scale)
        if not (min(a.rate) > 0 and a.duration > 0 and a.seeds >= 1 and a.period > 0):
            raise ValueError("--rate, --duration, --seeds and --period must be positive")
        if a.time_scale is not None and a.time_scale < 0:
            raise ValueError("--time-scale must be >= 0")
        control = ControlPath.from_arguments(a)
        if a.gpus_for_slo is not None and not 0 < a.gpus_for_slo <= 1:
            raise ValueError("--gpus-for-slo is a share of the arrivals, in (0, 1]")
        if not 0 < a.slo_share <= 1 or (a.plan_instances is not None and a.plan_instances < 1):
            raise ValueError("--slo-share is in (0, 1] and --plan-instances >= 1 GPU")
    except ValueError as e:
        ap.error(str(e))
    wids = a.workflow or list(BENCHMARKED)
    pols = a.policy or ["largest", "cheapest"]
    routing = None
    if a.artifacts or any(p not in ("largest", "cheapest", "random") for p in pols):
        from aragog.common.settings import RouterSettings
        from aragog.routing.context import Routing

        settings = RouterSettings.from_env()
        if a.artifacts:
            settings = dataclasses.replace(settings, artifacts_dir=a.artifacts)
        routing = Routing(settings)
    from aragog import workflows as shipped
    from aragog.common.settings import SchedulerSettings
    from aragog.emulation.generate import benchmark

    def make_sim(p: PoolSpec) -> Simulator:
        return Simulator(p, [shipped.load(w, p.names) for w in wids], routing=routing,
                         scheduler=dataclasses.replace(SchedulerSettings(), placement=a.placement),
                         time_scale=a.time_scale, control=control, occupancy_timeline=False)

    sim = make_sim(pool)
    idle = {(pool.family, w): sim.idle_latency(w, benchmark(w).split("test")[0].input)
            for w in wids}
    settings_ = report.Settings(slo_multiple=a.slo_multiple, idle_latency_s=idle)
    print(f"EMULATED pool {pool.family or '(embedded)'}: {gpus(pool)} GPUs, "
          f"{', '.join(f'{m.name} x{m.instances}' for m in pool.models)}; workflows "
          f"{', '.join(wids)}", flush=True)
    summaries: list[dict] = []
    for seed in range(a.seeds):
        for rate in sorted(a.rate):
            arrivals, how = make_arrivals(wids, rate, a.duration, seed, a.trace, a.pattern,
                                          a.period)
            for pol in pols:
                run = report.Run(pool.family, report.MIXED if len(wids) > 1 else wids[0], pol,
                                 "trace" if a.trace else a.pattern, rate, a.duration, [],
                                 seed=seed, arrivals=how)
                # the report's own figures, folded in as each request ends: no record is kept
                tally = report.Tally(run, settings_, exact=False)
                t0 = time.perf_counter()
                sim.run(arrivals, pol, on_record=tally.add)
                wall = time.perf_counter() - t0
                s = tally.summary()
                s["sim_wall_s"] = wall
                summaries.append(s)
                print(f"seed {seed} {rate:g}/s {pol:>14}: {len(arrivals)} requests, throughput "
                      f"{s['throughput']:.2f}/s, p50 {_f(s['latency_p50_s'])} s, p95 "
                      f"{_f(s['latency_p95_s'])} s, goodput {_f(s['goodput'])}/s, accuracy "
                      f"{_f(s['accuracy'], 3)}, GPU-s/request {_f(s['gpu_seconds_per_request'], 3)}"
                      f" ({wall:.1f} s to simulate)", flush=True)
    if a.seeds > 1:
        print("means over seeds, 95% interval:")
        for rate in sorted(a.rate):
            for pol in pols:
                mine = [s for s in summaries if s["policy"] == pol and s["offered_rate"] == rate]
                for key in ("throughput", "latency_p50_s", "goodput", "accuracy"):
                    m, lo, hi = report.mean_ci([s[key] for s in mine])
                    print(f"  {rate:g}/s {pol:>14} {key}: {_f(m, 3)} [{_f(lo, 3)}, {_f(hi, 3)}]")
    bound = fluid_bounds(pool, wids, a.artifacts) if a.bounds else {}
    comparison = compare(summaries, pols, bound)
    needed: dict[str, int | None] = {}
    plans: dict[str, dict] = {}
    if a.gpus_for_slo is not None or a.plan_instances is not None:
        # the searches serve seed 0's arrivals at the highest rate, within each workflow's SLO
        arrivals, _ = make_arrivals(wids, max(a.rate), a.duration, 0, a.trace, a.pattern,
                                    a.period)
        slo = {w: a.slo_multiple * idle[(pool.family, w)] for w in wids}
    if a.gpus_for_slo is not None:
        print(f"GPUs to serve {a.gpus_for_slo:.0%} of seed 0's arrivals within the SLO "
              f"({a.slo_multiple:g}x the largest configuration's idle latency):")
        for pol in pols:
            k = gpus_for_slo(pool, make_sim, arrivals, pol, slo, a.gpus_for_slo)
            needed[pol] = None if k is None else gpus(scaled(pool, k))
            print(f"  {pol:>14}: " + ("not within 1024x" if k is None else
                                      f"{needed[pol]} (instances x{k})"), flush=True)
    if a.plan_instances is not None:
        print(f"instances per model to serve {a.slo_share:.0%} of seed 0's arrivals within the "
              f"SLO, within {a.plan_instances} GPUs (fluid floor in brackets):")
        for pol in pols:
            p = plan_instances(pool, make_sim, arrivals, pol, slo, a.slo_share, a.plan_instances)
            plans[pol] = dataclasses.asdict(p)
            print(f"  {pol:>16}: " + ", ".join(f"{m} x{k} [{p.floor[m]}]"
                                               for m, k in p.instances.items())
                  + f" = {p.gpus} GPUs, {p.within_slo:.1%} within the SLO"
                  + ("" if p.met else " (NOT met within the budget)")
                  + f"; {p.runs} simulated runs", flush=True)
    if a.out:
        Path(a.out).mkdir(parents=True, exist_ok=True)
        with open(os.path.join(a.out, "results.json"), "w", encoding="utf-8") as f:
            json.dump({"emulated": report.EMULATED, "pool": pool.family, "gpus": gpus(pool),
                       "summaries": summaries, "comparison": comparison,
                       "capacity_bound": bound, "gpus_for_slo": needed,
                       "planned_instances": plans}, f, indent=1,
                      default=str)


def fluid_bounds(pool: PoolSpec, wids: Sequence[str], artifacts_dir: str | None
                 ) -> dict[str, float]:
    """Each policy's fluid capacity bound on `pool` for the workflows mixed in equal shares
    (as the Poisson arrivals draw them), from the routing artifacts."""
    from aragog import workflows as shipped
    from aragog.loadgen import capacity
    from aragog.routing import artifacts
    from aragog.routing.embedding import Embedder

    root = artifacts_dir or artifacts.default_dir()
    parts = []
    for w in wids:
        art, why = artifacts.load(root, pool, shipped.load(w, pool.names))
        if art is None:
            raise SystemExit(f"aragog-sim --bounds: {w}: {why}")
        parts.append((1.0 / len(wids), art))
    out = capacity.mixed_bounds(parts, Embedder(), pool)
    return {**out, "oracle": out[report.AR_PROFILED]}  # the same F(r); arrivals do not move it


def compare(summaries: list[dict], pols: Sequence[str], bound: dict[str, float]
            ) -> dict[str, Any]:
    """Per policy its maximum throughput and goodput over the rates (means over seeds, 95%
    intervals) beside its capacity bound; the first policy's ratios to each other one, paired
    by seed. Printed, and returned for results.json."""
    curves = {c["policy"]: c for c in report.sweep_curves(
        [{**s, "pattern": "sweep"} for s in summaries])}
    print("maximum over the offered rates (means over seeds, 95% interval)"
          + (", and the fluid capacity bound:" if bound else ":"))
    for pol in pols:
        c = curves[pol]
        ci, gci = c["max_throughput_ci"] or [None, None], c["max_goodput_ci"] or [None, None]
        print(f"  {pol:>16}: throughput {_f(c['max_throughput'])} [{_f(ci[0])}, {_f(ci[1])}]"
              f"/s, goodput {_f(c['max_goodput'])} [{_f(gci[0])}, {_f(gci[1])}]/s"
              + (f", bound {bound[_base(pol)]:.2f}/s" if _base(pol) in bound else ""))
    ratios = {}
    first = pols[0]
    for other in pols[1:]:
        r = ratios[other] = report.pair(curves[first], curves[other])
        tci = r["throughput_ratio_ci"] or [None, None]
        gci = r["goodput_ratio_ci"] or [None, None]
        b = (f"; bound ratio {bound[_base(first)] / bound[_base(other)]:.2f}x"
             if _base(first) in bound and _base(other) in bound else "")
        print(f"  {first} / {other}: max throughput {_f(r['throughput_ratio'])}x "
              f"[{_f(tci[0])}, {_f(tci[1])}], max goodput {_f(r['goodput_ratio'])}x "
              f"[{_f(gci[0])}, {_f(gci[1])}]{b}")
    return {"curves": curves, "ratios": ratios}


def _base(policy: str) -> str:
    """The name a policy's capacity bound is under (the oracle's horizon does not move it)."""
    return "oracle" if policy.partition(":")[0] == "oracle" else policy


def _f(x: float | None, nd: int = 2) -> str:
    return "-" if x is None else f"{x:.{nd}f}"


if __name__ == "__main__":
    sys.exit(main())
