"""`aragog-routing`: profile a workflow on a dataset, train its router, evaluate it.

Your own workflow and data (stages run through Triton, as the executors run them):

    aragog-routing profile --workflow my.yaml --dataset data.jsonl --grader exact --out prof/
    aragog-routing build --profile prof/           # train, write artifacts, evaluate held out

The shipped GENERATED benchmarks (profiled in-process on the EMULATED answer function,
the accelerator; no Triton needed):

    aragog-routing build    [--family F ...] [--workflow W ...] [--force]
    aragog-routing profile  [--family F] [--workflow W] [--verify N]   profiling saving only
    aragog-routing evaluate [--family F ...] [--workflow W ...] [--out report.json]
    aragog-routing export   --workflow W --out data.jsonl [--limit N]  a benchmark as JSONL

Artifacts go to --dir, else ARAGOG_ARTIFACTS_DIR, else ~/.cache/aragog/artifacts; the router
reads them from there.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys

import numpy as np
from aragog import workflows
from aragog.common.pool import PoolSpec, PoolSpecError, load_pool
from aragog.common.settings import RouterSettings
from aragog.common.workflow import WorkflowError, parse_workflow
from aragog.routing import artifacts
from aragog.routing.artifacts import Profile
from aragog.routing.embedding import Embedder, embedder_id
from aragog.routing.space import build as build_space
from aragog.training import build as builder
from aragog.training import dataset, graders, profiler
from aragog.training.dataset import DatasetError
from aragog.training.evaluate import evaluate, table
from aragog.training.graders import GraderError
from aragog.training.profiler import ProfileError

FAMILIES = ("qwen2.5", "llama3")
"""Pool families whose generated benchmarks are calibrated (aragog.emulation)."""


class UsageError(Exception):
    """Bad input to a command: printed as one line, exit status 2."""


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def ensure(root: str, families, wids, settings: RouterSettings, say=say,
           force: bool = False) -> dict:
    """Artifacts for every (family, shipped workflow), built where missing or stale."""
    embedder = None
    out = {}
    wanted = embedder_id(settings.embedding_model, settings.embedding_int8)
    for fam in families:
        pool = load_pool(fam)
        for wid in wids:
            wf = workflows.load(wid, pool.names)
            art = None if force else artifacts.load(root, pool, wf)[0]
            if art is not None:
                m = art.summary["manifest"]
                current = (m.get("embedder") == wanted
                           and m.get("training") == builder.training_digest()
                           and m.get("source") == builder.benchmark_source(wid, fam)
                           and m.get("dataset") == dataset.digest(dataset.from_benchmark(wid)))
                art = art if current else None
            if art is None:
                embedder = embedder or Embedder.from_settings(settings)
                art = builder.build_benchmark(root, fam, wid, embedder, say,
                                              progress=sys.stderr.isatty())
            out[(fam, wid)] = art
    return out


# --- your own workflow and data -----------------------------------------------------------

def _workflow_text(arg: str) -> str:
    if os.path.exists(arg):
        with open(arg, encoding="utf-8") as f:
            return f.read()
    try:
        return workflows.shipped_yaml(arg)
    except KeyError:
        raise UsageError(f"--workflow {arg}: no such file, nor a shipped workflow") from None


def _pool(arg: str) -> PoolSpec:
    try:
        return load_pool(arg or os.environ.get("ARAGOG_POOL_FILE") or None)
    except (OSError, PoolSpecError) as e:
        raise UsageError(f"--pool: {e}") from None


def profile_dataset(args) -> None:
    pool = _pool(args.pool)
    text = _workflow_text(args.workflow)
    try:
        wf = parse_workflow(text, pool.names)
        grader = graders.make(args.grader)
        records = dataset.load(args.dataset, args.split_seed, args.train_share)
        if args.limit:
            records = records[: args.limit]
        graders.check(grader, records)
    except (WorkflowError, GraderError, DatasetError) as e:
        raise UsageError(str(e)) from None
    space = build_space(wf, pool)
    out = args.out or os.path.join("profiles", wf.id)
    meta = {
        "workflow_yaml": wf.to_yaml(),
        "pool": json.loads(pool.to_json()),
        "dataset": os.path.abspath(args.dataset),
        "limit": args.limit,
        "split_seed": args.split_seed,
        "train_share": args.train_share,
        "grader": grader.spec,
    }
    header = {
        "workflow": artifacts.workflow_digest(wf),
        "pool": artifacts.pool_digest(pool, wf),
        "dataset": dataset.digest(records),
        "grader": grader.spec,
    }
    os.makedirs(out, exist_ok=True)
    checkpoint = profiler.Checkpoint(os.path.join(out, "checkpoint.jsonl"), header, space.size)
    say(f"profiling {wf.id} ({space.size} configurations) on {len(records)} requests through "
        f"Triton at {args.triton}, {args.concurrency} at a time; {len(checkpoint.done)} already "
        f"done (checkpoint {checkpoint.path})")
    try:
        prof = asyncio.run(profiler.profile_through_triton(
            space, records, grader, args.triton, checkpoint, args.concurrency,
            progress=not args.quiet))
    except ProfileError as e:
        raise UsageError(str(e)) from None
    prof.save(os.path.join(out, "profile.npz"))
    tmp = os.path.join(out, f".{os.getpid()}.profile.json")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=1)
    os.replace(tmp, os.path.join(out, "profile.json"))
    figures = {
        "workflow": wf.id, "requests": len(records), "configurations": space.size,
        "executions_per_request": float(prof.executions.mean()),
        "exhaustive_per_request": prof.exhaustive_executions,
        "fraction_of_exhaustive": float(prof.executions.mean()) / prof.exhaustive_executions,
        "largest_correct": float(prof.largest_correct.mean()),
        "mean_preserving": float(prof.preserving.mean()),
        "tokens": int(prof.tokens.sum()), "gpu_seconds_estimated": float(prof.gpu_seconds.sum()),
        "out": out,
    }
    print(json.dumps(figures, indent=1))


def build_from_profile(args, settings: RouterSettings, root: str) -> None:
    d = args.profile
    try:
        with open(os.path.join(d, "profile.json"), encoding="utf-8") as f:
            meta = json.load(f)
        prof = Profile.load(os.path.join(d, "profile.npz"))
    except (OSError, ValueError, KeyError) as e:
        raise UsageError(f"--profile {d}: not a finished profile ({e}); run "
                         "`aragog-routing profile --dataset ...` into it first") from None
    pool = PoolSpec.from_mapping(meta["pool"])
    wf = parse_workflow(meta["workflow_yaml"], pool.names)
    grader = graders.make(meta["grader"])
    try:
        records = dataset.load(meta["dataset"], meta["split_seed"], meta["train_share"])
    except DatasetError as e:
        raise UsageError(f"the profile's dataset: {e}") from None
    if meta.get("limit"):
        records = records[: meta["limit"]]
    digests = [artifacts.input_digest(r.input) for r in records]
    if [r.id for r in records] != prof.item_ids or digests != prof.inputs:
        raise UsageError(f"dataset {meta['dataset']} changed since it was profiled into {d}; "
                         "profile it again")
    space = build_space(wf, pool)
    embedder = Embedder.from_settings(settings)
    art = builder.build(root, space, records, prof, grader, embedder,
                        {"kind": "profile", "profile": os.path.abspath(d)}, say,
                        progress=sys.stderr.isatty())
    if len(prof.rows("test")):
        report = evaluate(art, records, embedder, settings.routing_budget)
        with open(os.path.join(d, "evaluation.json"), "w", encoding="utf-8") as f:
            json.dump(report, f, indent=1)
        print(table([report]))


# --- the generated benchmarks ---------------------------------------------------------------

def profile_benchmarks(args, families, wids) -> None:
    rows = []
    grader = graders.make(builder.BENCHMARK_GRADER)
    for fam in families:
        pool = load_pool(fam)
        for wid in wids:
            space = build_space(workflows.load(wid, pool.names), pool)
            train = [r for r in dataset.from_benchmark(wid) if r.split == "train"]
            prof = profiler.profile(space, train, grader)
            check = profiler.verify(space, train[: args.verify], grader) if args.verify else {}
            rows.append({
                "family": fam, "workflow": wid, "requests": len(train),
                "configurations": space.size,
                "executions_per_request": float(np.mean(prof.executions)),
                "exhaustive_per_request": prof.exhaustive_executions,
                "fraction_of_exhaustive": float(np.mean(prof.executions))
                / prof.exhaustive_executions,
                "verify": check,
            })
            say(json.dumps(rows[-1]))
    print(json.dumps(rows, indent=1))


def export_benchmark(args) -> None:
    records = dataset.from_benchmark(args.workflow)
    if args.limit:
        records = records[: args.limit]
    tmp = f"{args.out}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps({"id": r.id, "input": r.input, "expected": r.expected,
                                "split": r.split}) + "\n")
    os.replace(tmp, args.out)
    say(f"wrote {len(records)} GENERATED requests of {args.workflow} to {args.out}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="aragog-routing", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    for name in ("build", "profile", "evaluate"):
        p = sub.add_parser(name)
        p.add_argument("--family", action="append", choices=FAMILIES,
                       help="generated benchmarks: pool family (repeatable)")
        p.add_argument("--dir", default="", help="artifacts directory")
        if name == "profile":
            p.add_argument("--workflow", help="a workflow YAML file or a shipped workflow id "
                           "(without --dataset: a benchmarked workflow)")
            p.add_argument("--dataset", help="your JSONL dataset: profile it through Triton")
            p.add_argument("--grader", default="agree",
                           help=f"grader spec ({', '.join(graders.names())}, numeric:TOL, "
                           "regex:PATTERN, agree:SPEC, module:function); default agree")
            p.add_argument("--pool", default="",
                           help="pool file or shipped pool name (default: ARAGOG_POOL_FILE, "
                           "else the embedded pool)")
            p.add_argument("--triton", default=os.environ.get("ARAGOG_TRITON_URL", "127.0.0.1:8001"),
                           help="Triton gRPC address (default: ARAGOG_TRITON_URL or 127.0.0.1:8001)")
            p.add_argument("--concurrency", type=int, default=8,
                           help="requests profiled at once")
            p.add_argument("--out", default="", help="profile directory (default profiles/<id>)")
            p.add_argument("--limit", type=int, default=0, help="only the first N requests")
            p.add_argument("--split-seed", type=int, default=dataset.SPLIT_SEED)
            p.add_argument("--train-share", type=float, default=dataset.TRAIN_SHARE)
            p.add_argument("--quiet", action="store_true", help="no progress bar")
            p.add_argument("--verify", type=int, default=100,
                           help="benchmarks: also profile this many requests exhaustively")
        else:
            p.add_argument("--workflow", action="append", choices=workflows.BENCHMARKED)
        if name == "build":
            p.add_argument("--profile", default="", help="build from this profile directory")
            p.add_argument("--force", action="store_true", help="rebuild even if up to date")
        if name == "evaluate":
            p.add_argument("--out", default="", help="write the report as JSON here")
    p = sub.add_parser("export", help="write a shipped generated benchmark as a JSONL dataset")
    p.add_argument("--workflow", required=True, choices=workflows.BENCHMARKED)
    p.add_argument("--out", required=True)
    p.add_argument("--limit", type=int, default=0)
    args = parser.parse_args(argv)
    settings = RouterSettings.from_env()
    root = getattr(args, "dir", "") or settings.artifacts_dir or artifacts.default_dir()
    families = getattr(args, "family", None) or list(FAMILIES)
    try:
        if args.cmd == "export":
            export_benchmark(args)
        elif args.cmd == "profile" and args.dataset:
            if not args.workflow:
                raise UsageError("profile --dataset needs --workflow (a YAML file or shipped id)")
            profile_dataset(args)
        elif args.cmd == "profile":
            wids = [args.workflow] if args.workflow else list(workflows.BENCHMARKED)
            if any(w not in workflows.BENCHMARKED for w in wids):
                raise UsageError(f"without --dataset, --workflow must be one of "
                                 f"{', '.join(workflows.BENCHMARKED)}")
            profile_benchmarks(args, families, wids)
        elif args.cmd == "build" and args.profile:
            build_from_profile(args, settings, root)
        elif args.cmd == "build":
            ensure(root, families, args.workflow or list(workflows.BENCHMARKED), settings,
                   force=args.force)
        else:
            wids = args.workflow or list(workflows.BENCHMARKED)
            arts = ensure(root, families, wids, settings)
            embedder = Embedder.from_settings(settings)
            reports = []
            for (_, wid), art in arts.items():
                reports.append(evaluate(art, dataset.from_benchmark(wid), embedder,
                                        settings.routing_budget))
                say(json.dumps(reports[-1]))
            if args.out:
                with open(args.out, "w", encoding="utf-8") as f:
                    f.write(json.dumps(reports, indent=1))
            print(table(reports))
    except UsageError as e:
        print(f"aragog-routing {args.cmd}: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
