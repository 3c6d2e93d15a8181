"""`aragog-eval`: run the policies over the same arrivals against one running stack, and report.

For each pool family: start the stack (Redis, the EMULATED Triton pool, the services) once,
register the benchmarked workflows, then for each workflow and policy, one after another on
the same stack with its state reset in between:

- a rate sweep (open-loop Poisson steps, the same seeds for every policy) over held-out
  benchmark requests, whose answers are checked against the ground truth;
- a fluctuating-load run (square wave, or Markov-modulated bursts), to show the models
  chosen over time.

While a run lasts, host CPU (/proc/stat) and the scheduler's per-model leases are sampled,
so the report can flag runs the 2-core host, rather than the pool, limited. The report
(JSON, CSV, Markdown, PNG) is written by aragog.loadgen.report.

    aragog-eval --out reports/eval            # the full comparison (both pools, 4 workflows)
    aragog-eval --smoke --out /tmp/smoke      # a minute or two: one pool, one workflow
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable

import grpc
import redis
import yaml
from aragog import workflows
from aragog.common.pool import load_pool
from aragog.common.settings import RouterSettings
from aragog.emulation.generate import benchmark
from aragog.loadgen import arrivals, capacity, report
from aragog.loadgen.runner import run_schedule
from aragog.routing import artifacts
from aragog.routing.embedding import Embedder
from aragog.routing.space import PROMPT_TOKENS
from aragog.stack import Stack, prepare_routing, shipped_workflow
from aragog.v1 import scheduler_pb2, scheduler_pb2_grpc

POLICIES = ("aragog", "per-input", "per-workflow", "largest", "cheapest")
SWEPT = ("aragog", "per-input", "per-workflow")
"""Policies measured over the whole rate sweep; the others run its first step (accuracy and
GPU-seconds need no sweep)."""
FLUCTUATED = ("aragog", "per-input")
"""Policies also run under fluctuating load: aragog, and the bound-at-arrival policy that
shows what binding at arrival does under the same swings."""


@dataclasses.dataclass
class Plan:
    families: list[str]
    workflows: list[str]
    policies: list[str]
    rates: list[float]
    step_s: float
    fluctuating: str  # "square", "mmpp" or "" (none)
    fluct_s: float
    time_scale: float
    capacity_scale: float
    timeout_s: float
    seed: int = 7
    sweep_of_bound: tuple[float, ...] = ()
    """If set, each workflow's sweep is these fractions of a top rate of `top_over_bound` x
    the highest capacity bound of the swept policies (at most `max_rate`), so every policy's
    curve passes its saturation; `rates` then only serve a workflow without a bound."""
    top_over_bound: float = 1.2
    max_rate: float = 12.0  # requests/s the 2-core host sends and serves without saturating


def sweep_rates(plan: Plan, bound: dict[str, float] | None) -> list[float]:
    """The offered rates of one workflow's sweep (ascending)."""
    known = [bound[p] for p in SWEPT if bound and p in bound]
    if not plan.sweep_of_bound or not known:
        return list(plan.rates)
    top = min(plan.top_over_bound * float(max(known)), plan.max_rate)
    return [round(f * top, 1) for f in plan.sweep_of_bound]


FULL = Plan(
    ["llama3", "qwen2.5"],
    list(workflows.BENCHMARKED),
    list(POLICIES),
    [1.5, 3.0, 6.0],
    5.0,
    "square",
    10.0,
    0.15,
    0.0625,
    20.0,
    sweep_of_bound=(0.25, 0.5, 1.0),
)
"""Sized so that every workflow's top step overloads every swept policy (the pools' capacity
bounds at this scale are 1-13 requests/s) while the 2-core host keeps up, and the whole
evaluation fits in 25 minutes."""
SMOKE = Plan(
    ["llama3"],
    ["text-to-sql"],
    ["aragog", "per-input", "largest"],
    [2.0, 6.0],
    5.0,
    "square",
    8.0,
    0.1,
    0.25,
    60.0,
)


class Sampler(threading.Thread):
    """Host CPU busy fraction and the scheduler's leases per model, every `period` seconds."""

    def __init__(self, scheduler_addr: str, period: float = 0.5):
        super().__init__(daemon=True)
        self.period = period
        self.cpu: list[tuple[float, float]] = []
        self.occupancy: list[tuple[float, dict[str, int]]] = []
        self._halt = threading.Event()
        self._channel = grpc.insecure_channel(scheduler_addr)
        self._stub = scheduler_pb2_grpc.SchedulerServiceStub(self._channel)
        self.t0 = time.time()

    @staticmethod
    def _cpu_times() -> tuple[int, int]:
        with open("/proc/stat", encoding="ascii") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        idle = fields[3] + fields[4]  # idle + iowait
        return sum(fields) - idle, sum(fields)

    def run(self) -> None:
        busy0, total0 = self._cpu_times()
        while not self._halt.wait(self.period):
            busy, total = self._cpu_times()
            t = time.time() - self.t0
            self.cpu.append((t, (busy - busy0) / max(1, total - total0)))
            busy0, total0 = busy, total
            try:
                state = self._stub.GetSchedulerState(
                    scheduler_pb2.GetSchedulerStateRequest(), timeout=2
                )
                self.occupancy.append((t, dict(state.leased)))
            except grpc.RpcError:
                pass

    def stop(self) -> None:
        self._halt.set()
        self.join(5)
        self._channel.close()


def scaled_pool_file(family: str, capacity_scale: float, directory: str) -> str:
    """The family's pool with saturation batches scaled (at least 1), so the emulated pool
    saturates at request rates this 2-core host can generate and serve."""
    pool = load_pool(family)
    data = {
        "family": pool.family,
        "time_scale": pool.time_scale,
        "models": [
            {
                **dataclasses.asdict(m),
                "saturation_batch": max(1, round(m.saturation_batch * capacity_scale)),
            }
            for m in pool.models
        ],
    }
    path = os.path.join(directory, f"{family}-x{capacity_scale:g}.yaml")
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(data, f, sort_keys=False)
    return path


def gpu_seconds_fn(family: str) -> Callable:
    """Per-request GPU-seconds: each stage priced as the router prices it (the model's
    GPU-seconds per request at its saturation batch), so the report and F(r) agree."""
    pool = load_pool(family)
    tokens = {
        (wid, s.name): s.output_tokens
        for wid in workflows.BENCHMARKED
        for s in workflows.load(wid, pool.names).llm_stages
    }

    def price(records) -> None:
        for rec in records:
            total = 0.0
            for st in rec.stages:
                if st.model in pool.names:
                    out = tokens.get((rec.workflow, st.stage), 128)
                    st.gpu_seconds = pool.model(st.model).gpu_seconds(PROMPT_TOKENS, out)
                    total += st.gpu_seconds
            rec.gpu_seconds = total

    return price


def reset(stack: Stack, timeout_s: float = 120.0) -> None:
    """Wait until nothing is queued or leased, then delete every request's state."""
    deadline = time.monotonic() + timeout_s
    with grpc.insecure_channel(stack.scheduler_addr) as ch:
        stub = scheduler_pb2_grpc.SchedulerServiceStub(ch)
        while time.monotonic() < deadline:
            s = stub.GetSchedulerState(scheduler_pb2.GetSchedulerStateRequest(), timeout=5)
            if s.queued_stages == 0 and not any(s.leased.values()):
                break
            time.sleep(0.5)
    client = redis.Redis.from_url(stack.redis_url)
    batch = list(client.scan_iter(match=f"{stack.namespace}:req:*", count=1000))
    for i in range(0, len(batch), 500):
        client.delete(*batch[i : i + 500])
    client.close()


def one_run(
    stack: Stack,
    family: str,
    wid: str,
    policy: str,
    pattern: str,
    rate: float,
    schedule,
    duration: float,
    plan: Plan,
    price: Callable,
    tag: str,
) -> report.Run:
    items = benchmark(wid).split("test")
    workload = [(wid, it.input, it.answer) for it in items]
    reset(stack)
    sampler = Sampler(stack.scheduler_addr)
    sampler.start()
    start = time.time()
    try:
        records = run_schedule(
            stack.router_addr,
            schedule,
            workload,
            policy=policy,
            timeout_s=plan.timeout_s,
            max_in_flight=512,
            run_id=tag,
        )
    finally:
        sampler.stop()
    price(records)
    shift = start - sampler.t0
    return report.Run(
        pool_family=family,
        workflow=wid,
        policy=policy,
        pattern=pattern,
        rate=rate,
        duration_s=duration,
        records=records,
        cpu=[(t - shift, v) for t, v in sampler.cpu],
        occupancy=[(t - shift, o) for t, o in sampler.occupancy],
        start_wall=start,
    )


def idle_latency(stack: Stack, wid: str, n: int = 3) -> float:
    """The largest configuration's latency with nothing else running (the SLO's unit)."""
    items = benchmark(wid).split("test")[:n]
    lat = [stack.submit(wid, it.input, policy="largest")[1] for it in items]
    return statistics.median(lat)


def evaluate(plan: Plan, out_dir: str, say: Callable[[str], None] = print) -> dict:
    runs: list[report.Run] = []
    idle: dict[tuple[str, str], float] = {}
    bound: dict[tuple[str, str], dict[str, float]] = {}
    largest_correct: dict[tuple[str, str], dict[int, bool]] = {}
    sweeps: dict[tuple[str, str], list[float]] = {}
    router_settings = RouterSettings.from_env()  # where the stack's router finds its artifacts
    root = router_settings.artifacts_dir or artifacts.default_dir()
    embedder = Embedder.from_settings(router_settings)
    t_start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="aragog-eval-") as tmp:
        for fi, family in enumerate(plan.families):
            say(f"[{family}] routing artifacts")
            prepare_routing(family, lambda m: say("  " + m), plan.workflows)
            pool_file = scaled_pool_file(family, plan.capacity_scale, tmp)
            served = dataclasses.replace(load_pool(pool_file), time_scale=plan.time_scale)
            for wid in plan.workflows:
                fam_pool = load_pool(family)
                art, _ = artifacts.load(root, fam_pool, workflows.load(wid, fam_pool.names))
                if art is not None:
                    rows = art.rows
                    largest_correct[(family, wid)] = {
                        k: bool(art.profile.largest_correct[rows[artifacts.input_digest(it.input)]])
                        for k, it in enumerate(benchmark(wid).split("test"))}
                    bound[(family, wid)] = b = capacity.bounds(art, embedder, served)
                    say(f"[{family}/{wid}] capacity bound, req/s: "
                        + ", ".join(f"{k} {v:.1f}" for k, v in b.items()))
            stack = Stack(
                executors=2,
                time_scale=plan.time_scale,
                extra_env={"ARAGOG_POOL_FILE": pool_file, "ARAGOG_LOG_LEVEL": "warning"},
            )
            say(f"[{family}] starting the stack (logs in {stack.log_dir})")
            with stack:
                for wi, wid in enumerate(plan.workflows):
                    tag = f"{fi}{wi}"  # request ids never repeat within an evaluation
                    stack.register(shipped_workflow(wid))
                    idle[(family, wid)] = idle_latency(stack, wid)
                    say(
                        f"[{family}/{wid}] idle latency of the largest configuration "
                        f"{idle[(family, wid)]:.2f}s"
                    )
                    price = gpu_seconds_fn(family)
                    swept = sweeps[(family, wid)] = sweep_rates(plan, bound.get((family, wid)))
                    for policy in plan.policies:
                        rates = swept if policy in SWEPT else swept[:1]
                        for i, rate in enumerate(rates):
                            sched = arrivals.poisson(rate, plan.step_s, seed=plan.seed + i)
                            run = one_run(
                                stack,
                                family,
                                wid,
                                policy,
                                "sweep",
                                rate,
                                sched,
                                plan.step_s,
                                plan,
                                price,
                                f"{tag}s{i}{policy[:5]}",
                            )
                            runs.append(run)
                            s = report.summarize(run, report.Settings(idle_latency_s=idle))
                            say(
                                f"[{family}/{wid}] {policy:<12} rate {rate:5.1f}/s: "
                                f"{s['throughput']:.2f}/s, p50 {s['latency_p50_s'] or 0:.2f}s, "
                                f"acc {s['accuracy'] or 0:.3f}, cpu p95 {s['cpu_p95'] or 0:.2f}, "
                                f"{s['by_status']}"
                            )
                        if plan.fluctuating and policy in FLUCTUATED:
                            low, high = swept[0], swept[-1]
                            if plan.fluctuating == "square":
                                sched = arrivals.square_wave(
                                    low, high, plan.fluct_s / 2, plan.fluct_s, plan.seed
                                )
                            else:
                                sched = arrivals.mmpp(
                                    [low, high], plan.fluct_s / 6, plan.fluct_s, plan.seed
                                )
                            runs.append(
                                one_run(
                                    stack,
                                    family,
                                    wid,
                                    policy,
                                    plan.fluctuating,
                                    (low + high) / 2,
                                    sched,
                                    plan.fluct_s,
                                    plan,
                                    price,
                                    f"{tag}f{policy[:5]}",
                                )
                            )
    elapsed = time.monotonic() - t_start
    notes = [
        f"Plan: {json.dumps(dataclasses.asdict(plan))}.",
        "Swept rates (requests/s): " + "; ".join(
            f"{f}/{w} {', '.join(f'{r:g}' for r in rs)}" for (f, w), rs in sweeps.items()) + ".",
        f"Wall time of the whole evaluation: {elapsed / 60:.1f} min on this host "
        f"({os.cpu_count()} cores).",
        f"Emulated pool: each family's shipped profiles with saturation batches scaled by "
        f"{plan.capacity_scale:g} and latencies by time scale {plan.time_scale:g}, so that "
        "the pool, not the host, saturates.",
    ]
    settings = report.Settings(idle_latency_s=idle, capacity_bound=bound,
                               largest_correct=largest_correct)
    return report.write_report(
        runs, settings, out_dir, title="Aragog policy comparison", notes=notes
    )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="aragog-eval", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="report directory")
    ap.add_argument("--smoke", action="store_true", help="a minute or two: one pool, one workflow")
    ap.add_argument("--families", help="comma-separated pool families")
    ap.add_argument("--workflows", help="comma-separated workflows")
    ap.add_argument("--policies", help="comma-separated policies")
    ap.add_argument("--rates", help="comma-separated offered rates of every workflow's sweep, "
                    "requests/s (default: fractions of each workflow's capacity bound)")
    ap.add_argument("--step-s", type=float, help="seconds of arrivals per sweep step")
    ap.add_argument("--time-scale", type=float, help="emulated latency multiplier")
    ap.add_argument("--capacity-scale", type=float, help="saturation batch multiplier")
    args = ap.parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the stack this command started is stopped too
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    plan = dataclasses.replace(SMOKE if args.smoke else FULL)
    for name in ("families", "workflows", "policies"):
        if getattr(args, name):
            setattr(plan, name, getattr(args, name).split(","))
    if args.rates:
        plan.rates = [float(r) for r in args.rates.split(",")]
        plan.sweep_of_bound = ()
    for name in ("step_s", "time_scale", "capacity_scale"):
        if getattr(args, name) is not None:
            setattr(plan, name, getattr(args, name))
    results = evaluate(plan, args.out, lambda m: print(m, file=sys.stderr, flush=True))
    print(os.path.join(args.out, "summary.md"))
    sys.exit(0 if results else 1)


if __name__ == "__main__":
    main()
