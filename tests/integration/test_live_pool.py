"""The pool changes while it serves: a model unloaded, loaded again and a new one added,
under load, with no request failing (the embedded Triton, EMULATED models).

The stack has its own pool, since the test unloads and adds models of it; the scheduler
drives the pool's Triton through Triton's model-repository API (ARAGOG_MODEL_CONTROL=triton,
as aragog-stack sets it). The model added mid-run is in the pool's reserve: in Triton's
model repository, not loaded, as an operator would have put it there.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import threading
import time
import uuid

import grpc
import pytest
import tritonclient.grpc as tritonclient
import yaml
from aragog.common.pool import load_pool, pool_file
from aragog.stack import Stack, shipped_workflow
from aragog.v1 import (
    common_pb2,
    load_monitor_pb2,
    load_monitor_pb2_grpc,
    scheduler_pb2,
    scheduler_pb2_grpc,
)

pytestmark = pytest.mark.integration
BIG, SMALL = "llama3-70b", "llama3-8b"
NEW = "llama3-8b-next"  # a model that arrives mid-run: the 8B's profile under a new name
ONLY_NEW = f"""\
id: on-the-new-model
description: Every stage on the model added while the stack serves.
stages:
  - name: answer
    kind: llm
    prompt: "{{input}}"
    candidates: [{NEW}]
    output_tokens: 16
"""
ONLY_BIG = f"""\
id: on-the-big-model
description: A stage only the largest model may serve.
stages:
  - name: answer
    kind: llm
    prompt: "{{input}}"
    candidates: [{BIG}]
    output_tokens: 16
"""


def new_profile() -> dict:
    return {**dataclasses.asdict(load_pool().model(SMALL)), "name": NEW}


@pytest.fixture(scope="module")
def own_stack(redis_url, tmp_path_factory, tls_env):
    log_dir = tmp_path_factory.mktemp("live-pool-stack")
    pool = pool_file()
    pool["reserve"] = [new_profile()]
    (log_dir / "pool.yaml").write_text(yaml.safe_dump(pool), encoding="utf-8")
    s = Stack(
        redis_url=redis_url, executors=2, namespace=f"p{uuid.uuid4().hex[:8]}",
        log_dir=str(log_dir),
        extra_env={"ARAGOG_LEASE_TTL_S": "3", "ARAGOG_CLAIM_IDLE_S": "1.5",
                   "ARAGOG_DEFAULT_POLICY": "largest",
                   "ARAGOG_POOL_FILE": str(log_dir / "pool.yaml"), **tls_env},
    )
    s.start(timeout_s=180)
    yield s
    s.stop()


class Load:
    """Requests of `workflows` back to back from `workers` threads until stopped; each
    request's final state and the models its stages ran on."""

    def __init__(self, stack: Stack, workflows: list[str], workers: int = 4):
        self.stack, self.workflows = stack, workflows
        self.stop = threading.Event()
        # (start, end, workflow, state, models) of each request
        self.done: list[tuple[float, float, str, int, list[str]]] = []
        self.errors: list[str] = []
        self.threads = [threading.Thread(target=self._run, args=(i,)) for i in range(workers)]

    def _run(self, i: int) -> None:
        n = 0
        while not self.stop.is_set():
            wid = self.workflows[n % len(self.workflows)]
            n += 1
            start = time.monotonic()
            try:
                events, _ = self.stack.submit(wid, f"question {i}-{n}: how many orders?",
                                              timeout_s=120)
            except grpc.RpcError as e:
                self.errors.append(f"{wid}: {e.code().name} {e.details()}")
                continue
            status = events[-1].completed
            self.done.append((start, time.monotonic(), wid, status.state,
                              [st.model for st in status.stages]))

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=180)


def wait_state(sched, model: str, want: str, timeout_s: float = 90.0) -> float:
    """Poll the scheduler until `model` is in state `want`; the monotonic time it was."""
    deadline = time.monotonic() + timeout_s
    state = ""
    while time.monotonic() < deadline:
        state = sched.GetSchedulerState(scheduler_pb2.GetSchedulerStateRequest(),
                                        timeout=10).model_state.get(model, "")
        if state == want:
            return time.monotonic()
        assert state != "failed", f"{model} failed (see the scheduler's pool_changes)"
        time.sleep(0.1)
    raise AssertionError(f"{model} is {state!r} after {timeout_s} s, not {want!r}")


def test_models_unloaded_loaded_and_added_under_load_fail_no_request(own_stack):
    s = own_stack
    triton = tritonclient.InferenceServerClient(s.triton_url)
    s.register(shipped_workflow("chain3"))
    profile = new_profile()
    assert not triton.is_model_ready(NEW), "in the repository, not loaded"
    with s.channel(s.scheduler_addr) as ch, Load(s, ["chain3"]) as load:
        sched = scheduler_pb2_grpc.SchedulerServiceStub(ch)
        time.sleep(3)
        assert sched.UnloadModel(scheduler_pb2.UnloadModelRequest(model=BIG, by="test"),
                                 timeout=10).state == "draining"
        gone = wait_state(sched, BIG, "unloaded")
        assert not triton.is_model_ready(BIG), "the model server has unloaded it"
        # requests go on without it: wait until some that started after it left have ended
        deadline = time.monotonic() + 90
        while sum(start > gone for start, *_ in list(load.done)) < 4:
            assert time.monotonic() < deadline, "no request ended while the 70B was away"
            time.sleep(0.2)
        assert sched.LoadModel(scheduler_pb2.LoadModelRequest(model=BIG, by="test"),
                               timeout=10).state == "loading"
        back = wait_state(sched, BIG, "serving")
        assert triton.is_model_ready(BIG)
        added = sched.AddModel(scheduler_pb2.AddModelRequest(
            profile_json=json.dumps(profile), by="test"), timeout=10)
        assert (added.model, added.state) == (NEW, "loading")
        wait_state(sched, NEW, "serving")
        assert triton.is_model_ready(NEW)
        s.register(ONLY_NEW)  # a workflow that names it: no service restarts
        load.workflows.append("on-the-new-model")
        time.sleep(5)
        state = sched.GetSchedulerState(scheduler_pb2.GetSchedulerStateRequest(), timeout=10)
    assert not load.errors, load.errors[:3]
    assert len(load.done) >= 20, f"only {len(load.done)} requests ran"
    failed = [d for d in load.done if d[3] != common_pb2.REQUEST_STATE_SUCCEEDED]
    assert not failed, f"{len(failed)} of {len(load.done)} requests failed"
    without = [m for start, end, _, _, m in load.done if gone < start and end < back]
    assert without and all(BIG not in m for m in without), "served without it, by the others"
    assert any(BIG in m for start, *_, m in load.done if start > back), "and with it again"
    assert any(m == [NEW] for _, _, wid, _, m in load.done if wid == "on-the-new-model")
    assert state.model_state == {"llama3-3b": "serving", SMALL: "serving", BIG: "serving",
                                 NEW: "serving"}
    changes = [(c.action, c.model, c.state, c.by) for c in state.pool_changes]
    assert changes == [("unload", BIG, "draining", "test"), ("unloaded", BIG, "unloaded", ""),
                       ("load", BIG, "loading", "test"), ("loaded", BIG, "serving", ""),
                       ("add", NEW, "loading", "test"), ("loaded", NEW, "serving", "")]
    with s.channel(s.load_monitor_addr) as ch:
        snap = load_monitor_pb2_grpc.LoadMonitorServiceStub(ch).GetLoad(
            load_monitor_pb2.GetLoadRequest(), timeout=10).snapshot
    assert {m.model: m.state for m in snap.models}[NEW] == "serving"


def test_pool_changes_that_would_strand_work_or_are_malformed_are_refused(own_stack):
    s = own_stack
    s.register(ONLY_BIG)
    with s.channel(s.scheduler_addr) as ch:
        sched = scheduler_pb2_grpc.SchedulerServiceStub(ch)
        cases = [
            (lambda: sched.UnloadModel(scheduler_pb2.UnloadModelRequest(model=BIG), timeout=10),
             grpc.StatusCode.FAILED_PRECONDITION, "on-the-big-model"),
            (lambda: sched.UnloadModel(scheduler_pb2.UnloadModelRequest(model="gpt-9"), timeout=10),
             grpc.StatusCode.NOT_FOUND, "no model"),
            (lambda: sched.AddModel(scheduler_pb2.AddModelRequest(profile_json="{"), timeout=10),
             grpc.StatusCode.INVALID_ARGUMENT, "pool-file model entry"),
            (lambda: sched.AddModel(scheduler_pb2.AddModelRequest(
                profile_json=json.dumps({"name": "x"})), timeout=10),
             grpc.StatusCode.INVALID_ARGUMENT, "lacks"),
            (lambda: sched.AddModel(scheduler_pb2.AddModelRequest(
                profile_json=json.dumps(dataclasses.asdict(load_pool().model(SMALL)))),
                timeout=10),
             grpc.StatusCode.ALREADY_EXISTS, "in the pool already"),
            (lambda: sched.AddModel(scheduler_pb2.AddModelRequest(profile_json="x" * 5000),
                                    timeout=10),
             grpc.StatusCode.INVALID_ARGUMENT, "at most"),
        ]
        for call, code, words in cases:
            with pytest.raises(grpc.RpcError) as err:
                call()
            assert err.value.code() == code and words in err.value.details(), err.value.details()
        state = sched.GetSchedulerState(scheduler_pb2.GetSchedulerStateRequest(), timeout=10)
    assert state.model_state[BIG] == "serving", "a refused change changes nothing"
    assert "x" not in state.model_state


def test_a_restarted_scheduler_keeps_the_pool_as_it_was_changed(own_stack):
    """The added model and every state live in Redis: a new scheduler process (a restart,
    or a standby taking over) serves the pool as the operator left it."""
    s = own_stack
    with s.channel(s.scheduler_addr) as ch:
        before = scheduler_pb2_grpc.SchedulerServiceStub(ch).GetSchedulerState(
            scheduler_pb2.GetSchedulerStateRequest(), timeout=10)
    assert NEW in before.model_state, "runs after the test that adds it"
    s.restart("scheduler")
    with s.channel(s.scheduler_addr) as ch:
        after = scheduler_pb2_grpc.SchedulerServiceStub(ch).GetSchedulerState(
            scheduler_pb2.GetSchedulerStateRequest(), timeout=10)
    assert dict(after.model_state) == dict(before.model_state)
    assert after.capacity[NEW] == before.capacity[NEW]
    assert list(after.pool_changes) == list(before.pool_changes)
    events, _ = s.submit("on-the-new-model", "still there?", timeout_s=60)
    status = events[-1].completed
    assert status.state == common_pb2.REQUEST_STATE_SUCCEEDED
    assert [st.model for st in status.stages] == [NEW]


def test_aragog_models_changes_the_pool_from_the_command_line(own_stack, tls_env):
    """`aragog-models` as the README gives it, with the services' TLS settings if any."""
    s = own_stack
    env = {**os.environ, **tls_env}

    def cli(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "aragog.scheduler.admin", "--scheduler",
                               s.scheduler_addr, *args], env=env, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert cli("unload", "llama3-3b", "--wait", "--by", "cli").strip() == "llama3-3b: unloaded"
    assert cli("load", "llama3-3b", "--wait").strip() == "llama3-3b: serving"
    state = cli("state")
    assert "llama3-3b: serving" in state and f"{NEW}: serving" in state
    assert "unload llama3-3b -> draining by cli" in state
    bad = subprocess.run([sys.executable, "-m", "aragog.scheduler.admin", "--scheduler",
                          s.scheduler_addr, "unload", "no-such-model"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "NOT_FOUND" in bad.stderr
