"""The Python SDK and the `aragog` command against the live stack."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest
from aragog.client import FailedPrecondition, InvalidArgument, NotFound
from aragog.stack import shipped_workflow
from aragog.v1 import common_pb2

pytestmark = pytest.mark.integration


def test_sync_client_runs_a_request_and_raises_typed_errors(stack):
    with stack.client() as c:
        c.register_workflow(shipped_workflow("chain3"))
        assert "chain3" in [w.id for w in c.list_workflows()]
        kinds = [
            e.WhichOneof("event")
            for e in c.submit("chain3", "Why is the sky blue?", policy="cheapest")
        ]
        assert kinds[0] == "admitted" and kinds[-1] == "completed"
        assert kinds.count("stage_finished") == 3
        done = c.run("chain3", "Name a blue thing.", policy="largest", request_id="sdk-run-1")
        assert done.state == common_pb2.REQUEST_STATE_SUCCEEDED and done.answer
        assert c.status("sdk-run-1").answer == done.answer
        with pytest.raises(NotFound):
            c.status("no-such-request")
        with pytest.raises(InvalidArgument, match="unknown workflow"):
            c.run("no-such-workflow", "hi")
        with pytest.raises(FailedPrecondition, match="routing artifacts"):
            c.run("chain3", "hi", policy="aragog")


def test_async_client_streams_the_same_events(stack):
    async def go():
        async with stack.async_client() as c:
            await c.register_workflow(shipped_workflow("chain3"))
            kinds = [
                e.WhichOneof("event")
                async for e in c.submit("chain3", "async hello", policy="cheapest")
            ]
            with pytest.raises(InvalidArgument):
                await c.run("chain3", "", policy="cheapest")  # empty input
            return kinds

    kinds = asyncio.run(go())
    assert kinds[0] == "admitted" and kinds[-1] == "completed" and "stage_started" in kinds


def aragog(*args: str, stack) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"ARAGOG_ROUTER": stack.router_addr}
    tls = ["--ca", stack.extra_env["ARAGOG_TLS_CA_FILE"]] if stack.root_certificates else []
    return subprocess.run(
        [sys.executable, "-m", "aragog.client.cli", *tls, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_aragog_command(stack, tmp_path):
    wf = tmp_path / "wf.yaml"
    wf.write_text(shipped_workflow("chain3").replace("id: chain3", "id: cli-chain"))
    out = aragog("register", str(wf), stack=stack)
    assert out.returncode == 0 and "registered cli-chain: 27 configurations" in out.stdout
    assert "cli-chain:" in aragog("workflows", stack=stack).stdout
    out = aragog(
        "submit",
        "cli-chain",
        "What is a DAG?",
        "--policy",
        "cheapest",
        "--watch",
        "--request-id",
        "cli-1",
        stack=stack,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("admitted cli-1: workflow cli-chain, policy cheapest")
    assert sum(line.startswith("stage ") for line in lines) == 6
    assert "cli-1: succeeded" in out.stdout and "answer: " in out.stdout
    assert "succeeded" in aragog("status", "cli-1", stack=stack).stdout
    bad = aragog("submit", "cli-chain", "x", "--policy", "fastest", stack=stack)
    assert bad.returncode == 2 and bad.stderr.startswith("aragog: INVALID_ARGUMENT: unknown policy")
    done = aragog("cancel", "cli-1", stack=stack)  # a finished request stays as it finished
    assert done.returncode == 0 and "cli-1: succeeded" in done.stdout
    gone = aragog("cancel", "no-such-request", stack=stack)
    assert gone.returncode == 2 and gone.stderr.startswith("aragog: NOT_FOUND")
    told = aragog("outcome", "cli-1", "1", stack=stack)  # the outcome hook
    assert told.returncode == 0 and "credited to llama3-3b" in told.stdout, told.stderr
    again = aragog("outcome", "cli-1", "0", stack=stack)
    assert again.returncode == 2 and again.stderr.startswith("aragog: ALREADY_EXISTS")
