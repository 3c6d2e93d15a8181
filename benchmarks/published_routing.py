"""The published routers offline, on held-out requests: what each picks, what it costs, how
much accuracy it keeps; RouteLLM's APGR and CPT as its paper defines them.

Generated benchmarks (EMULATED answers; the routers `aragog-routing build` ships, read from
the artifacts): per workflow, on the held-out split,
- routellm (`mf`, `clf`, per request): APGR, CPT(50%), CPT(80%) with "strong" the largest
  configuration and "weak" the smallest (a request's weak answer is right when the weak
  configuration preserves accuracy), and the share of strong calls a threshold calibrated
  on the profiling split gives at requested shares 0.2, 0.5 and 0.8;
- every published policy at its documented setting: the share of requests whose decided
  configuration preserves accuracy, and its GPU-seconds relative to the largest.

`--mmlu` adds RouteLLM's two routers trained on REAL outcomes (RouteLLM's GPT-4 / Mixtral
correctness on MMLU, the data of benchmarks/mmlu_routing.py, its split 0 and features), with
the label "only GPT-4 is right" (RouteLLM's "strong wins"): APGR, CPT and calibration there.

    python benchmarks/published_routing.py [--family llama3] [--mmlu] [--out reports/published_routing.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
from aragog import policies, workflows
from aragog.common.pool import load_pool
from aragog.common.settings import RouterSettings
from aragog.emulation.generate import benchmark
from aragog.policies.routellm import FILENAME as ROUTELLM_FILE
from aragog.policies.routellm import REQUEST, RouteLLMModel, Scorer
from aragog.routing import artifacts
from aragog.routing.context import Routing
from aragog.training import metrics

SHARES = (0.2, 0.5, 0.8)
POLICIES = ("routellm:mf@0.5", "routellm:clf@0.5", "routellm:mf@0.5:stage", "agentrouter",
            "flowcompile:0.5", "flowcompile:acc>=0.95", "per-workflow", "largest", "cheapest")


def routellm_figures(scores: np.ndarray, cal: Scorer, strong: np.ndarray, weak: np.ndarray) -> dict:
    out = metrics.summary(strong, weak, scores)
    out["share_at"] = {str(q): float((scores >= cal.threshold(q)).mean()) for q in SHARES}
    return out


def generated(family: str, routing: Routing, say) -> list[dict]:
    pool = load_pool(family)
    rows_out = []
    for wid in workflows.BENCHMARKED:
        wf = workflows.load(wid, pool.names)
        art = routing.artifacts(wf, pool)
        if art is None:
            say(f"{family}/{wid}: {routing.unavailable(wf, pool)}")
            continue
        items = benchmark(wid).split("test")
        texts = [it.input for it in items]
        prof_rows = np.array([art.rows[artifacts.input_digest(t)] for t in texts])
        x = art.features(texts, routing.embedder)
        model = art.companion(ROUTELLM_FILE, RouteLLMModel.load)
        space = art.space
        weak_cfg = int(np.flatnonzero((space.ranks == 0).all(1))[0])
        weak = art.profile.preserving[prof_rows, weak_cfg].astype(float)
        strong = np.ones_like(weak)
        row = {"family": family, "workflow": wid, "held_out": len(texts),
               "weak_preserves": float(weak.mean()), "routellm": {}, "policies": {}}
        for kind in ("mf", "clf"):
            sc = model.scorer(kind, REQUEST)
            row["routellm"][kind] = routellm_figures(sc.score(x), sc, strong, weak)
        t0 = time.monotonic()
        for spec in POLICIES:
            p = policies.make(spec)
            configs = [policies.decided_configuration(p, wf, pool, t, routing) for t in texts]
            kept = art.profile.preserving[prof_rows, configs]
            row["policies"][spec] = {
                "preserves": float(kept.mean()),
                "relative_gpu_seconds": float(space.relative_cost[configs].mean()),
            }
        say(f"{family}/{wid}: {len(texts)} held-out requests, policies decided in "
            f"{time.monotonic() - t0:.0f} s")
        rows_out.append(row)
    return rows_out


def mmlu(say) -> dict:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import mmlu_routing as mr  # noqa: E402 - the MMLU benchmark's data, split and features
    from aragog.routing.artifacts import router_input
    from aragog.routing.embedding import Embedder
    from aragog.training import build as training_build
    from aragog.training.routellm import fit_clf, fit_mf

    settings = RouterSettings.from_env()
    root = settings.artifacts_dir or artifacts.default_dir()
    data = mr.Data()
    x_text = training_build.embeddings(root, Embedder.from_settings(settings), data.texts)
    train, test = data.split(0)
    lex = mr.lexicon(root, [data.texts[i] for i in train])
    x = router_input(x_text, lex, data.texts)
    label = data.gain.astype(np.float32)  # only GPT-4 right: RouteLLM's "strong wins"
    out = {"prompts": len(data.texts), "train": len(train), "held_out": len(test)}
    for kind, fit in (("mf", fit_mf), ("clf", fit_clf)):
        t0 = time.monotonic()
        sc = Scorer(kind, fit(x[train], label[train]), np.zeros(0))
        sc.calibration = np.sort(sc.score(x[train]))
        out[kind] = routellm_figures(sc.score(x[test]), sc, data.strong[test].astype(float),
                                     data.weak[test].astype(float))
        say(f"mmlu {kind}: trained in {time.monotonic() - t0:.0f} s: {out[kind]}")
    return out


def table(rows: list[dict], mm: dict | None) -> str:
    md = ["| pool | workflow | router | APGR | CPT(50%) | CPT(80%) | strong share at 0.2 / 0.5 / 0.8 |",
          "|---|---|---|---|---|---|---|"]

    def line(pool: str, wf: str, kind: str, f: dict) -> str:
        shares = " / ".join(f"{f['share_at'][str(q)]:.2f}" for q in SHARES)
        return (f"| {pool} | {wf} | {kind} | {f['apgr']:.3f} | {f['cpt50']:.1%} | "
                f"{f['cpt80']:.1%} | {shares} |")

    for r in rows:
        for kind, f in r["routellm"].items():
            md.append(line(r["family"], r["workflow"], kind, f))
    if mm:
        for kind in ("mf", "clf"):
            md.append(line("mmlu-recorded (REAL outcomes)", "mmlu", kind, mm[kind]))
    md += ["", "| pool | workflow | policy | preserves accuracy | GPU-s vs largest |",
           "|---|---|---|---|---|"]
    for r in rows:
        for spec, f in r["policies"].items():
            md.append(f"| {r['family']} | {r['workflow']} | `{spec}` | {f['preserves']:.1%} | "
                      f"{f['relative_gpu_seconds']:.2f} |")
    return "\n".join(md)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--family", default="llama3")
    ap.add_argument("--mmlu", action="store_true", help="also RouteLLM on MMLU's real outcomes")
    ap.add_argument("--out", default="reports/published_routing.json")
    args = ap.parse_args()

    def say(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    routing = Routing(RouterSettings.from_env())
    rows = generated(args.family, routing, say)
    mm = mmlu(say) if args.mmlu else None
    md = table(rows, mm)
    print(md)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump({"date": time.strftime("%Y-%m-%d"), "generated": rows, "mmlu": mm,
                   "table": md}, f, indent=1)
    say(f"wrote {args.out}")


if __name__ == "__main__":
    main()
