"""Register sql-lite with a running router and send it held-out requests of the dataset.

    .venv/bin/python examples/quickstart/submit.py [--router ADDR] [--policy P] [-n 5]

Prints, per request, |F(r)| (configurations admitted), the model each stage ran on, the
answer and whether it matches `expected`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import grpc
from aragog.training import dataset
from aragog.v1 import router_pb2, router_pb2_grpc

HERE = Path(__file__).resolve().parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--router", default="127.0.0.1:50051")
    ap.add_argument("--policy", default="aragog")
    ap.add_argument("-n", type=int, default=5, help="held-out requests to send")
    args = ap.parse_args()
    with grpc.insecure_channel(args.router) as channel:
        router = router_pb2_grpc.RouterServiceStub(channel)
        try:
            reg = router.RegisterWorkflow(router_pb2.RegisterWorkflowRequest(
                yaml_spec=(HERE / "sql-lite.yaml").read_text()), timeout=10)
            print(f"registered {reg.workflow.id}: {reg.configurations} configurations")
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.ALREADY_EXISTS:
                raise
        records = [r for r in dataset.load(str(HERE / "requests.jsonl")) if r.split == "test"]
        correct = 0
        for r in records[: args.n]:
            try:
                events = list(router.SubmitRequest(router_pb2.SubmitRequestRequest(
                    workflow_id="sql-lite", input=r.input, policy=args.policy), timeout=120))
            except grpc.RpcError as e:
                print(f"{r.id}: {e.code().name}: {e.details()}", file=sys.stderr)
                return 1
            done = events[-1].completed
            models = ", ".join(f"{s.stage}={s.model}" for s in done.stages)
            ok = done.answer == r.expected
            correct += ok
            verdict = "correct" if ok else f"expected {r.expected!r}"
            print(f"{r.id}: |F(r)| {done.admitted_configurations}, {models}\n"
                  f"    answer {done.answer!r} ({verdict})")
        print(f"{correct}/{min(args.n, len(records))} correct")
    return 0


if __name__ == "__main__":
    sys.exit(main())
