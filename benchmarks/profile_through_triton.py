"""Profiling through the serving path: N text-to-sql requests through the embedded Triton pool.

    python benchmarks/profile_through_triton.py [--requests 500] [--concurrency 16]

Starts the embedded (EMULATED) pool in a stack on free ports, profiles the first N requests
of the workflow's generated benchmark through Triton (aragog-routing's serving path, the
`agree` grader the benchmarks use), and reports the wall time, the stage executions per
request against the exhaustive count, and agreement with the in-process accelerator on the
same requests. Target (issue "own data"): 500 requests in <= 10 min, <= 1/10 of the
exhaustive stage executions.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time

from aragog import workflows
from aragog.common.pool import load_pool
from aragog.routing.space import build as build_space
from aragog.stack import Stack
from aragog.training import dataset, graders, profiler


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=500)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--workflow", default="text-to-sql", choices=workflows.BENCHMARKED)
    args = ap.parse_args()
    pool = load_pool(os.environ.get("ARAGOG_POOL_FILE") or None)
    space = build_space(workflows.load(args.workflow, pool.names), pool)
    records = dataset.from_benchmark(args.workflow)[: args.requests]
    grader = graders.make("agree")
    with Stack(executors=1) as stack, tempfile.TemporaryDirectory() as tmp:
        ck = profiler.Checkpoint(os.path.join(tmp, "ck.jsonl"), {"bench": 1}, space.size)
        t0 = time.monotonic()
        served = asyncio.run(profiler.profile_through_triton(
            space, records, grader, stack.triton_url, ck, args.concurrency, progress=True))
        wall = time.monotonic() - t0
    fast = profiler.profile(space, records, grader)
    print(json.dumps({
        "workflow": args.workflow, "pool": pool.family, "time_scale": pool.time_scale,
        "requests": len(records), "concurrency": args.concurrency,
        "configurations": space.size, "wall_s": round(wall, 1),
        "executions_per_request": float(served.executions.mean()),
        "exhaustive_per_request": served.exhaustive_executions,
        "fraction_of_exhaustive": float(served.executions.mean()) / served.exhaustive_executions,
        "same_preserving_sets_as_in_process": bool((served.preserving == fast.preserving).all()),
        "tokens": int(served.tokens.sum()),
        "gpu_seconds_estimated": round(float(served.gpu_seconds.sum()), 1),
    }, indent=1))


if __name__ == "__main__":
    main()
