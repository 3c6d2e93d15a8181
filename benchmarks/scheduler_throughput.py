"""Stages one scheduler process places per second, end to end through gRPC on loopback.

Starts Redis, the scheduler and the router (no Triton: no model is called), admits
--requests requests of the 3-stage chain, then --clients client processes each keep
--inflight stages going: acquire, then release at once, stage after stage, so the
scheduler always has many requests queued and capacity freeing constantly. Reports
placements per second over the measured window and the scheduler's CPU share.

--mode session (default) goes through the executors' own client, one StageSession stream
per process; --mode unary makes one AcquireStage and one ReleaseStage call per stage, as a
client without the session would (its ceiling is gRPC's per-call cost). Each client process
is an executor: it claims its requests (their owner keys) before the measured window, as an
executor does before it asks for their stages.

    python benchmarks/scheduler_throughput.py [--seconds 10] [--clients 1] [--inflight 64] [--mode session]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import sys
import time

import grpc

from aragog.common.store import Store, connect
from aragog.executor.scheduler_client import SchedulerClient
from aragog.stack import Stack, shipped_workflow
from aragog.v1 import router_pb2, scheduler_pb2, scheduler_pb2_grpc

STAGES = ["draft", "critique", "refine"]


async def client(addr: str, redis_url: str, namespace: str, rids: list[str], inflight: int,
                 seconds: float, mode: str, out: mp.Queue) -> None:
    executor_id = f"bench-{os.getpid()}"
    store = Store(connect(redis_url), namespace)
    async with store.r.pipeline(transaction=False) as p:
        for rid in rids:
            p.set(store.k.owner(rid), executor_id, ex=600)
        await p.execute()
    await store.r.aclose()
    async with grpc.aio.insecure_channel(addr) as ch:
        stub = scheduler_pb2_grpc.SchedulerServiceStub(ch)
        session = SchedulerClient(ch, executor_id)
        placed = 0
        stop_at = time.monotonic() + seconds
        todo = list(rids)

        async def stage_unary(rid: str, stage: str) -> None:
            grant = await stub.AcquireStage(scheduler_pb2.AcquireStageRequest(
                request_id=rid, stage=stage, executor_id=executor_id), timeout=30)
            await stub.ReleaseStage(scheduler_pb2.ReleaseStageRequest(
                lease_id=grant.lease_id, success=True), timeout=30)

        async def stage_session(rid: str, stage: str) -> None:
            grant = await session.acquire(rid, stage, timeout=30)
            await session.release(grant.lease_id, True, timeout=30)

        one_stage = stage_session if mode == "session" else stage_unary

        async def worker() -> None:
            nonlocal placed
            while todo and time.monotonic() < stop_at:
                rid = todo.pop()
                for stage in STAGES:
                    await one_stage(rid, stage)
                    placed += 1

        t0 = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(inflight)))
        out.put((placed, time.monotonic() - t0))
        await session.close()


def run_client(addr: str, redis_url: str, namespace: str, rids: list[str], inflight: int,
               seconds: float, mode: str, out: mp.Queue) -> None:
    asyncio.run(client(addr, redis_url, namespace, rids, inflight, seconds, mode, out))


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--clients", type=int, default=1)
    ap.add_argument("--inflight", type=int, default=64, help="concurrent stages per client")
    ap.add_argument("--requests", type=int, default=10000)
    ap.add_argument("--mode", choices=["session", "unary"], default="session")
    args = ap.parse_args()
    stack = Stack(executors=0, triton_url="127.0.0.1:1", extra_env={
        "ARAGOG_LOG_LEVEL": "warning",
        "ARAGOG_MAX_QUEUED_REQUESTS": "0", "ARAGOG_MAX_QUEUED_PER_TENANT": "0",  # all admitted up front
    })
    with stack:
        stack.register(shipped_workflow("chain3"))
        print(f"admitting {args.requests} requests ...", flush=True)
        with stack.router() as r:
            rids = []
            for i in range(args.requests):
                events = r.SubmitRequest(router_pb2.SubmitRequestRequest(
                    workflow_id="chain3", input=f"q{i}", policy="any"), timeout=10)
                rids.append(next(iter(events)).request_id)
                events.cancel()
        sched = next(p for p in stack.procs if p.name == "scheduler")
        out: mp.Queue = mp.Queue()
        share = len(rids) // args.clients
        procs = [mp.Process(target=run_client, args=(
            stack.scheduler_addr, stack.redis_url, stack.namespace,
            rids[i * share:(i + 1) * share], args.inflight, args.seconds, args.mode, out))
                 for i in range(args.clients)]
        print(f"measuring for {args.seconds:.0f}s ...", flush=True)
        cpu0, t0 = cpu_seconds(sched.popen.pid), time.monotonic()
        for p in procs:
            p.start()
        results = [out.get() for _ in procs]
        for p in procs:
            p.join()
        cpu = cpu_seconds(sched.popen.pid) - cpu0
        wall = time.monotonic() - t0
    placed = sum(n for n, _ in results)
    rate = placed / max(t for _, t in results)
    print(f"{placed} stages placed by one scheduler in {wall:.1f}s: {rate:,.0f} placements/s "
          f"({args.mode}: {args.clients} client process(es) x {args.inflight} in flight; "
          f"scheduler CPU {cpu / wall:.0%} of one core)")
    sys.exit(0)


if __name__ == "__main__":
    main()
