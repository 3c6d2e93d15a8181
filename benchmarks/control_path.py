"""Latency the control path adds to each LLM stage, on an idle pool.

Per stage the executor calls AcquireStage (scheduler: load C(r) from Redis, run a round,
record the lease and the choice in Redis, answer) and ReleaseStage (free the lease in
Redis, run a round). With one request in flight at a time nothing ever queues, so the time
of those two RPCs as the executor measures them is the control path alone. The model call
itself (EMULATED model on a real Triton) is reported for scale, not counted.

    python benchmarks/control_path.py [--requests 300] [--policy aragog] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

from aragog.stack import Stack, shipped_workflow


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--policy", default="aragog")
    ap.add_argument("--time-scale", type=float, default=0.01, help="emulated model speed-up")
    ap.add_argument("--out", default="")
    args = ap.parse_args()

    with Stack(executors=1, time_scale=args.time_scale) as stack:
        wf = stack.register(shipped_workflow("chain3")).workflow.id
        acquire, release, service, total = [], [], [], []
        for i in range(args.warmup + args.requests):
            events, latency = stack.submit(wf, f"control path probe {i}", policy=args.policy)
            status = events[-1].completed
            if status.state != 3:
                sys.exit(f"request failed: {status.error}")
            if i < args.warmup:
                continue
            total.append(latency * 1000)
            for s in status.stages:
                acquire.append(s.schedule_ms)
                release.append(s.release_ms)
                service.append(s.service_ms)
        both = [a + r for a, r in zip(acquire, release, strict=True)]
    result = {
        "stages": len(acquire),
        "policy": args.policy,
        "acquire_ms": {"p50": pct(acquire, 50), "p99": pct(acquire, 99)},
        "release_ms": {"p50": pct(release, 50), "p99": pct(release, 99)},
        "control_path_ms": {"p50": pct(both, 50), "p99": pct(both, 99),
                            "mean": statistics.fmean(both)},
        "emulated_model_call_ms": {"p50": pct(service, 50)},
        "request_latency_ms": {"p50": pct(total, 50), "p99": pct(total, 99)},
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    print(f"control path per stage over {len(acquire)} stages ({args.requests} requests, idle pool, "
          f"policy {args.policy}):")
    print(f"  AcquireStage  p50 {result['acquire_ms']['p50']:.2f} ms   p99 {result['acquire_ms']['p99']:.2f} ms")
    print(f"  ReleaseStage  p50 {result['release_ms']['p50']:.2f} ms   p99 {result['release_ms']['p99']:.2f} ms")
    print(f"  both          p50 {result['control_path_ms']['p50']:.2f} ms   "
          f"p99 {result['control_path_ms']['p99']:.2f} ms")
    print(f"  (emulated model call p50 {result['emulated_model_call_ms']['p50']:.1f} ms; "
          f"request p50 {result['request_latency_ms']['p50']:.1f} ms)")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
