"""The load generator against the real stack: the open-loop runner and Locust's headless CLI."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time

import aragog.loadgen
import numpy as np
import pytest
from aragog.loadgen import arrivals
from aragog.loadgen.runner import read_records, run_schedule
from aragog.loadgen.workload import WorkItem
from aragog.stack import shipped_workflow

pytestmark = pytest.mark.integration
QUESTIONS = ["What is the capital of Australia?", "Why does ice float on water?",
             "Who wrote the novel Middlemarch?"]


def doubled_service(model: str, stage) -> float:
    """A GPU-seconds function the driver subprocess imports by name."""
    return 2 * stage.service_ms / 1000.0


@pytest.fixture(scope="module")
def chain(stack):
    return stack.register(shipped_workflow("chain3")).workflow.id


def test_open_loop_poisson_run_accounts_for_every_request(stack, chain, tmp_path):
    schedule = arrivals.poisson(5.0, 4.0, seed=3)
    assert 12 <= len(schedule) <= 30
    workload = [WorkItem(chain, q, expected="Canberra" if i == 0 else None)
                for i, q in enumerate(QUESTIONS)]
    out = tmp_path / "records.jsonl"
    t0 = time.monotonic()
    records = run_schedule(stack.router_addr, schedule, workload, policy="largest",
                           max_in_flight=64, timeout_s=30, out_path=out,
                           gpu_seconds=doubled_service, root_certificates=stack.root_certificates)
    elapsed = time.monotonic() - t0
    assert len(records) == len(schedule)
    assert [r.index for r in records] == list(range(len(schedule)))
    assert read_records(out) == records
    assert len({r.request_id for r in records}) == len(records)
    assert np.allclose([r.arrival for r in records], schedule)
    for r in records:
        assert r.status == "ok", (r.status, r.error)
        assert r.latency_s > 0 and r.completed_at > r.sent_at and r.policy == "largest"
        assert [s.stage for s in r.stages] == ["draft", "critique", "refine"]
        assert [s.model for s in r.stages] == ["llama3-70b"] * 3
        assert all(s.service_ms > 0 and s.finished_at >= s.started_at > 0 for s in r.stages)
        assert r.gpu_seconds == pytest.approx(sum(2 * s.service_ms / 1000 for s in r.stages))
        assert r.answer and r.correct is (False if r.expected else None)
        assert r.send_lag_s < 0.5, "sent on schedule (open loop)"
    # sent at the scheduled offsets: send time minus offset is the same run start for all
    starts = [r.sent_at - r.arrival for r in records]
    assert max(starts) - min(starts) < 0.5
    assert elapsed < schedule[-1] + 20


def test_in_flight_cap_rejects_but_records(stack, chain):
    records = run_schedule(stack.router_addr, [0.0] * 8, [(chain, "burst")], policy="cheapest",
                           max_in_flight=2, timeout_s=30,
                           root_certificates=stack.root_certificates)
    assert len(records) == 8
    assert sorted(r.status for r in records) == ["ok"] * 2 + ["rejected"] * 6
    assert all("max_in_flight=2" in r.error for r in records if r.status == "rejected")


def test_errors_are_records_not_exceptions(stack, chain):
    workload = [("no-such-workflow", "hi"), (chain, "hi")]
    records = run_schedule(stack.router_addr, [0.0, 0.1], workload, policy="", timeout_s=30,
                           root_certificates=stack.root_certificates)
    assert [r.status for r in records] == ["error", "ok"]
    assert records[0].grpc_code == "INVALID_ARGUMENT"
    assert "unknown workflow" in records[0].grpc_message
    with pytest.raises(ValueError, match="not loopback"):
        run_schedule("10.1.2.3:50051", [0.0], [(chain, "hi")])


def test_locust_headless_cli(stack, chain, tmp_path):
    workload = tmp_path / "workload.jsonl"
    workload.write_text("".join(json.dumps({"workflow": chain, "input": q}) + "\n"
                                for q in QUESTIONS))
    locustfile = os.path.join(os.path.dirname(aragog.loadgen.__file__), "locustfile.py")
    prefix = tmp_path / "run"
    proc = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "locust"), "-f", locustfile, "--headless",
         "-u", "4", "-r", "4", "-t", "5s", "--csv", str(prefix), "--host", stack.router_addr,
         "--aragog-policy", "largest", "--only-summary"],
        env={**os.environ, "ARAGOG_LOADGEN_WORKLOAD": str(workload),
             "ARAGOG_LOADGEN_CA_FILE": stack.extra_env.get("ARAGOG_TLS_CA_FILE", "")},
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(f"{prefix}_stats.csv") as f:
        rows = {r["Name"]: r for r in csv.DictReader(f)}
    assert int(rows["Aggregated"]["Request Count"]) > 0, proc.stderr[-3000:]
    assert int(rows["Aggregated"]["Failure Count"]) == 0
    total = int(rows["Aggregated"]["Request Count"])
    assert int(rows[f"{chain}/largest"]["Request Count"]) == total
