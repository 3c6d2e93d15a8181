"""MoMA on the live stack: requests that name no workflow, sent to the right one by the
router's front door; intent accuracy, and end-to-end accuracy and cost against sending
everything to the largest model.

    aragog-eval --moma --out reports/moma     # make eval-moma, ~4 min

The stack (embedded llama3 pool, EMULATED models, latencies x0.15 as aragog-eval's) has the
four benchmarked workflows registered (the agents; their intent examples are their routing
artifacts' training inputs) and the one-stage `chat` workflow as the single-model route
(ARAGOG_LLM_WORKFLOW=chat). The held-out mix: `per_workflow` test inputs of each benchmark
(never among its examples, nor among the inputs the intent's settings were chosen on), which
belong to their workflow, and `mmlu` REAL MMLU prompts (RouteLLM's recorded set, spread over
its subjects), which belong to no workflow: their right route is the single model (voting
answers multiple-choice questions too, but it was built for its own benchmark's).

Each input is sent three ways: `moma` with no workflow named (the front door picks, MoMA's
LLM selection binds a configuration), `moma` naming the right workflow (what the intent
errors cost, by difference), and `largest` naming the right workflow (everything on the
largest model: the reference). Accuracy is graded on the benchmark inputs against the
generated benchmark's answers (an input sent to another workflow is answered by it, and is
graded the same way). The EMULATED llama3 models have no recorded answers to MMLU prompts
(only the mmlu-recorded pool's GPT-4 and Mixtral do), so the MMLU part reports its routes
and its cost, not an accuracy.
"""

from __future__ import annotations

import concurrent.futures
import csv
import dataclasses
import json
import os
from collections import Counter
from collections.abc import Callable

import numpy as np
from aragog import workflows
from aragog.common.pool import load_pool
from aragog.common.workflow import parse_workflow
from aragog.emulation import recorded
from aragog.emulation.generate import benchmark
from aragog.loadgen.client import RouterClient
from aragog.loadgen.evaluate import gpu_seconds_fn
from aragog.router.http import CHAT_WORKFLOW, chat_workflow
from aragog.stack import Stack, prepare_routing, shipped_workflow

WAYS = (("moma", False), ("moma", True), ("largest", True))
"""(policy, whether the request names its right workflow)."""


def way_name(policy: str, named: bool) -> str:
    return f"{policy}{'' if named else ' (front door)'}"


@dataclasses.dataclass
class Settings:
    per_workflow: int = 50
    mmlu: int = 100
    concurrency: int = 8
    time_scale: float = 0.15
    family: str = "llama3"


TUNED_ON = 200
"""The intent's settings were chosen on each benchmark's first 200 test inputs
(aragog.routing.intent): the mix starts after them."""


def held_out_mix(st: Settings) -> list[tuple[str, str, str | None]]:
    """(right workflow, input, expected answer or None) for every input of the mix."""
    mix = [(wid, it.input, it.answer) for wid in workflows.BENCHMARKED
           for it in benchmark(wid).split("test")[TUNED_ON:TUNED_ON + st.per_workflow]]
    recs = recorded.records()
    step = max(1, len(recs) // max(st.mmlu, 1))
    mix += [(CHAT_WORKFLOW, r.prompt, None) for r in recs[step // 2::step][:st.mmlu]]
    return mix


def evaluate_moma(st: Settings, out_dir: str, say: Callable[[str], None] = print) -> dict:
    """Run it; write requests.csv, summary.json and summary.md to `out_dir`; return the
    summary's figures."""
    os.makedirs(out_dir, exist_ok=True)
    pool = load_pool(st.family)
    prepare_routing(st.family, say)
    chat = chat_workflow(list(pool.names))
    price = gpu_seconds_fn(st.family, [parse_workflow(chat, pool.names)])
    mix = held_out_mix(st)
    rows = []
    with Stack(executors=2, time_scale=st.time_scale,
               extra_env={"ARAGOG_LLM_WORKFLOW": CHAT_WORKFLOW,
                          "ARAGOG_POOL_FILE": st.family}) as stack:
        for wid in workflows.BENCHMARKED:
            stack.register(shipped_workflow(wid))
        stack.register(chat)
        with RouterClient(stack.router_addr, timeout_s=120) as client:
            for policy, named in WAYS:
                say(f"[moma] {len(mix)} requests, policy {policy}, "
                    f"{'the right workflow named' if named else 'no workflow named'}")

                def one(k, policy=policy, named=named):
                    right, text, expected = mix[k]
                    return k, client.submit(right if named else "", text, policy=policy,
                                            expected=expected, index=k)

                with concurrent.futures.ThreadPoolExecutor(st.concurrency) as ex:
                    for k, rec in ex.map(one, range(len(mix))):
                        price([rec])
                        rows.append({"way": way_name(policy, named), "named": named, "item": k,
                                     "right_workflow": mix[k][0], "routed": rec.workflow,
                                     "route": rec.route, "status": rec.status,
                                     "correct": rec.correct, "gpu_seconds": round(rec.gpu_seconds, 5),
                                     "models": " ".join(s.model for s in rec.stages),
                                     "error": rec.error[:200]})
    summary = summarise(rows, mix)
    with open(os.path.join(out_dir, "requests.csv"), "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    with open(os.path.join(out_dir, "summary.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=1)
    lines = report_lines(summary, st)
    with open(os.path.join(out_dir, "summary.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    for line in lines:
        say(line)
    return summary


def _mean(values: list) -> float | None:
    return float(np.mean(values)) if values else None


def summarise(rows: list[dict], mix: list[tuple]) -> dict:
    """Intent accuracy (per right workflow, and the confusion), accuracy and GPU-seconds per
    way, on the benchmark part and the MMLU part."""
    out: dict = {"requests": len(mix), "ways": {}}
    for policy, named in WAYS:
        name = way_name(policy, named)
        rs = [r for r in rows if r["way"] == name]
        bench = [r for r in rs if r["right_workflow"] != CHAT_WORKFLOW]
        mmlu = [r for r in rs if r["right_workflow"] == CHAT_WORKFLOW]
        way = {
            "named": named,
            "not_ok": sum(r["status"] != "ok" for r in rs),
            "accuracy_benchmarks": _mean([bool(r["correct"]) for r in bench]),
            "gpu_s_benchmarks": _mean([r["gpu_seconds"] for r in bench]),
            "gpu_s_mmlu": _mean([r["gpu_seconds"] for r in mmlu]),
            "gpu_s_all": _mean([r["gpu_seconds"] for r in rs]),
        }
        if not named:
            way["intent_accuracy"] = _mean([r["routed"] == r["right_workflow"] for r in rs])
            way["intent_by_workflow"] = {
                wid: float(np.mean([r["routed"] == wid for r in rs if r["right_workflow"] == wid]))
                for wid in sorted({r["right_workflow"] for r in rs})}
            way["confusion"] = {f"{a} -> {b}": n for (a, b), n in sorted(Counter(
                (r["right_workflow"], r["routed"] or "(refused)") for r in rs).items())}
        out["ways"][name] = way
    ref = out["ways"]["largest"]
    for name, way in out["ways"].items():
        if name != "largest" and ref["gpu_s_all"]:
            way["gpu_s_vs_largest"] = way["gpu_s_all"] / ref["gpu_s_all"]
            way["accuracy_points_vs_largest"] = 100 * (
                (way["accuracy_benchmarks"] or 0) - (ref["accuracy_benchmarks"] or 0))
    return out


def report_lines(s: dict, st: Settings) -> list[str]:
    lines = [
        f"MoMA's front door on the {st.family} pool (EMULATED models): {s['requests']} held-out "
        f"requests, {st.per_workflow} test inputs of each benchmarked workflow and {st.mmlu} "
        "REAL MMLU prompts (right route: the single-model workflow `chat`)",
        "",
        "| way | intent accuracy | accuracy, benchmark inputs | GPU-s per request: benchmarks "
        "/ MMLU / all | vs largest: GPU-s, accuracy (points) | not ok |",
        "|---|---|---|---|---|---|",
    ]
    for name, w in s["ways"].items():
        if w["accuracy_benchmarks"] is None or w["gpu_s_mmlu"] is None:
            lines.append(f"| {name} | (no benchmark or no MMLU inputs in the mix) |||||")
            continue
        vs = (f"{w['gpu_s_vs_largest']:.2f}x, {w['accuracy_points_vs_largest']:+.1f}"
              if "gpu_s_vs_largest" in w else "1.00x (reference)")
        lines.append(
            f"| {name} | {w.get('intent_accuracy', 1.0):.1%} | "
            f"{w['accuracy_benchmarks']:.3f} | {w['gpu_s_benchmarks']:.3f} / "
            f"{w['gpu_s_mmlu']:.3f} / {w['gpu_s_all']:.3f} | {vs} | {w['not_ok']} |")
    moma = s["ways"][way_name("moma", False)]
    lines += ["", "intent accuracy by right workflow: " + ", ".join(
        f"{k} {v:.1%}" for k, v in moma["intent_by_workflow"].items()),
        "routes (right -> routed): " + "; ".join(f"{k}: {n}" for k, n in moma["confusion"].items()),
        "MMLU prompts have no graded answer on this pool: its EMULATED models have no recorded "
        "answers to them."]
    return lines
