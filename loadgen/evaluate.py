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

With `--mixed`, every benchmarked workflow is registered on one stack and their requests
share one arrival schedule: windows of a real production trace (Azure LLM inference, 2023;
aragog.loadgen.azure_trace), each trace request mapped to a workflow by its token counts,
time-compressed so the mean rate is a chosen share of the pool's capacity bound (the
highest bound of the compared policies that keep the largest's accuracy, i.e. all but
`cheapest`). The sweep is repeated for several seeds: a seed draws the trace window's start
and which held-out requests of each workflow are sent; every policy gets the same arrivals
and requests of a seed, and the report gives each ratio a 95% interval over the seeds.

    aragog-eval --out reports/eval            # the full comparison (both pools, 4 workflows)
    aragog-eval --smoke --out /tmp/smoke      # a minute or two: one pool, one workflow
    aragog-eval --mixed --out reports/mixed   # mixed workload, real arrivals, seeds (~30 min)
    aragog-eval --published --out reports/published  # the published routers beside aragog
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Sequence

import grpc
import numpy as np
import redis
import yaml
from aragog import policies, workflows
from aragog.common.pool import load_pool
from aragog.common.settings import RouterSettings
from aragog.common.workflow import WorkflowDef
from aragog.emulation.generate import benchmark
from aragog.loadgen import arrivals, azure_trace, capacity, report
from aragog.loadgen.runner import run_schedule
from aragog.routing import artifacts
from aragog.routing.embedding import Embedder
from aragog.routing.space import PROMPT_TOKENS
from aragog.routing.space import build as build_space
from aragog.stack import Stack, prepare_routing, shipped_workflow
from aragog.v1 import scheduler_pb2, scheduler_pb2_grpc

POLICIES = ("aragog", "per-input", "per-workflow", "largest", "cheapest")
MIXED_POLICIES = ("aragog", report.AR_PROFILED, "per-input", "per-input:router",
                  "per-input:load", "per-workflow", "largest", "cheapest")
UNGUARDED = ("cheapest", "any")
"""Policies that do not keep the largest configuration's accuracy: their capacity bound does
not set the mixed sweep's reference capacity."""
SWEPT = ("aragog", "per-input", "per-workflow")
"""Policies measured over the whole rate sweep; the others run its first step (accuracy and
GPU-seconds need no sweep)."""
PUBLISHED = ("routellm", "agentrouter", "flowcompile")
"""The published routers (aragog.policies): they fix each request's configuration without
the load, so their capacity bound is computed as for the policies bound at arrival."""
PUBLISHED_POLICIES = ("aragog", "per-input:router", "routellm:mf@0.5", "routellm:mf@0.5:stage",
                      "routellm:clf@0.5", "agentrouter", "flowcompile:0.5", "largest")
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
    mixed: bool = False
    """All workflows on one stack, interleaved on windows of the Azure trace (--mixed)."""
    seeds: int = 1
    """Mixed: sweeps repeated with seeds seed, seed+1, ...: each draws a trace window and the
    requests sent."""
    shares: tuple[float, ...] = ()
    """Mixed: the sweep's mean offered rates, as shares of the reference capacity bound."""
    stop_over_bound: float = 0.0
    """Mixed: if > 0, a policy's sweep ends with its first step that offers at least this x
    its own capacity bound: past it, a step only grows a backlog that the pool has to drain
    before the next run (the evaluation's time goes into steps that can measure something)."""
    start_under_bound: float = 0.0
    """Mixed: if > 0, a policy's sweep starts at its first step offering at least this x its
    capacity bound (its top step if none does): lower steps of a policy whose capacity is far
    above them measure only the offered rate."""
    swept: tuple[str, ...] = SWEPT
    """Policies run over the whole rate sweep; the others run its first step only."""


def sweep_rates(plan: Plan, bound: dict[str, float] | None) -> list[float]:
    """The offered rates of one workflow's sweep (ascending)."""
    known = [bound[p] for p in plan.swept if bound and p in bound]
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
PUBLISHED_PLAN = dataclasses.replace(
    FULL, families=["llama3"], policies=list(PUBLISHED_POLICIES), fluctuating="",
    sweep_of_bound=(0.5, 1.0), swept=PUBLISHED_POLICIES)
"""The published routers beside aragog (`--published`): one pool, every workflow, each
policy over two steps (half and 1.2x the highest capacity bound of them all), ~15 min."""
SMOKE = Plan(
    ["llama3"],
    ["text-to-sql"],
    ["aragog", "per-input", "largest"],
    [2.0, 6.0],
    5.0,
    "square",
    8.0,
    0.1,
    1.0,
    60.0,
)
"""The pool's own saturation batches: its routers serve as built (a scaled pool needs routers
of its own, `served_routing`, minutes of training); the smoke checks the machinery, not
saturation."""
MIXED = Plan(
    ["llama3"],
    list(workflows.BENCHMARKED),
    list(MIXED_POLICIES),
    [],
    20.0,
    "",
    0.0,
    0.15,
    0.0625,
    20.0,
    mixed=True,
    seeds=3,
    shares=(0.3, 0.45, 0.6, 1.0, 1.3),
    stop_over_bound=1.15,
    start_under_bound=0.6,
)
"""The issue's measurement on one pool in about 30 minutes of this host (see
benchmarks/README.md, "Mixed workload, real arrivals"): the FULL plan's units (saturation
batches x0.0625, time scale 0.15), 20 s steps at 0.3-1.3x the reference capacity, 3 seeds,
each policy from 0.6x its capacity bound to just past it (on llama3: 57 runs)."""
MIXED_SMOKE = Plan(
    ["llama3"],
    ["voting", "self-refine"],
    ["aragog", "per-input:router"],
    [],
    6.0,
    "",
    0.0,
    0.1,
    1.0,
    30.0,
    max_rate=4.0,
    mixed=True,
    seeds=2,
    shares=(0.5,),
)
"""A minute or two: two workflows, two policies, two seeds of one step at 4 requests/s (the
pool unscaled, as SMOKE)."""


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


def gpu_seconds_fn(family: str, more: Sequence[WorkflowDef] = ()) -> Callable:
    """Per-request GPU-seconds: each stage priced as the router prices it (the model's
    GPU-seconds per request at its saturation batch), so the report and F(r) agree. Stages
    of the benchmarked workflows and of `more` are priced at their own output lengths."""
    pool = load_pool(family)
    defs = [workflows.load(wid, pool.names) for wid in workflows.BENCHMARKED] + list(more)
    tokens = {(wf.id, s.name): s.output_tokens for wf in defs for s in wf.llm_stages}

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


def served_routing(family: str, pool_file: str, wids: list[str], root: str,
                   say: Callable[[str], None] = print) -> str:
    """The artifacts root whose routers fit the pool the evaluation serves; builds what is
    missing or stale there.

    A router is trained on its pool's GPU-second costs (they order the configurations and
    set the risk weight's saving), and its manifest holds a digest of them: the router
    refuses artifacts built for another pool (FAILED_PRECONDITION). Scaling the saturation
    batches changes those costs, so the scaled pool gets routers of its own, in
    `<root>/served/<digest of the pool's models>/`. They are trained on the family's profile
    (`prepare_routing` made it): which configurations answer a request as the largest does
    comes from the EMULATED answers, which depend on the models, not on their latency
    profiles. For the family's own pool this is `root` itself."""
    from aragog.training import build as builder
    from aragog.training import dataset, graders

    served, fam = load_pool(pool_file), load_pool(family)
    wfs = {w: workflows.load(w, served.names) for w in wids}
    if all(artifacts.pool_digest(served, wf) == artifacts.pool_digest(fam, wf)
           for wf in wfs.values()):
        return root
    key = hashlib.sha256(json.dumps([dataclasses.asdict(m) for m in served.models],
                                    sort_keys=True).encode()).hexdigest()[:12]
    out = os.path.join(root, "served", f"{family}-{key}")
    os.makedirs(out, exist_ok=True)
    if not os.path.exists(os.path.join(out, "embeddings")) and os.path.isdir(
            os.path.join(root, "embeddings")):
        os.symlink(os.path.join(root, "embeddings"), os.path.join(out, "embeddings"))
    embedder = None
    for wid, wf in wfs.items():
        base, why = artifacts.load(root, fam, workflows.load(wid, fam.names))
        if base is None:  # nothing to train from: the policies that need artifacts refuse
            say(f"{family}/{wid}: no router for the served pool: {why}")
            continue
        mine, _ = artifacts.load(out, served, wf)
        want = {k: v for k, v in base.summary["manifest"].items() if k != "pool"}
        if mine is not None and {k: v for k, v in mine.summary["manifest"].items()
                                 if k != "pool"} == want:
            continue
        say(f"{family}/{wid}: training a router for the served pool (saturation batches "
            f"scaled) in {out}")
        embedder = embedder or Embedder.from_settings(RouterSettings.from_env())
        builder.build(out, build_space(wf, served), dataset.from_benchmark(wid), base.profile,
                      graders.make(builder.BENCHMARK_GRADER), embedder,
                      builder.benchmark_source(wid, family), say)
    return out


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
    workload: list | None = None,
    **run_fields,
) -> report.Run:
    """One policy on one arrival schedule; `workload` (one item per arrival, in order)
    defaults to the workflow's held-out items from the first. `run_fields` go to report.Run."""
    if workload is None:
        workload = [(wid, it.input, it.answer) for it in benchmark(wid).split("test")]
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
            # a policy that learns while serving hears each graded answer's outcome
            report_outcomes=learns_online(policy),
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
        **run_fields,
    )


def learns_online(policy: str) -> bool:
    """Whether `policy` learns from the outcomes of the requests it serves (ReportOutcome)."""
    try:
        return policies.make(policy).wants_outcomes
    except policies.PolicyError:  # one only the evaluation's router knows (aragog-profiled)
        return False


def idle_latency(stack: Stack, wid: str, n: int = 3) -> float:
    """The largest configuration's latency with nothing else running (the SLO's unit)."""
    items = benchmark(wid).split("test")[:n]
    lat = [stack.submit(wid, it.input, policy="largest")[1] for it in items]
    return statistics.median(lat)


class EvalStack(Stack):
    """The stack with the evaluation's router: the router's own entry point, run from
    aragog.loadgen.eval_policies, which registers `aragog-profiled` first (the services load
    no outside policy modules, and a deployed router must not have this oracle)."""

    def _python_service(self, name, module, env):
        if name == "router":
            module = "aragog.loadgen.eval_policies"
        return super()._python_service(name, module, env)


def mixed_rates(plan: Plan, bound: dict[str, float]) -> tuple[float, list[float]]:
    """The reference capacity (the highest bound among the plan's policies that keep the
    largest's accuracy) and the sweep's mean offered rates (its shares, at most max_rate)."""
    known = [float(bound[p]) for p in plan.policies if p in bound and p not in UNGUARDED]
    if not known:
        raise ValueError("no capacity bound for the plan's policies: the mixed sweep needs one")
    ref = max(known)
    return ref, [round(min(f * ref, plan.max_rate), 2) for f in plan.shares]


def item_draws(wids: list[str], seed: int) -> dict[str, np.ndarray]:
    """Per workflow, the order in which a seed sends its held-out items (a permutation drawn
    from the seed and the workflow's name, so adding a workflow moves no other's draws)."""
    return {w: np.random.default_rng([seed, zlib.crc32(w.encode())]).permutation(
        len(benchmark(w).split("test"))) for w in wids}


def mixed_workload(win: azure_trace.Window, draws: dict[str, np.ndarray]
                   ) -> tuple[list[tuple[str, str, str]], list[tuple[str, int]]]:
    """One (workflow, input, expected) per arrival of the window, in arrival order: the j-th
    arrival of a workflow gets its j-th drawn held-out item; and each arrival's (workflow,
    item) for the report."""
    used: dict[str, int] = {}
    held_out = {w: benchmark(w).split("test") for w in set(win.workflows)}
    workload, items = [], []
    for w in win.workflows:
        j = used.get(w, 0)
        used[w] = j + 1
        k = int(draws[w][j % len(draws[w])])
        it = held_out[w][k]
        workload.append((w, it.input, it.answer))
        items.append((w, k))
    return workload, items


def runs_policy(plan: Plan, policy: str, rate: float, bound: dict[str, float]) -> bool:
    """Whether `policy` runs the step at `rate`: its steps from the first offering at least
    start_under_bound x its capacity bound (or its top step, if none does) up to and including
    the first offering at least stop_over_bound x that bound."""
    b = bound.get(policy)
    if not b:
        return True
    rates = mixed_rates(plan, bound)[1]
    if plan.stop_over_bound and any(r >= plan.stop_over_bound * b for r in rates if r < rate):
        return False
    if plan.start_under_bound:
        first = next((r for r in rates if r >= plan.start_under_bound * b), rates[-1])
        return rate >= first
    return True


MIXED_SETTINGS = dict(
    throughput_targets={"per-input:router": 1.43, "per-input:load": 1.43, "per-workflow": 1.78},
    goodput_targets={"per-input": 1.3},
    accuracy_gap_points=1.0,
    p50_reduction_target=None,
    bound_share_target=0.85,
)
"""The targets of the mixed evaluation (issue 21)."""


def evaluate_mixed(plan: Plan, out_dir: str, say: Callable[[str], None] = print) -> dict:
    """The mixed workload on each pool family: one stack, every workflow registered, windows
    of the Azure trace as arrivals, `plan.seeds` seeds (module docstring)."""
    runs: list[report.Run] = []
    idle: dict[tuple[str, str], float] = {}
    bound: dict[tuple[str, str], dict[str, float]] = {}
    largest_correct: dict[tuple[str, str], dict[int, bool]] = {}
    router_settings = RouterSettings.from_env()
    root = router_settings.artifacts_dir or artifacts.default_dir()
    embedder = Embedder.from_settings(router_settings)
    trace = azure_trace.load()
    shares = azure_trace.mix(trace, plan.workflows)
    seeds = [plan.seed + i for i in range(plan.seeds)]
    notes = [f"Plan: {json.dumps(dataclasses.asdict(plan))}.",
             f"Host load average (1, 5, 15 min) at the start: "
             f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}.",
             "Arrivals: windows of the Azure LLM inference trace (coding, 2023; Patel et al., "
             "Splitwise, ISCA 2024; CC-BY 4.0), each request's workflow by its token counts "
             "(aragog.loadgen.azure_trace); the trace's mix over these workflows: "
             + ", ".join(f"{w} {x:.1%}" for w, x in shares.items()) + "."]
    t_start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="aragog-eval-") as tmp:
        for fi, family in enumerate(plan.families):
            say(f"[{family}] routing artifacts")
            prepare_routing(family, lambda m: say("  " + m), plan.workflows)
            pool_file = scaled_pool_file(family, plan.capacity_scale, tmp)
            served_root = served_routing(family, pool_file, plan.workflows, root,
                                         lambda m: say("  " + m))
            served = dataclasses.replace(load_pool(pool_file), time_scale=plan.time_scale)
            arts = {}
            for wid in plan.workflows:
                art, why = artifacts.load(served_root, served, workflows.load(wid, served.names))
                if art is None:
                    raise RuntimeError(f"{family}/{wid}: {why}")
                arts[wid] = art
                rows = art.rows
                largest_correct[(family, wid)] = {
                    k: bool(art.profile.largest_correct[rows[artifacts.input_digest(it.input)]])
                    for k, it in enumerate(benchmark(wid).split("test"))}
            b = bound[(family, report.MIXED)] = capacity.mixed_bounds(
                [(shares[w], arts[w]) for w in plan.workflows if w in shares], embedder, served,
                [p for p in plan.policies if p.partition(":")[0] in PUBLISHED])
            ref, rates = mixed_rates(plan, b)
            say(f"[{family}/mixed] capacity bound, req/s: "
                + ", ".join(f"{k} {v:.2f}" for k, v in b.items()))
            say(f"[{family}/mixed] reference capacity {ref:.2f}/s; offered rates "
                + ", ".join(f"{r:g}" for r in rates))
            notes.append(f"{family}: reference capacity {ref:.2f} requests/s; steps "
                         + ", ".join(f"{r:g}" for r in rates) + f" requests/s of {plan.step_s:g}"
                         " s each (" + ", ".join(f"{x:g}" for x in plan.shares) + " x the "
                         "reference).")
            n_max = azure_trace.arrivals_needed(max(rates), plan.step_s)
            stack = EvalStack(
                executors=2,
                time_scale=plan.time_scale,
                extra_env={"ARAGOG_POOL_FILE": pool_file, "ARAGOG_LOG_LEVEL": "warning",
                           "ARAGOG_ARTIFACTS_DIR": served_root},
            )
            say(f"[{family}] starting the stack (logs in {stack.log_dir})")
            with stack:
                for wid in plan.workflows:
                    stack.register(shipped_workflow(wid))
                    idle[(family, wid)] = idle_latency(stack, wid)
                    say(f"[{family}/{wid}] idle latency of the largest configuration "
                        f"{idle[(family, wid)]:.2f}s")
                price = gpu_seconds_fn(family)
                progress = Progress(len(seeds) * sum(
                    runs_policy(plan, p, r, b) for r in rates for p in plan.policies))
                for seed in seeds:
                    start = azure_trace.window_start(trace, n_max, seed, plan.workflows)
                    draws = item_draws(plan.workflows, seed)
                    for i, rate in enumerate(rates):
                        n = azure_trace.arrivals_needed(rate, plan.step_s)
                        win = azure_trace.window(trace, start, n, rate, plan.workflows)
                        workload, items = mixed_workload(win, draws)
                        how = (f"azure-trace window from request {start}, compressed "
                               f"{win.compression:.2f}x")
                        cv = arrivals.interarrival_cv(win.offsets)
                        notes.append(f"{family} seed {seed} step {rate:g}/s: {n} arrivals, "
                                     f"{how} (interarrival CV {cv:.1f})")
                        for j, policy in enumerate(plan.policies):
                            if not runs_policy(plan, policy, rate, b):
                                continue
                            run = one_run(  # request ids never repeat within an evaluation
                                stack, family, report.MIXED, policy, "sweep", rate, win.offsets,
                                plan.step_s, plan, price, f"{fi}m{seed}s{i}p{j}",
                                workload, seed=seed, items=items, arrivals=how,
                                timeline=(seed == seeds[0] and i == len(rates) // 2
                                          and policy in ("aragog", "per-input:load")),
                            )
                            runs.append(run)
                            s = report.summarize(run, report.Settings(idle_latency_s=idle))
                            say(f"[{family}/mixed seed {seed}] {policy:<16} rate {rate:5.2f}/s: "
                                f"{s['throughput']:.2f}/s, goodput {s['goodput'] or 0:.2f}/s, "
                                f"p50 {s['latency_p50_s'] or 0:.2f}s, "
                                f"acc {s['accuracy'] or 0:.3f}, cpu p95 {s['cpu_p95'] or 0:.2f}, "
                                f"{s['by_status']} [{progress.tick()}]")
    elapsed = time.monotonic() - t_start
    notes += [
        f"Wall time of the whole evaluation: {elapsed / 60:.1f} min on this host "
        f"({os.cpu_count()} cores); load average at the end "
        f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}.",
        f"Emulated pool: each family's shipped profiles with saturation batches scaled by "
        f"{plan.capacity_scale:g} and latencies by time scale {plan.time_scale:g}.",
        f"A policy's sweep starts at its first step offering >= {plan.start_under_bound:g}x "
        f"its capacity bound and ends with its first offering >= {plan.stop_over_bound:g}x it "
        "(the steps each ran are in the curves)." if plan.stop_over_bound
        else "Every policy runs every step.",
    ]
    settings = report.Settings(idle_latency_s=idle, capacity_bound=bound,
                               largest_correct=largest_correct, **MIXED_SETTINGS)
    return report.write_report(
        runs, settings, out_dir, title="Aragog: mixed workload, real arrivals", notes=notes)


class Progress:
    """A family's evaluation steps done of those planned, and the time left at the pace so
    far (each step is an arrival window and its drain, so the pace is steady)."""

    def __init__(self, total: int):
        self.total, self.done, self.t0 = total, 0, time.monotonic()

    def tick(self) -> str:
        self.done += 1
        left = (time.monotonic() - self.t0) / self.done * (self.total - self.done)
        return f"step {self.done}/{self.total}, ~{math.ceil(left / 60)} min left"


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
            served_root = served_routing(family, pool_file, plan.workflows, root,
                                         lambda m: say("  " + m))
            served = dataclasses.replace(load_pool(pool_file), time_scale=plan.time_scale)
            for wid in plan.workflows:
                art, _ = artifacts.load(served_root, served, workflows.load(wid, served.names))
                if art is not None:
                    rows = art.rows
                    largest_correct[(family, wid)] = {
                        k: bool(art.profile.largest_correct[rows[artifacts.input_digest(it.input)]])
                        for k, it in enumerate(benchmark(wid).split("test"))}
                    decided = [p for p in plan.policies if p.partition(":")[0] in PUBLISHED]
                    bound[(family, wid)] = b = capacity.bounds(art, embedder, served, decided)
                    say(f"[{family}/{wid}] capacity bound, req/s: "
                        + ", ".join(f"{k} {v:.1f}" for k, v in b.items()))
            stack = Stack(
                executors=2,
                time_scale=plan.time_scale,
                extra_env={"ARAGOG_POOL_FILE": pool_file, "ARAGOG_LOG_LEVEL": "warning",
                           "ARAGOG_ARTIFACTS_DIR": served_root},
            )
            say(f"[{family}] starting the stack (logs in {stack.log_dir})")
            progress = Progress(sum(
                len(sweep_rates(plan, bound.get((family, w)))) if p in plan.swept else 1
                for w in plan.workflows for p in plan.policies) + sum(
                plan.fluctuating != "" and p in FLUCTUATED
                for _ in plan.workflows for p in plan.policies))
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
                        rates = swept if policy in plan.swept else swept[:1]
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
                                f"{s['by_status']} [{progress.tick()}]"
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
                            say(f"[{family}/{wid}] {policy:<12} {plan.fluctuating} arrivals "
                                f"[{progress.tick()}]")
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
    ap.add_argument("--smoke", action="store_true", help="a minute or two: one pool, one workflow "
                    "(with --mixed: two workflows, two policies, two seeds)")
    ap.add_argument("--published", action="store_true", help="the published routers "
                    "(routellm, agentrouter, flowcompile) beside aragog, one pool")
    ap.add_argument("--stageroute", action="store_true", help="StageRoute while a better "
                    "model arrives: regret, reward and cost per window (~5 min)")
    ap.add_argument("--moma", action="store_true", help="requests that name no workflow, "
                    "routed by the front door: intent accuracy, accuracy and cost against "
                    "the largest model (~4 min; with --smoke, under a minute)")
    ap.add_argument("--mixed", action="store_true", help="every workflow on one stack, "
                    "interleaved on windows of the Azure trace, repeated over seeds")
    ap.add_argument("--seeds", type=int, help="mixed: how many seeds")
    ap.add_argument("--shares", help="mixed: comma-separated offered rates as shares of the "
                    "reference capacity bound")
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
    if args.stageroute:
        from aragog.loadgen import stageroute_eval

        st = stageroute_eval.Settings()
        if args.workflows:
            st.workflow = args.workflows.split(",")[0]
        if args.rates:
            st.rate = float(args.rates.split(",")[0])
        if args.step_s is not None:
            st.duration_s = args.step_s
        if args.time_scale is not None:
            st.time_scale = args.time_scale
        stageroute_eval.evaluate_stageroute(st, args.out,
                                            lambda m: print(m, file=sys.stderr, flush=True))
        print(os.path.join(args.out, "summary.md"))
        return
    if args.moma:
        from aragog.loadgen import moma_eval

        mo = moma_eval.Settings(per_workflow=4, mmlu=8) if args.smoke else moma_eval.Settings()
        if args.families:
            mo.family = args.families.split(",")[0]
        if args.time_scale is not None:
            mo.time_scale = args.time_scale
        moma_eval.evaluate_moma(mo, args.out, lambda m: print(m, file=sys.stderr, flush=True))
        print(os.path.join(args.out, "summary.md"))
        return
    if args.mixed:
        plan = dataclasses.replace(MIXED_SMOKE if args.smoke else MIXED)
    elif args.published:
        plan = dataclasses.replace(PUBLISHED_PLAN)
    else:
        plan = dataclasses.replace(SMOKE if args.smoke else FULL)
    for name in ("families", "workflows", "policies"):
        if getattr(args, name):
            setattr(plan, name, getattr(args, name).split(","))
    if args.rates:
        plan.rates = [float(r) for r in args.rates.split(",")]
        plan.sweep_of_bound = ()
    for name in ("step_s", "time_scale", "capacity_scale", "seeds"):
        if getattr(args, name) is not None:
            setattr(plan, name, getattr(args, name))
    if args.shares:
        plan.shares = tuple(float(x) for x in args.shares.split(","))
    run = evaluate_mixed if plan.mixed else evaluate
    results = run(plan, args.out, lambda m: print(m, file=sys.stderr, flush=True))
    print(os.path.join(args.out, "summary.md"))
    sys.exit(0 if results else 1)


if __name__ == "__main__":
    main()
