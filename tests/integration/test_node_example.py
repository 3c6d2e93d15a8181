"""The Node.js example (examples/node): installed with `npm ci` from its lock file, it calls
the live router through server reflection alone and streams a request's events."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from aragog.stack import shipped_workflow

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "node"


@pytest.fixture(scope="session")
def node_example(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of examples/node (without node_modules) with its locked dependencies installed.
    Session-scoped and named before `stack`, so a missing Node fails before the stack starts."""
    missing = [tool for tool in ("node", "npm") if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"{' and '.join(missing)} not on PATH: the Node example test needs Node.js "
                    "20+ with npm (and the npm registry, or a configured mirror)")
    work = tmp_path_factory.mktemp("node") / "example"
    shutil.copytree(EXAMPLE, work, ignore=shutil.ignore_patterns("node_modules"))
    install = subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=work,
                             capture_output=True, text=True, timeout=240)
    assert install.returncode == 0, f"npm ci failed:\n{install.stdout}\n{install.stderr}"
    return work


def submit(example: Path, stack, workflow: str, text: str):
    ca = stack.extra_env.get("ARAGOG_TLS_CA_FILE")
    return subprocess.run(
        ["node", "submit.js", "--router", stack.router_addr, "--workflow", workflow,
         "--policy", "largest", *(["--ca", ca] if ca else []), text],
        cwd=example, capture_output=True, text=True, timeout=120,
    )


def test_node_example_streams_a_request_to_success(node_example, stack):
    stack.register(shipped_workflow("chain3"))
    run = submit(node_example, stack, "chain3", "How many orders?")
    assert run.returncode == 0, f"exit {run.returncode}\n{run.stdout}\n{run.stderr}"
    events = [json.loads(line) for line in run.stdout.splitlines() if line.strip()]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "admitted" and kinds[-1] == "completed", kinds
    assert kinds.count("stage_started") == 3 and kinds.count("stage_finished") == 3, kinds
    assert len({e["request_id"] for e in events}) == 1
    assert events[0]["admitted"]["policy"] == "largest"
    done = events[-1]["completed"]
    assert done["state"] == "REQUEST_STATE_SUCCEEDED" and done["answer"], done
    assert [s["stage"] for s in done["stages"]] == [
        e["stage_finished"]["stage"] for e in events if e["event"] == "stage_finished"]


def test_node_example_reports_an_unknown_workflow_as_a_grpc_error(node_example, stack):
    run = submit(node_example, stack, "no-such-workflow", "hi")
    assert run.returncode == 2, f"exit {run.returncode}\n{run.stdout}\n{run.stderr}"
    # The router rejects an unknown workflow before admitting anything.
    assert "INVALID_ARGUMENT" in run.stderr and "unknown workflow" in run.stderr, run.stderr
    assert run.stdout == ""
