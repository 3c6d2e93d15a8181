"""A model of the pool dies while the stack serves: nothing fails, nothing leaves F(r).

The stack here has its own Triton (the embedded, EMULATED pool), since the fault is real: the
Python-backend stub processes of llama3-3b (one per Triton instance) are killed, which breaks
every call to that model while Triton still reports it ready.
"""

from __future__ import annotations

import concurrent.futures
import os
import signal
import uuid

import numpy as np
import pytest
import redis
from aragog.common.pool import load_pool
from aragog.common.workflow import parse_workflow
from aragog.emulation.generate import benchmark
from aragog.stack import Stack, shipped_workflow
from aragog.v1 import common_pb2, scheduler_pb2, scheduler_pb2_grpc

from tests.conftest import ROUTED

pytestmark = pytest.mark.integration
DEAD = "llama3-3b"
EJECT_AFTER = 4
FAMILY, ROUTED_WORKFLOW = ROUTED


@pytest.fixture(scope="module")
def own_stack(redis_url, artifacts_dir, tmp_path_factory, tls_env):
    s = Stack(
        redis_url=redis_url, executors=2, namespace=f"h{uuid.uuid4().hex[:8]}",
        log_dir=str(tmp_path_factory.mktemp("health-stack")),
        extra_env={
            "ARAGOG_LEASE_TTL_S": "3",
            "ARAGOG_CLAIM_IDLE_S": "1.5",
            "ARAGOG_ARTIFACTS_DIR": artifacts_dir,
            "ARAGOG_EJECT_AFTER_FAILURES": str(EJECT_AFTER),
            "ARAGOG_EJECT_S": "120",  # stays ejected for the whole test
            **tls_env,
        },
    )
    s.start(timeout_s=180)
    yield s
    s.stop()


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def kill_model(s: Stack, model: str) -> None:
    """SIGKILL every stub process of `model` (one per Triton instance) under the pool."""
    pool = next(p for p in s.procs if p.name == "pool")
    killed = 0
    for pid in descendants(pool.popen.pid):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if any(a.endswith(b"python_backend_stub") for a in argv) and any(
                a.startswith(f"{model}_0_".encode()) for a in argv):
            os.kill(pid, signal.SIGKILL)
            killed += 1
    assert killed, f"no stub process of {model} under the pool"


def scheduler_state(s: Stack) -> scheduler_pb2.GetSchedulerStateResponse:
    with s.channel(s.scheduler_addr) as ch:
        return scheduler_pb2_grpc.SchedulerServiceStub(ch).GetSchedulerState(
            scheduler_pb2.GetSchedulerStateRequest(), timeout=5)


def run(s: Stack, wid: str, texts: list[str], policy: str) -> list[list]:
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        return list(pool.map(lambda t: s.submit(wid, t, policy=policy, timeout_s=90)[0], texts))


def attempts_on(runs: list[list], model: str) -> int:
    return sum(e.WhichOneof("event") == "stage_started" and e.stage_started.model == model
               for events in runs for e in events)


def test_a_dead_model_is_ejected_and_requests_continue_within_f_r(own_stack):
    s = own_stack
    chain = s.register(shipped_workflow("chain3")).workflow.id
    before = run(s, chain, [f"before {i}" for i in range(4)], "any")
    assert attempts_on(before, DEAD) > 0, "the cost-first round prefers the cheapest model"

    kill_model(s, DEAD)
    during = run(s, chain, [f"during {i}" for i in range(16)], "any")
    for events in during:
        status = events[-1].completed
        assert status.state == common_pb2.REQUEST_STATE_SUCCEEDED, status.error
        assert DEAD not in [st.model for st in status.stages], "no call on it succeeds"
    failed = attempts_on(during, DEAD)
    assert EJECT_AFTER <= failed <= EJECT_AFTER + 8, \
        "each failed stage retried elsewhere; ejected after EJECT_AFTER in a row"
    ejected = scheduler_state(s).ejected_s
    assert DEAD in ejected and 60 < ejected[DEAD] <= 120, ejected

    # ejected: requests that would prefer it run within their F(r), and none is placed on it
    pool = load_pool(FAMILY)
    wf = parse_workflow(shipped_workflow(ROUTED_WORKFLOW), pool.names)
    s.register(shipped_workflow(ROUTED_WORKFLOW))
    items = benchmark(ROUTED_WORKFLOW).split("test")[:12]
    after = run(s, ROUTED_WORKFLOW, [it.input for it in items], "aragog")
    assert attempts_on(after, DEAD) == 0, "no stage is placed on an ejected model"
    client = redis.Redis.from_url(s.redis_url)
    offered = 0  # requests whose F(r) holds configurations on the dead model
    try:
        for events in after:
            status = events[-1].completed
            assert status.state == common_pb2.REQUEST_STATE_SUCCEEDED, status.error
            ran = {st.stage: st.model for st in status.stages}
            config = wf.config_index([ran[st.name] for st in wf.llm_stages])
            f_r = np.frombuffer(client.get(f"{s.namespace}:req:{status.request_id}:f"),
                                dtype=np.int64)
            assert config in f_r, "an equally accurate configuration: one of F(r)"
            offered += any(DEAD in wf.config_models(int(c)) for c in f_r)
    finally:
        client.close()
    assert offered, "some of these requests' F(r) offered the dead model"
