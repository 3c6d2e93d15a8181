"""The user's path end to end on the live stack: a workflow of their own and a JSONL dataset,
profiled through Triton, built into artifacts, served by the router.

The pool is the EMULATED embedded one, so the dataset is the shipped quickstart (requests
of the generated text-to-sql benchmark); everything else is what a user with a real pool runs.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from aragog.common.pool import load_pool
from aragog.common.workflow import parse_workflow
from aragog.routing.space import build as build_space
from aragog.training import dataset, graders, profiler
from aragog.v1 import common_pb2

pytestmark = pytest.mark.integration
QUICKSTART = Path(__file__).resolve().parents[2] / "examples" / "quickstart"


def test_profiling_through_triton_finds_the_in_process_preserving_sets(stack, tmp_path):
    """The serving path and the accelerator run the same prompts on the same answers."""
    pool = load_pool()
    space = build_space(parse_workflow((QUICKSTART / "sql-lite.yaml").read_text(), pool.names),
                        pool)
    records = dataset.load(str(QUICKSTART / "requests.jsonl"))[:12]
    grader = graders.make("exact")
    fast = profiler.profile(space, records, grader)
    ck = profiler.Checkpoint(str(tmp_path / "ck.jsonl"), {"run": 1}, space.size)
    served = asyncio.run(profiler.profile_through_triton(
        space, records, grader, stack.triton_url, ck, concurrency=6, progress=False))
    assert (served.preserving == fast.preserving).all()
    assert (served.largest_correct == fast.largest_correct).all()
    assert (served.executions == fast.executions).all()
    assert not served.preserving.all()  # some request has configurations that do not preserve
    assert (served.tokens > 0).all() and (served.gpu_seconds > 0).all()


def routing_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "aragog.training", *args], env=env,
                          capture_output=True, text=True, timeout=600)


def test_own_workflow_and_dataset_profiled_built_and_served(stack, artifacts_dir, tmp_path):
    env = os.environ | {"ARAGOG_ARTIFACTS_DIR": artifacts_dir}
    data = tmp_path / "requests.jsonl"
    data.write_text("".join((QUICKSTART / "requests.jsonl").read_text().splitlines(True)[:80]))
    out = tmp_path / "profile"
    common = ["--workflow", str(QUICKSTART / "sql-lite.yaml"), "--dataset", str(data),
              "--grader", "exact", "--triton", stack.triton_url, "--out", str(out), "--quiet"]
    # bad input: named, and nothing written
    bad = routing_cli("profile", *common[:4], "--grader", "fuzzy", *common[6:], env=env)
    assert bad.returncode == 2 and "unknown grader 'fuzzy'" in bad.stderr
    assert not out.exists()

    done = routing_cli("profile", *common, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    figures = json.loads(done.stdout)
    assert figures["requests"] == 80 and figures["fraction_of_exhaustive"] < 0.5
    lines = (out / "checkpoint.jsonl").read_text().splitlines()
    assert len(lines) == 81  # the header and one line per request
    again = routing_cli("profile", *common, env=env)  # resumes: nothing left to run
    assert again.returncode == 0 and "80 already done" in again.stderr
    assert json.loads(again.stdout)["executions_per_request"] == figures["executions_per_request"]
    assert len((out / "checkpoint.jsonl").read_text().splitlines()) == 81

    built = routing_cli("build", "--profile", str(out), env=env)
    assert built.returncode == 0, built.stderr[-2000:]
    assert "oracle saving recovered" in built.stdout

    reg = stack.register((QUICKSTART / "sql-lite.yaml").read_text())
    records = dataset.load(str(data))
    held_out = [r for r in records if r.split == "test"][:4]
    for r in held_out:
        events, _ = stack.submit("sql-lite", r.input, policy="aragog")
        admitted = events[0].admitted.configurations
        final = events[-1].completed
        assert final.state == common_pb2.REQUEST_STATE_SUCCEEDED, final.error
        assert 1 <= admitted <= reg.configurations
    # per-input reads the profile built from the user's data
    events, _ = stack.submit("sql-lite", held_out[0].input, policy="per-input")
    assert events[-1].completed.admitted_configurations == 1


def test_a_policy_without_artifacts_is_a_failed_precondition(stack):
    yaml_text = (QUICKSTART / "sql-lite.yaml").read_text().replace("id: sql-lite", "id: sql-bare")
    stack.register(yaml_text)
    with pytest.raises(grpc.RpcError) as e:
        stack.submit("sql-bare", "How many orders?", policy="aragog")
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "no routing artifacts" in e.value.details()
    assert "aragog-routing" in e.value.details()
    events, _ = stack.submit("sql-bare", "How many orders?", policy="largest")
    assert events[-1].completed.state == common_pb2.REQUEST_STATE_SUCCEEDED
