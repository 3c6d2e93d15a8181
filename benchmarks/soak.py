"""Soak: steady load on the whole stack for a long time; does any process's memory grow?

Starts the embedded stack (its own Redis and Triton, EMULATED pool) with finished requests
kept ARAGOG_REQUEST_TTL_S=--ttl seconds (the default day would make Redis grow by design for
a day), then submits chain3 requests as Poisson arrivals at --rate per second from a pool of
client threads for --minutes. Every --every seconds it samples the resident memory of each
service (a process and its children: the pool's includes Triton and its model stubs) and
Redis's used_memory. After --warmup minutes (the first TTL of retained requests included),
it compares the mean of the first and of the last fifth of the samples.

    python benchmarks/soak.py [--minutes 30] [--rate 3] [--ttl 60] [--warmup 3] [--cache N] [--out soak.json]

Prints a table (MiB at the start and end of the measured window, growth) and writes every
sample to --out. The target (issue 16): growth under 5% for every process after warm-up.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import random
import threading
import time

import grpc
import redis

from aragog.stack import Stack, shipped_workflow


def tree_rss_mib(pid: int) -> float:
    """Resident memory of `pid` and every descendant, MiB."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo += children.get(p, [])
        try:
            with open(f"/proc/{p}/status") as f:
                total += next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
        except (OSError, StopIteration):
            continue
    return total / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--rate", type=float, default=3.0, help="requests per second (Poisson)")
    ap.add_argument("--ttl", type=int, default=60, help="ARAGOG_REQUEST_TTL_S, seconds")
    ap.add_argument("--warmup", type=float, default=3.0, help="minutes left out")
    ap.add_argument("--every", type=float, default=10.0, help="seconds between samples")
    ap.add_argument("--cache", type=int, default=0,
                    help="ARAGOG_REQUEST_CACHE_SIZE (the scheduler's warm requests, an LRU; "
                    "0: its default, 20,000, which a short run does not fill)")
    ap.add_argument("--out", default="soak.json")
    args = ap.parse_args()

    env = {"ARAGOG_REQUEST_TTL_S": str(args.ttl), "ARAGOG_DEFAULT_POLICY": "largest"}
    if args.cache:
        env["ARAGOG_REQUEST_CACHE_SIZE"] = str(args.cache)
    stack = Stack(executors=2, extra_env=env)
    stack.start(timeout_s=300)
    try:
        wid = stack.register(shipped_workflow("chain3")).workflow.id
        r = redis.Redis.from_url(stack.redis_url)
        stop = threading.Event()
        outcomes = {"ok": 0, "failed": 0}
        lock = threading.Lock()

        def one(i: int) -> None:
            try:
                events, _ = stack.submit(wid, f"soak request {i}", timeout_s=120)
                ok = events[-1].completed.state == 3  # REQUEST_STATE_SUCCEEDED
            except grpc.RpcError:
                ok = False
            with lock:
                outcomes["ok" if ok else "failed"] += 1

        def arrivals(pool: concurrent.futures.ThreadPoolExecutor) -> None:
            rng, i = random.Random(7), 0
            while not stop.is_set():
                time.sleep(rng.expovariate(args.rate))
                try:
                    pool.submit(one, i)
                except RuntimeError:  # the pool is shutting down: the run is over
                    return
                i += 1

        samples = []
        t0 = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(64) as pool:
            feeder = threading.Thread(target=arrivals, args=(pool,), daemon=True)
            feeder.start()
            while time.monotonic() - t0 < args.minutes * 60:
                time.sleep(args.every)
                row = {"t_s": round(time.monotonic() - t0, 1),
                       "redis": r.info("memory")["used_memory"] / 2**20}
                row.update({p.name: tree_rss_mib(p.popen.pid) for p in stack.procs
                            if p.name != "redis"})
                with lock:
                    row.update(outcomes)
                samples.append(row)
                print(json.dumps(row), flush=True)
            stop.set()
        r.close()
    finally:
        stack.stop()

    with open(args.out, "w") as f:
        json.dump(samples, f, indent=1)
    measured = [s for s in samples if s["t_s"] >= args.warmup * 60]
    k = max(1, len(measured) // 5)
    first, last = measured[:k], measured[-k:]
    names = [n for n in samples[0] if n not in ("t_s", "ok", "failed")]
    print(f"\n{samples[-1]['ok']} requests succeeded, {samples[-1]['failed']} failed over "
          f"{args.minutes:g} min at {args.rate:g}/s; memory after {args.warmup:g} min of warm-up "
          f"(mean of the first and last {k} samples):\n")
    print("| process | MiB at start | MiB at end | growth |\n|---|---|---|---|")
    for n in names:
        a = sum(s[n] for s in first) / k
        b = sum(s[n] for s in last) / k
        print(f"| {n} | {a:.1f} | {b:.1f} | {100 * (b - a) / a:+.1f}% |")


if __name__ == "__main__":
    main()
