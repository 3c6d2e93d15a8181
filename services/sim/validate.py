"""The simulator checked against the live stack: the same arrivals served both ways.

    python -m aragog.sim.validate --workflow self-refine --policy largest --rate 2 --duration 30
    python -m aragog.sim.validate --pool qwen2.5 --capacity-scale 0.0625 --time-scale 0.15 \
        --workflow voting --policy largest --rate 9      # the evaluation's scale, overloaded

starts the stack (embedded EMULATED pool, its own Redis), sends each workflow's held-out
requests open-loop at Poisson arrivals (aragog.loadgen.runner), replays the same arrivals
in the simulator, and prints both sides' throughput, p50/p95 latency and share of stages per
model, with the simulator's relative difference, and how the calls met at the models'
batchers, and per stage the wait for a lease and the call. Where they differ the live stack
holds what the simulator leaves out (core.py's docstring): the time spent around each model
call above all (AcquireStage, the group commit, the release, the call's way through
Triton), which a ControlPath stands for (by default as measured on the live stack here:
MEASURED below; `--control-ms`, `--control-before`, `--release-ms`, `--call-way-ms`).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from aragog.common.pool import PoolSpec, load_pool
from aragog.common.settings import PoolSettings
from aragog.loadgen import report
from aragog.loadgen.arrivals import poisson
from aragog.sim.core import Arrival, ControlPath, Simulator
from aragog.workflows import BENCHMARKED

FIGURES = ("throughput", "latency_p50_s", "latency_p95_s")
# What the live stack spends around each model call, as measured on it (2-core host, 2
# executors, qwen2.5 task-decomposition at 60% load, warm, 2026-12-01; benchmarks/README.md,
# "Simulator"): placement to model call p50 3.2 ms; answer to the next stage's placement p50
# 5.7 ms; a call p50 8-10 ms longer than the model's time (through Triton and the pool's
# handler, the lease held); the release ~3 ms.
MEASURED = ControlPath(stage_s=0.009, before=0.35, release_s=0.003, call_s=0.008)
WARM_S = 5.0  # of arrivals served and dropped before a policy's runs (warm_up)
WARM_SEED = 1_000_003  # not a seed the runs use


def compare(router_addr: str, pool: PoolSpec, workflow: str, policy: str,
            offsets: Sequence[float], routing: Any = None,
            control: ControlPath | None = None, timeout_s: float = 120.0,
            root_certificates: bytes | None = None, scheduler_addr: str = "",
            repeats: int = 1) -> dict[str, Any]:
    """Serve arrivals at `offsets` of `workflow`'s held-out requests live (through the router
    at `router_addr`, with the workflow registered) and simulated; both summaries and the
    simulator's relative difference per figure. With `scheduler_addr` (a plaintext one), the
    host's CPU is sampled while the live side runs (`live_cpu`: busy share p50, p95): a live
    stack that used the whole host was limited by it, which the simulator does not model.

    `repeats`: the live side serves the same arrivals that many times; its figures are then
    their means, and `live_each` holds each run's: how far the live stack is from itself,
    which bounds how close the simulator can be to it (the simulator is deterministic)."""
    from aragog import workflows as shipped
    from aragog.emulation.generate import benchmark
    from aragog.loadgen.evaluate import Sampler
    from aragog.loadgen.runner import run_schedule

    held = benchmark(workflow).split("test")
    items = [held[i % len(held)] for i in range(len(offsets))]
    sampler = Sampler(scheduler_addr) if scheduler_addr else None
    if sampler:
        sampler.start()
    try:
        live_runs = [run_schedule(router_addr, list(offsets), [(workflow, it.input, it.answer)
                                                               for it in items],
                                  policy=policy, timeout_s=timeout_s,
                                  root_certificates=root_certificates)
                     for _ in range(repeats)]
    finally:
        if sampler:
            sampler.stop()
    sim = Simulator(pool, [shipped.load(workflow, pool.names)], routing=routing,
                    control=control or ControlPath(), occupancy_timeline=False)
    simulated = sim.run([Arrival(float(t), workflow, it.input, it.answer, i % len(held))
                         for i, (t, it) in enumerate(zip(offsets, items, strict=True))],
                        policy).records
    duration = max(offsets) if len(offsets) else 0.0
    rate = len(offsets) / duration if duration else 0.0
    settings = report.Settings()
    out: dict[str, Any] = {"workflow": workflow, "policy": policy, "requests": len(offsets)}

    def summary(records: list[Any]) -> dict[str, Any]:
        return report.summarize(report.Run(pool.family, workflow, policy, "poisson", rate,
                                           duration, records), settings)

    each = [summary(records) for records in live_runs]
    out["live_each"] = {k: [e[k] for e in each] for k in FIGURES}
    out["live_ok"] = [e["by_status"].get("ok", 0) for e in each]
    out["live"] = {**each[0], **{k: _mean(out["live_each"][k]) for k in FIGURES}}
    out["sim"] = summary(simulated)
    window_s = PoolSettings().max_queue_delay_us / 1e6
    out["batch_window"], out["placement_to_call_ms"], out["stage_ms"] = {}, {}, {}
    live = [rec for records in live_runs for rec in records]  # runs in turn: times apart
    for side, records in (("live", live), ("sim", simulated)):
        out["batch_window"][side] = within_batch_window(records, window_s)
        out["placement_to_call_ms"][side] = placement_to_call_ms(records)
        out["stage_ms"][side] = stage_ms(records)
    out["difference"] = {k: _relative(out["sim"][k], out["live"][k]) for k in FIGURES}
    if sampler and sampler.cpu:
        busy = [v for _, v in sampler.cpu]
        out["live_cpu"] = {"p50": float(np.percentile(busy, 50)),
                           "p95": float(np.percentile(busy, 95))}
    return out


def warm_up(router_addr: str, workflow: str, policy: str, rate: float, duration_s: float,
            root_certificates: bytes | None = None) -> None:
    """Serve `duration_s` of Poisson arrivals at `rate` and drop them: the first requests
    after a start pay one-off costs the simulator does not model (connections, the router
    loading a workflow's artifacts, each Triton slot's first call). Unwarmed, the first ten
    requests of a qwen2.5 task-decomposition run took 0.77 s longer than simulated, against
    0.03 s for the next ten, and their backlog delayed those after them."""
    from aragog.emulation.generate import benchmark
    from aragog.loadgen.runner import run_schedule

    held = benchmark(workflow).split("test")
    offsets = poisson(rate, duration_s, seed=WARM_SEED).tolist()
    run_schedule(router_addr, offsets, [(workflow, held[-1 - i % len(held)].input, None)
                                        for i in range(len(offsets))],
                 policy=policy, root_certificates=root_certificates)


def _timed_calls(records: Sequence[Any]) -> Iterator[Any]:
    """The stages whose model call was timed (an older executor's records, and tool stages,
    carry 0)."""
    return (st for rec in records for st in rec.stages if st.model and st.call_ended_at)


def within_batch_window(records: Sequence[Any], window_s: float) -> dict[str, float]:
    """Per stage, the share of its model calls that reached their model within `window_s`
    (the dynamic batcher's wait) of another call on that model: how often a call may share
    a batch, which then runs to its longest call. Read from the calls' start times as the
    executor (or the simulator) timed them; stages without them are left out."""
    by_model: dict[str, list[tuple[float, str]]] = {}
    for st in _timed_calls(records):
        by_model.setdefault(st.model, []).append((st.call_started_at, st.stage))
    near: dict[str, list[bool]] = {}
    for calls in by_model.values():
        calls.sort()
        times = [t for t, _ in calls]
        for i, (t, stage) in enumerate(calls):
            gap = min(t - times[i - 1] if i else math.inf,
                      times[i + 1] - t if i + 1 < len(times) else math.inf)
            near.setdefault(stage, []).append(gap <= window_s)
    return {stage: sum(v) / len(v) for stage, v in sorted(near.items())}


def placement_to_call_ms(records: Sequence[Any]) -> dict[str, float]:
    """p5/p50/p95 of the time from a stage's placement to its model call (live: the group
    commit, the grant, the executor's start; what `--control-before` stands for). Live, the
    scheduler's clock against the executor's: one host here; across hosts, their skew too."""
    ms = [(st.call_started_at - st.placed_at) * 1000.0 for st in _timed_calls(records)]
    if not ms:
        return {}
    return dict(zip(("p5", "p50", "p95"), np.percentile(ms, [5, 50, 95]).tolist(), strict=True))


def stage_ms(records: Sequence[Any]) -> dict[str, dict[str, float]]:
    """Per stage, the means of its wait for a lease (asked to placed) and of its model call
    (sent to answered), in ms: where on the critical path the two sides part. Means, since
    they add up along a path where p50s do not."""
    parts: dict[str, list[tuple[float, float]]] = {}
    for st in _timed_calls(records):
        parts.setdefault(st.stage, []).append(
            (st.schedule_ms, (st.call_ended_at - st.call_started_at) * 1000.0))
    return {stage: {"lease_wait": float(np.mean([w for w, _ in v])),
                    "call": float(np.mean([c for _, c in v]))}
            for stage, v in sorted(parts.items())}


def _mean(values: list[float | None]) -> float | None:
    return None if any(v is None for v in values) else float(np.mean(values))


def _relative(sim: float | None, live: float | None) -> float | None:
    return None if sim is None or not live else sim / live - 1.0


def render(result: dict[str, Any]) -> str:
    live, sim = result["live"], result["sim"]
    ok = result.get("live_ok") or [live["by_status"]["ok"]]
    lines = [f"{result['workflow']} / {result['policy']}: {result['requests']} requests; "
             f"ok live {'/'.join(map(str, ok))}, simulated {sim['by_status']['ok']}"]
    each = result.get("live_each", {})
    for k in FIGURES:
        d = result["difference"][k]
        runs = each.get(k, [])
        spread = ("" if len(runs) < 2 or None in runs else
                  f" (mean of {len(runs)} runs: {min(runs):.3f} to {max(runs):.3f})")
        lines.append(f"  {k:>14}: live {_f(live[k])}{spread}, simulated {_f(sim[k])}"
                     + ("" if d is None else f" ({d:+.1%})"))
    models = sorted(set(live["model_shares"]) | set(sim["model_shares"]))
    lines.append("  stages per model: " + ", ".join(
        f"{m} live {live['model_shares'].get(m, 0):.0%} / sim {sim['model_shares'].get(m, 0):.0%}"
        for m in models))
    window = result.get("batch_window", {})
    if window.get("live") or window.get("sim"):
        lines.append("  calls within the batcher's wait of another on their model: " + ", ".join(
            f"{st} live {window['live'].get(st, 0):.0%} / sim {window['sim'].get(st, 0):.0%}"
            for st in sorted(set(window["live"]) | set(window["sim"]))))
    to_call = result.get("placement_to_call_ms", {})
    if to_call.get("live"):
        lines.append("  placement to model call, ms p5/p50/p95: " + ", ".join(
            f"{side} " + "/".join(f"{v:.1f}" for v in to_call[side].values())
            for side in ("live", "sim") if to_call.get(side)))
    per_stage = result.get("stage_ms", {})
    if per_stage.get("live") and per_stage.get("sim"):
        lines.append("  per stage, mean ms live / sim: " + "; ".join(
            f"{st} lease wait {v['lease_wait']:.0f} / {per_stage['sim'][st]['lease_wait']:.0f},"
            f" call {v['call']:.0f} / {per_stage['sim'][st]['call']:.0f}"
            for st, v in per_stage["live"].items() if st in per_stage["sim"]))
    if "live_cpu" in result:
        cpu = result["live_cpu"]
        lines.append(f"  host CPU busy during the live run: p50 {cpu['p50']:.0%}, p95 "
                     f"{cpu['p95']:.0%}" + (" (the host, not the pool, may limit the live side)"
                                            if cpu["p50"] >= 0.9 else ""))
    return "\n".join(lines)


def render_seeds(runs: dict[int, dict[str, Any]]) -> str:
    """Over seeds: each figure's simulated/live ratio, paired by seed (geometric mean, 95%
    interval), and how many seeds fall within 10%."""
    first = next(iter(runs.values()))
    lines = [f"{first['workflow']} / {first['policy']}, {len(runs)} seeds, simulated / live:"]
    for k in FIGURES:
        r = report.ratio_ci({s: x["sim"][k] for s, x in runs.items()},
                            {s: x["live"][k] for s, x in runs.items()})
        if r["ratio"] is None:
            continue
        ci = "" if r["ci"] is None else f" [{r['ci'][0]:.3f}, {r['ci'][1]:.3f}]"
        near = sum(abs(v - 1.0) <= 0.10 for v in r["by_seed"].values())
        lines.append(f"  {k:>14}: {r['ratio']:.3f}{ci}, within 10% on {near} of {r['n']} seeds"
                     + _live_spread([x.get("live_each", {}).get(k, []) for x in runs.values()]))
    return "\n".join(lines)


def _live_spread(per_seed: list[list[float | None]]) -> str:
    """The live stack against itself: per seed, its repeated runs' highest over lowest."""
    ratios = [max(v) / min(v) for v in per_seed if len(v) > 1 and None not in v and min(v) > 0]
    return "" if not ratios else ("; live's own runs apart by x" + ", x".join(
        f"{r:.2f}" for r in ratios) + " (highest / lowest, per seed)")


def _f(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m aragog.sim.validate",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--pool", default="", help="a shipped pool or a pool file (default: the "
                    "embedded llama3); the stack's Triton serves it, the simulator plays it")
    ap.add_argument("--capacity-scale", type=float, default=1.0,
                    help="saturation batches x this, as aragog-eval's --capacity-scale")
    ap.add_argument("--time-scale", type=float, default=0.0,
                    help="every latency x this (0: the pool's own), as aragog-eval's")
    ap.add_argument("--workflow", action="append", choices=BENCHMARKED)
    ap.add_argument("--policy", action="append")
    ap.add_argument("--rate", type=float, default=2.0)
    ap.add_argument("--duration", type=float, default=30.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=1,
                    help="serve each seed's arrivals this many times live: the live figures "
                    "are their means, and the spread shows how far the live stack is from "
                    "itself")
    ap.add_argument("--seeds", type=int, default=1,
                    help="arrival seeds --seed, --seed+1, ...: each served both ways; with 2 "
                    "or more, the sim/live ratios' geometric means with 95%% intervals")
    MEASURED.add_arguments(ap)
    a = ap.parse_args(argv)
    if not (a.rate > 0 and a.duration > 0 and a.seeds >= 1 and a.repeats >= 1):
        ap.error("--rate, --duration, --seeds and --repeats must be positive")
    try:  # before the live side runs, not after
        control = ControlPath.from_arguments(a)
    except ValueError as e:
        ap.error(str(e))
    from aragog.stack import Stack, shipped_workflow

    import dataclasses
    import tempfile

    from aragog.loadgen.evaluate import scaled_pool_file

    tmp = tempfile.mkdtemp(prefix="aragog-validate-")
    pool_file = a.pool
    if a.capacity_scale != 1.0:
        pool_file = scaled_pool_file(a.pool or "llama3", a.capacity_scale, tmp)
    pool = load_pool(pool_file or None)
    if a.time_scale:
        pool = dataclasses.replace(pool, time_scale=a.time_scale)
    with Stack(executors=2, time_scale=a.time_scale,
               extra_env={"ARAGOG_POOL_FILE": pool_file} if pool_file else None) as stack:
        for wid in a.workflow or ["self-refine"]:
            stack.register(shipped_workflow(wid))
            for pol in a.policy or ["largest", "cheapest"]:
                warm_up(stack.router_addr, wid, pol, a.rate, WARM_S)
                runs = {}
                for seed in range(a.seed, a.seed + a.seeds):
                    runs[seed] = compare(stack.router_addr, pool, wid, pol,
                                         poisson(a.rate, a.duration, seed).tolist(),
                                         control=control, repeats=a.repeats,
                                         scheduler_addr=stack.scheduler_addr)
                    print(f"seed {seed}: " + render(runs[seed]), flush=True)
                if len(runs) > 1:
                    print(render_seeds(runs), flush=True)


if __name__ == "__main__":
    sys.exit(main())
