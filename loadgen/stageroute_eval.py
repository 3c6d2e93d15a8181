"""StageRoute on the live stack while a better model arrives: regret against the best fixed
deployment in hindsight, accuracy and cost per window (EMULATED models; answers graded
against the generated benchmark's).

    aragog-eval --stageroute --out reports/stageroute     # make eval-stageroute, ~5 min

(`--workflows`, `--rates`, `--step-s` and `--time-scale` override the workflow, the rate,
the run's length and the latency scale; `Settings` has the rest.)

The stack (embedded llama3 pool, latencies x0.15 as aragog-eval's) starts with the 70B
unloaded by the operator: it has not arrived. Requests of the workflow arrive open-loop
(Poisson) with policy `stageroute:<budget>`; the load generator grades each answer and
reports it (ReportOutcome, 1 right / 0 wrong), as a user grading answers would. The
scheduler's windows (ARAGOG_DEPLOYMENT_WINDOW_S) keep `--m-max` models deployed. At
`--arrive` of the run the operator loads the 70B: a model with no outcome, so StageRoute's
bound on it is the most optimistic and the next window deploys and tries it.

Regret, afterwards, from the emulated answer function (every request's answer on every
model is a pure function of its input, so what each other model would have answered is
known): the benchmark is the routing LP on each model's mean reward over the run's
requests, over the models arrived by then, with the same budget; the regret after request
t is the sum over requests so far of that value minus the reward obtained.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import threading
import time
from collections.abc import Callable

import numpy as np
from aragog import workflows
from aragog.common.pool import load_pool
from aragog.emulation.generate import benchmark
from aragog.emulation.run import Runner
from aragog.loadgen.arrivals import poisson
from aragog.loadgen.client import normalize_answer
from aragog.loadgen.runner import run_schedule
from aragog.policies.stageroute import arm_cost, route_lp
from aragog.stack import Stack, shipped_workflow
from aragog.v1 import scheduler_pb2, scheduler_pb2_grpc

LATE = "llama3-70b"  # the model that arrives mid-run


def lp_value(rewards: dict[str, float], costs: dict[str, float], budget: float) -> float:
    models = sorted(rewards)
    p = route_lp([rewards[m] for m in models], [costs[m] for m in models], budget)
    return float(sum(pi * rewards[m] for pi, m in zip(p, models, strict=True)))


def wait_state(sched, model: str, want: str, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        st = sched.GetSchedulerState(scheduler_pb2.GetSchedulerStateRequest(), timeout=10)
        if st.model_state.get(model) == want:
            return
        time.sleep(0.2)
    raise SystemExit(f"{model} did not become {want} within {timeout_s} s")


@dataclasses.dataclass
class Settings:
    """One StageRoute run (the module docstring says what it does)."""

    workflow: str = "self-refine"
    duration_s: float = 240.0
    rate: float = 3.0
    window_s: float = 20.0
    arrive: float = 0.4  # share of the run after which the operator loads LATE
    budget: float = 0.5
    m_max: int = 2
    time_scale: float = 0.15
    seed: int = 0


def evaluate_stageroute(st: Settings, out_dir: str, say: Callable[[str], None] = print) -> dict:
    """Run it, write requests.csv, windows.csv, regret.png and summary.md to `out_dir`;
    return the summary's figures."""
    os.makedirs(out_dir, exist_ok=True)
    pool = load_pool("llama3")
    wf = workflows.load(st.workflow, pool.names)
    held = benchmark(st.workflow).split("test")
    offsets = poisson(st.rate, st.duration_s, st.seed)
    items = [held[i % len(held)] for i in range(len(offsets))]
    env = {"ARAGOG_DEPLOYMENT_WINDOW_S": str(st.window_s), "ARAGOG_MAX_DEPLOYED": str(st.m_max),
           "ARAGOG_DEPLOYMENT_BUDGET": str(st.budget)}
    with Stack(executors=2, time_scale=st.time_scale, extra_env=env) as stack, \
            stack.channel(stack.scheduler_addr) as ch:
        sched = scheduler_pb2_grpc.SchedulerServiceStub(ch)
        stack.register(shipped_workflow(st.workflow))
        sched.UnloadModel(scheduler_pb2.UnloadModelRequest(model=LATE, by="operator"), timeout=10)
        wait_state(sched, LATE, "unloaded")
        arrival = threading.Timer(st.arrive * st.duration_s, lambda: sched.LoadModel(
            scheduler_pb2.LoadModelRequest(model=LATE, by="operator"), timeout=10))
        arrival.start()
        say(f"[stageroute] serving {len(offsets)} requests of {st.workflow} over "
            f"{st.duration_s:g} s; {LATE} arrives at {st.arrive * st.duration_s:g} s")
        try:
            records = run_schedule(stack.router_addr, offsets.tolist(),
                                   [(st.workflow, it.input, it.answer) for it in items],
                                   policy=f"stageroute:{st.budget:g}", timeout_s=60,
                                   report_outcomes=True)
        finally:
            arrival.cancel()
        changes = list(sched.GetSchedulerState(scheduler_pb2.GetSchedulerStateRequest(),
                                               timeout=10).pool_changes)
    arrived = min((c.at for c in changes if c.model == LATE and c.action == "loaded"),
                  default=float("inf"))
    models = list(pool.names)
    costs = {m: arm_cost(pool, wf, m) for m in models}
    budget = st.budget * max(costs.values())
    ok = sorted((r for r in records if r.status == "ok"), key=lambda r: r.sent_at)
    k = len(wf.llm_stages)
    counter = np.array([[float(normalize_answer(Runner(wf, items[r.index].input).answer([m] * k))
                               == normalize_answer(r.expected)) for m in models] for r in ok])
    mean = dict(zip(models, counter.mean(axis=0), strict=True)) if len(ok) else {}
    early = {m: mean[m] for m in models if m != LATE}
    v_before = lp_value(early, costs, budget) if ok else 0.0
    v_after = lp_value(mean, costs, budget) if ok else 0.0
    t0 = ok[0].sent_at if ok else 0.0
    rows, regret = [], 0.0
    for r in ok:
        regret += (v_after if r.sent_at >= arrived else v_before) - float(r.correct)
        ran = r.stages[0].model if r.stages else ""
        rows.append({"t_s": round(r.sent_at - t0, 3), "model": ran, "reward": int(r.correct),
                     "cost_gpu_s": round(costs.get(ran, 0.0), 4), "regret": round(regret, 3)})
    with open(os.path.join(out_dir, "requests.csv"), "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["t_s"])
        w.writeheader()
        w.writerows(rows)
    windows = _windows(rows, st.window_s, models)
    with open(os.path.join(out_dir, "windows.csv"), "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(windows[0]) if windows else ["window"])
        w.writeheader()
        w.writerows(windows)
    _plot(rows, windows, arrived - t0, os.path.join(out_dir, "regret.png"), v_before, v_after)
    failed = len(records) - len(ok)
    lines = [
        f"StageRoute on {st.workflow} (llama3 pool, EMULATED), {len(records)} requests over "
        f"{st.duration_s:g} s at {st.rate:g}/s, window {st.window_s:g} s, M_max {st.m_max}, "
        f"budget {st.budget:g} of the dearest model's cost; {LATE} loaded at "
        f"{arrived - t0:.1f} s; {failed} requests not ok",
        "mean reward per model over the run's requests (what each would have answered): "
        + ", ".join(f"{m} {mean.get(m, 0.0):.3f} (cost {costs[m]:.3f} GPU-s)" for m in models),
        f"best fixed deployment in hindsight: {v_before:.3f} per request before the arrival, "
        f"{v_after:.3f} after",
        f"obtained: {np.mean([r['reward'] for r in rows]) if rows else 0.0:.3f} per request; "
        f"cumulative regret {regret:.1f} over {len(rows)} requests "
        f"({regret / max(len(rows), 1):.3f} per request)",
        "", "| window | requests | reward | GPU-s per request | " + " | ".join(models) + " |",
        "|---|---|---|---|" + "---|" * len(models),
    ]
    lines += [f"| {w['window']} | {w['requests']} | {w['reward']:.3f} | {w['cost_gpu_s']:.3f} | "
              + " | ".join(f"{w[m]:.0%}" for m in models) + " |" for w in windows]
    lines += ["", "pool changes: " + "; ".join(
        f"{c.at - t0:+.1f}s {c.action} {c.model} ({c.by or 'scheduler'})" for c in changes)]
    with open(os.path.join(out_dir, "summary.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    for line in lines:
        say(line)
    return {"requests": len(records), "failed": failed, "regret": regret,
            "best_before": v_before, "best_after": v_after}


def _windows(rows: list[dict], window: float, models: list[str]) -> list[dict]:
    out = []
    for k in range(int(max((r["t_s"] for r in rows), default=0) // window) + 1):
        sel = [r for r in rows if k * window <= r["t_s"] < (k + 1) * window]
        if not sel:
            continue
        out.append({"window": k, "requests": len(sel),
                    "reward": float(np.mean([r["reward"] for r in sel])),
                    "cost_gpu_s": float(np.mean([r["cost_gpu_s"] for r in sel])),
                    **{m: sum(r["model"] == m for r in sel) / len(sel) for m in models}})
    return out


def _plot(rows, windows, arrived_s, path, v_before, v_after) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 6))
    FigureCanvasAgg(fig)
    ax1, ax2 = fig.add_subplot(211), fig.add_subplot(212)
    ax1.plot([r["t_s"] for r in rows], [r["regret"] for r in rows], label="stageroute")
    ax1.axvline(arrived_s, color="grey", linestyle="--", label="70B arrives")
    ax1.set_ylabel("cumulative regret")
    ax1.set_xlabel("seconds since the first request")
    ax1.set_title("regret against the best fixed deployment in hindsight "
                  f"({v_before:.2f} / {v_after:.2f} per request before / after)")
    ax1.legend()
    mids = [w["window"] for w in windows]
    ax2.plot(mids, [w["reward"] for w in windows], marker="o", label="reward per request")
    ax2b = ax2.twinx()
    ax2b.plot(mids, [w["cost_gpu_s"] for w in windows], marker="s", color="tab:red",
              label="GPU-s per request")
    ax2.set_xlabel("window")
    ax2.set_ylabel("reward")
    ax2b.set_ylabel("GPU-s per request")
    ax2.legend(loc="upper left")
    ax2b.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


