"""`aragog-routing`: profile the benchmarks, train the routers, evaluate them offline.

    aragog-routing build      [--family F ...] [--workflow W ...]   profile + train (cached)
    aragog-routing profile    [--family F] [--workflow W] [--verify N]  profiling saving only
    aragog-routing evaluate   [--family F ...] [--workflow W ...] [--out report.json]

Everything runs on the EMULATED models' answer function (no Triton needed). Artifacts go to
ARAGOG_ARTIFACTS_DIR (default ~/.cache/aragog/artifacts); services read them from there.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
from aragog import workflows
from aragog.emulation.generate import benchmark
from aragog.common.pool import load_pool
from aragog.common.settings import RouterSettings
from aragog.routing import artifacts, profiler
from aragog.routing.embedding import Embedder, embedder_id
from aragog.routing.space import build as build_space

FAMILIES = ("qwen2.5", "llama3")


def ensure(
    root: str, families, wids, settings: RouterSettings, say=print, force: bool = False
) -> dict:
    """Artifacts for every (family, workflow), built where missing or stale."""
    embedder = None
    out = {}
    for fam in families:
        pool = load_pool(fam)
        for wid in wids:
            art = None if force else artifacts.load(root, pool, wid)
            wanted = embedder_id(settings.embedding_model, settings.embedding_int8)
            if art is None or art.summary.get("embedder") != wanted:
                embedder = embedder or Embedder.from_settings(settings)
                art = artifacts.build(root, fam, wid, embedder, say)
            out[(fam, wid)] = art
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="aragog-routing", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    for name in ("build", "profile", "evaluate"):
        p = sub.add_parser(name)
        p.add_argument("--family", action="append", choices=FAMILIES)
        p.add_argument("--workflow", action="append", choices=workflows.BENCHMARKED)
        p.add_argument("--dir", default="", help="artifacts directory")
        if name == "build":
            p.add_argument("--force", action="store_true", help="rebuild even if up to date")
        if name == "profile":
            p.add_argument(
                "--verify",
                type=int,
                default=100,
                help="also profile this many requests exhaustively and compare",
            )
        if name == "evaluate":
            p.add_argument("--out", default="", help="write the report as JSON here")
    args = parser.parse_args(argv)
    settings = RouterSettings.from_env()
    root = args.dir or settings.artifacts_dir or artifacts.default_dir()
    families = args.family or list(FAMILIES)
    wids = args.workflow or list(workflows.BENCHMARKED)
    say = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731

    if args.cmd == "build":
        ensure(root, families, wids, settings, say, force=args.force)
    elif args.cmd == "profile":
        rows = []
        for fam in families:
            pool = load_pool(fam)
            for wid in wids:
                space = build_space(workflows.load(wid, pool.names), pool)
                train = benchmark(wid).split("train")
                prof = profiler.profile(space, train)
                check = profiler.verify(space, train[: args.verify]) if args.verify else {}
                rows.append(
                    {
                        "family": fam,
                        "workflow": wid,
                        "requests": len(train),
                        "configurations": space.size,
                        "executions_per_request": float(np.mean(prof.executions)),
                        "exhaustive_per_request": prof.exhaustive_executions,
                        "fraction_of_exhaustive": float(np.mean(prof.executions))
                        / prof.exhaustive_executions,
                        "verify": check,
                    }
                )
                say(json.dumps(rows[-1]))
        print(json.dumps(rows, indent=1))
    else:
        from aragog.routing.evaluate import evaluate

        arts = ensure(root, families, wids, settings, say)
        embedder = Embedder.from_settings(settings)
        reports = []
        for art in arts.values():
            reports.append(evaluate(art, embedder, settings.routing_budget))
            say(json.dumps(reports[-1]))
        text = json.dumps(reports, indent=1)
        if args.out:
            with open(args.out, "w", encoding="utf-8") as f:
                f.write(text)
        print(_table(reports))


def _table(reports: list[dict]) -> str:
    head = (
        "| family | workflow | acc largest | acc router | gap (pts) | acc per-wf | mean F | recall | "
        "precision | oracle saving recovered | p50 ms | p99 ms |\n" + "|---" * 12 + "|"
    )
    lines = [head]
    for r in reports:
        a = r["accuracy"]
        lines.append(
            f"| {r['family']} | {r['workflow']} | {a['largest']:.3f} | {a['router']:.3f} | "
            f"{r['accuracy_gap_to_largest_points']:.2f} | {a['per_workflow']:.3f} | {r['mean_f_size']:.1f} | "
            f"{r['recall']:.3f} | {r['precision']:.3f} | {r['oracle_saving_recovered']:.1%} | "
            f"{r['router_latency_ms']['p50']:.1f} | {r['router_latency_ms']['p99']:.1f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
