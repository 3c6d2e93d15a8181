"""The scheduling round: the Cython kernel against the pure-Python reference, in one run.

    python benchmarks/bench_round.py [--quick] [--out reports/bench_round.json]

Sweeps one axis at a time around the base point (1000 queued requests, |C(r)| = 1e3,
6 stages, B = 4): queue length {10, 100, 1000, 10000}, |C(r)| {10, 1e3, 1e4, 1e6}, stages
{3, 6, 10}, B {1, 4, 8}. For each point it reports the round time p50/p99 and placements
per second of

* ext (warm): the compiled round in the steady state under load -- every queued request has
  been through an earlier round, so its per-request state (candidate counts of its ready
  stages) is cached and C(r) is not scanned again;
* ext (cold): the compiled round on requests it has never seen (builds every request's state:
  one pass over each C(r)) -- the like-for-like comparison with the reference;
* ref: the pure-Python reference (always cold: it keeps nothing between rounds);

and the ratios ref/ext. Reference runs whose estimated time exceeds --ref-budget seconds per
point are skipped and marked so.

Workload (seeded): 8 models with concave throughput curves saturating at 8..64 and random
occupancy; 4 workflows per point, each a random layered DAG of the given number of LLM
stages with 8 candidate models per stage; each request restricts 1-3 stages to 1-3 models
(accuracy constraints) and draws C(r) uniformly from what is left; its ready stages are one
DAG layer (1-3 stages). Free capacity totals --free-share of the queued ready stages, spread
unevenly over the models, so some models fill up during the round and the requests that need
them are skipped (look-ahead) while the round goes on down the queue. Every point uses the
same round for all three implementations. |C(r)| = 1e6 needs more than 6 stages of 8
candidates (8^6 = 262144), so that point runs with 10 stages; 3 stages of 8 candidates hold
at most 512 configurations, so that point's |C(r)| is capped (the table shows the actual
mean). At |C(r)| = 1e6 the requests share 16 distinct C(r) arrays per workflow (memory).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from dataclasses import dataclass

import numpy as np
from aragog.scheduler_ext import (
    RoundRequest,
    WorkflowSpace,
    reference_round,
    require_extension,
    schedule_round,
)

N_MODELS = 8
BASE = dict(requests=1000, configs=1000, stages=6, beam=4)


@dataclass
class Workload:
    queue: list[RoundRequest]
    free: np.ndarray
    occupancy: np.ndarray
    curves: np.ndarray
    mean_configs: float
    ready_stages: int


def make_curves(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    sat = rng.choice([8, 16, 32, 64], size=N_MODELS)
    length = int(sat.max()) * 2 + 1
    occ = np.arange(length)
    peak = rng.uniform(50, 500, size=N_MODELS)
    curves = np.empty((N_MODELS, length))
    for m in range(N_MODELS):
        x = np.minimum(occ, sat[m]) / sat[m]
        curves[m] = peak[m] * (1 - np.exp(-3 * x)) / (1 - math.exp(-3))
    return curves, sat


def make_workflow(rng: np.random.Generator, n_stages: int) -> tuple[WorkflowSpace, list[list[int]]]:
    layers: list[list[int]] = []
    s = 0
    while s < n_stages:
        width = int(min(rng.integers(1, 4), n_stages - s))
        layers.append(list(range(s, s + width)))
        s += width
    depths = [d for d, layer in enumerate(layers) for _ in layer]
    cands = [list(rng.permutation(N_MODELS)) for _ in range(n_stages)]
    return WorkflowSpace.from_candidates(cands, depths), layers


def sample_configs(rng: np.random.Generator, space: WorkflowSpace, target: int) -> np.ndarray:
    """C(r): some stages restricted to a few models, the rest free; `target` configs drawn."""
    n = space.n_stages
    allowed = [np.arange(int(space.radices[s])) for s in range(n)]
    for s in rng.choice(n, size=min(n, int(rng.integers(1, 4))), replace=False):
        allowed[s] = np.sort(rng.choice(int(space.radices[s]), size=int(rng.integers(1, 4)),
                                        replace=False))
    # widen restricted stages again if the product is smaller than the target
    sizes = [len(a) for a in allowed]
    radix = [int(r) for r in space.radices]
    while math.prod(sizes) < target and any(sz < radix[i] for i, sz in enumerate(sizes)):
        i = int(np.argmin([sz if sz < int(space.radices[j]) else 99 for j, sz in enumerate(sizes)]))
        allowed[i] = np.arange(int(space.radices[i]))
        sizes[i] = len(allowed[i])
    total = math.prod(sizes)
    k = min(target, total)
    if k == total:
        idx = np.arange(total, dtype=np.int64)
    else:
        idx = np.empty(0, dtype=np.int64)
        while len(idx) < k:
            idx = np.unique(np.concatenate([idx, rng.integers(0, total, size=k + k // 4 + 16)]))
        idx = np.sort(rng.choice(idx, size=k, replace=False))
    configs = np.zeros(k, dtype=np.int64)
    rest = idx
    for s in range(n):
        digit = rest % sizes[s]
        rest = rest // sizes[s]
        configs += allowed[s][digit] * space.strides[s]
    return np.sort(configs)


def make_workload(n_requests: int, n_configs: int, n_stages: int, free_share: float,
                  seed: int) -> Workload:
    rng = np.random.default_rng(seed)
    curves, sat = make_curves(rng)
    occupancy = np.array([rng.integers(0, s) for s in sat], dtype=np.int32)
    flows = [make_workflow(rng, n_stages) for _ in range(4)]
    shared = n_configs >= 100_000
    pools: dict[int, list[np.ndarray]] = {}
    queue = []
    for _ in range(n_requests):
        w = int(rng.integers(len(flows)))
        space, layers = flows[w]
        if shared:
            pool = pools.setdefault(w, [])
            if len(pool) < 16:
                pool.append(sample_configs(rng, space, n_configs))
            configs = pool[int(rng.integers(len(pool)))]
        else:
            configs = sample_configs(rng, space, n_configs)
        layer = layers[int(rng.integers(len(layers)))]
        k = 1 if rng.random() < 0.7 else int(rng.integers(1, len(layer) + 1))
        ready = [int(s) for s in rng.choice(layer, size=k, replace=False)]
        queue.append(RoundRequest(space, configs, ready))
    ready_total = sum(len(r.ready) for r in queue)
    weights = rng.dirichlet(np.ones(N_MODELS))
    free = np.floor(weights * free_share * ready_total + rng.random(N_MODELS)).astype(np.int32)
    return Workload(queue, free, occupancy, curves,
                    float(np.mean([len(r.configs) for r in queue])), ready_total)


def timed(fn, reps: int, before=None) -> tuple[list[float], int]:
    times = []
    placed = 0
    for _ in range(reps):
        if before is not None:
            before()
        t0 = time.perf_counter()
        res = fn()
        times.append(time.perf_counter() - t0)
        placed = len(res.placements)
    return times, placed


def stats(times: list[float], placed: int) -> dict:
    a = np.array(times) * 1e3
    p50 = float(np.percentile(a, 50))
    return {"p50_ms": p50, "p99_ms": float(np.percentile(a, 99)), "mean_ms": float(a.mean()),
            "reps": len(times), "placements": placed,
            "placements_per_s": placed / (p50 / 1e3) if p50 > 0 else float("inf")}


def run_point(axis: str, point: dict, args: argparse.Namespace) -> dict:
    stages = point["stages"]
    note = ""
    if point["configs"] > 8 ** stages:
        if point["configs"] >= 1_000_000:
            stages = 10
            note = "10 stages (8^6 < 1e6)"
        else:
            note = f"|C| capped by the space (8^{stages})"
    wl = make_workload(point["requests"], point["configs"], stages, args.free_share, args.seed)
    q, free, occ, curves, beam = wl.queue, wl.free, wl.occupancy, wl.curves, point["beam"]
    work = point["requests"] * wl.mean_configs  # configs scanned by a cold round

    def ext():
        return schedule_round(q, free, occ, curves, beam)

    def ref():
        return reference_round(q, free, occ, curves, beam)

    def forget():
        for rr in q:
            rr._state = None

    quick = args.quick
    cold_reps = max(3, min(200 if not quick else 30, int(2e8 / max(work, 1))))
    warm_reps = 300 if not quick else 40
    if work > 1e8:
        warm_reps = 5 if not quick else 2
        cold_reps = 3 if not quick else 1
    cold_t, cold_n = timed(ext, cold_reps, before=forget)
    ext()  # leave every request with its state
    warm_t, warm_n = timed(ext, warm_reps)
    row = {"axis": axis, **point, "stages_run": stages, "mean_configs": wl.mean_configs,
           "ready_stages": wl.ready_stages, "free_total": int(np.maximum(free, 0).sum()),
           "note": note, "ext_warm": stats(warm_t, warm_n), "ext_cold": stats(cold_t, cold_n)}
    # the reference costs about 0.5 us per config scanned plus ~40 us per step
    est = work * 0.5e-6 + wl.ready_stages * beam * 10e-6
    budget = args.ref_budget if not quick else args.ref_budget / 4
    if est * 2 > budget:
        row["ref"] = None
        row["ref_skipped"] = f"estimated {est:.0f} s per round > budget {budget:.0f} s for 2 rounds"
    else:
        first = time.perf_counter()
        res = ref()
        one = time.perf_counter() - first
        reps = max(1, min(20 if not quick else 3, int(budget / max(one, 1e-6)) - 1))
        ref_t, ref_n = timed(ref, reps)
        ref_t.append(one)
        row["ref"] = stats(ref_t, ref_n)
        # same round, same answer (the benchmark doubles as a large parity check)
        ext_res = ext()
        row["parity"] = bool(ext_res.placements == res.placements and all(
            np.array_equal(ext_res.configs[k], res.configs[k]) for k in res.configs))
        row["ratio_cold_p50"] = row["ref"]["p50_ms"] / row["ext_cold"]["p50_ms"]
        row["ratio_warm_p50"] = row["ref"]["p50_ms"] / row["ext_warm"]["p50_ms"]
    return row


def sweep(quick: bool) -> list[tuple[str, dict]]:
    points = [("base", dict(BASE))]
    axes = {"requests": [10, 100, 10000], "configs": [10, 10000, 1_000_000],
            "stages": [3, 10], "beam": [1, 8]}
    if quick:
        axes = {"requests": [100], "configs": [10000], "stages": [10], "beam": [8]}
    for axis, values in axes.items():
        for v in values:
            points.append((axis, {**BASE, axis: v}))
    return points


def fmt(x: float | None, unit: str = "") -> str:
    if x is None:
        return "-"
    if x >= 100:
        return f"{x:.0f}{unit}"
    if x >= 10:
        return f"{x:.1f}{unit}"
    return f"{x:.2f}{unit}"


def print_table(rows: list[dict]) -> None:
    head = (f"{'axis':<9}{'queue':>6}{'|C|':>9}{'st':>4}{'B':>3} | {'warm p50':>9}{'p99':>8}"
            f"{'plc/s':>9} | {'cold p50':>9}{'p99':>8} | {'ref p50':>9}{'p99':>8} |"
            f"{'ref/cold':>9}{'ref/warm':>9}  note")
    print(head)
    print("-" * len(head))
    for r in rows:
        ref = r.get("ref")
        print(f"{r['axis']:<9}{r['requests']:>6}{r['mean_configs']:>9.0f}{r['stages_run']:>4}"
              f"{r['beam']:>3} | {fmt(r['ext_warm']['p50_ms'], 'ms'):>9}"
              f"{fmt(r['ext_warm']['p99_ms']):>8}{r['ext_warm']['placements_per_s']:>9.0f} | "
              f"{fmt(r['ext_cold']['p50_ms'], 'ms'):>9}{fmt(r['ext_cold']['p99_ms']):>8} | "
              f"{fmt(ref['p50_ms'] if ref else None, 'ms'):>9}"
              f"{fmt(ref['p99_ms'] if ref else None):>8} |"
              f"{fmt(r.get('ratio_cold_p50'), 'x'):>9}{fmt(r.get('ratio_warm_p50'), 'x'):>9}  "
              f"{r['note'] or ''}{'' if ref else 'ref skipped: ' + r.get('ref_skipped', '')}"
              f"{'' if r.get('parity', True) else '  PARITY FAILED'}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="few points and repetitions (~1 min)")
    ap.add_argument("--out", default="", help="write the results as JSON to this path")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--free-share", type=float, default=0.5,
                    help="free capacity as a share of the queued ready stages (default 0.5)")
    ap.add_argument("--ref-budget", type=float, default=60.0,
                    help="seconds of reference rounds per point before skipping (default 60)")
    args = ap.parse_args(argv)
    require_extension()
    rows = []
    t0 = time.time()
    for axis, point in sweep(args.quick):
        row = run_point(axis, point, args)
        rows.append(row)
        print(f"  done {axis}={point[axis] if axis != 'base' else ''} "
              f"({time.time() - t0:.0f} s)", file=sys.stderr, flush=True)
    print()
    print("Round time (ms), placements per second (warm), for the compiled round and the "
          "pure-Python reference in the same run:")
    print_table(rows)
    base = rows[0]
    ok_speed = base.get("ratio_cold_p50", 0) >= 50
    ok_p99 = base["ext_warm"]["p99_ms"] <= 5.0
    print(f"\nbase point: ref/ext {fmt(base.get('ratio_cold_p50'))}x cold, "
          f"{fmt(base.get('ratio_warm_p50'))}x warm (target >= 50x, cold: "
          f"{'met' if ok_speed else 'NOT met'}); ext p99 warm {fmt(base['ext_warm']['p99_ms'])} ms,"
          f" cold {fmt(base['ext_cold']['p99_ms'])}"
          f" ms (target <= 5 ms: {'met' if ok_p99 else 'NOT met'})")
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        meta = {"python": sys.version.split()[0], "machine": platform.machine(),
                "cpus": os.cpu_count(), "quick": args.quick, "seed": args.seed,
                "free_share": args.free_share, "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
        with open(args.out, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=1)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
