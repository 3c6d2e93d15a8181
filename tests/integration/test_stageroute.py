"""The outcome hook and StageRoute end to end: outcomes reported through the router steer
which models the scheduler keeps deployed (its maintenance windows, through the live pool)
and where `stageroute` sends requests (EMULATED models; the test is the grader)."""

from __future__ import annotations

import math
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from aragog.stack import Stack, shipped_workflow
from aragog.v1 import common_pb2, router_pb2, scheduler_pb2, scheduler_pb2_grpc

pytestmark = pytest.mark.integration
S, M, L = "llama3-3b", "llama3-8b", "llama3-70b"
WINDOW_S = 2.0


@pytest.fixture(scope="module")
def own_stack(redis_url, tmp_path_factory, tls_env):
    s = Stack(
        redis_url=redis_url, executors=2, namespace=f"r{uuid.uuid4().hex[:8]}",
        log_dir=str(tmp_path_factory.mktemp("stageroute-stack")),
        extra_env={"ARAGOG_DEPLOYMENT_WINDOW_S": str(WINDOW_S), "ARAGOG_MAX_DEPLOYED": "1",
                   "ARAGOG_DEPLOYMENT_BUDGET": "1", **tls_env},
    )
    s.start(timeout_s=180)
    s.register(shipped_workflow("chain3"))
    yield s
    s.stop()


def run(s: Stack, policy: str) -> common_pb2.RequestStatus:
    events, _ = s.submit("chain3", f"question {uuid.uuid4().hex[:6]}", policy=policy)
    status = events[-1].completed
    assert status.state == common_pb2.REQUEST_STATE_SUCCEEDED, status.error
    return status


def majority(status: common_pb2.RequestStatus) -> str:
    """The model credited with a request's outcome: the one of most stages (ties: larger)."""
    models = [st.model for st in status.stages]
    size = {S: 0, M: 1, L: 2}
    return max(set(models), key=lambda m: (models.count(m), size[m]))


def report(s: Stack, rid: str, reward: float) -> str:
    with s.router() as r:
        return r.ReportOutcome(router_pb2.ReportOutcomeRequest(request_id=rid, reward=reward),
                               timeout=10).model


def test_bad_outcome_reports_are_refused_and_change_nothing(own_stack):
    s = own_stack
    done = run(s, f"static:{S},{S},{M}")
    cases = [
        (done.request_id, 1.5, grpc.StatusCode.INVALID_ARGUMENT, "within 0"),
        (done.request_id, math.nan, grpc.StatusCode.INVALID_ARGUMENT, "within 0"),
        ("no-such-request", 1.0, grpc.StatusCode.NOT_FOUND, "no request"),
        ("bad:id", 1.0, grpc.StatusCode.INVALID_ARGUMENT, "request_id"),
    ]
    for rid, reward, code, words in cases:
        with pytest.raises(grpc.RpcError) as err:
            report(s, rid, reward)
        assert err.value.code() == code and words in err.value.details(), err.value.details()
    assert report(s, done.request_id, 0.0) == majority(done), "credited: most stages' model"
    with pytest.raises(grpc.RpcError) as err:
        report(s, done.request_id, 1.0)
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS


def test_outcomes_steer_the_deployment_and_the_routing(own_stack):
    """The 8B answers right, the others wrong (the test grades by the model that served):
    from the outcomes reported, StageRoute's windows keep only the 8B deployed (M_max = 1)
    and its routing sends every request there."""
    s = own_stack
    want = {S: "unloaded", M: "serving", L: "unloaded"}
    ran: list[str] = []

    def one(_: int) -> None:
        status = run(s, "stageroute")
        model = majority(status)
        ran.append(model)
        report(s, status.request_id, 1.0 if model == M else 0.0)

    with s.channel(s.scheduler_addr) as ch, ThreadPoolExecutor(3) as workers:
        sched = scheduler_pb2_grpc.SchedulerServiceStub(ch)
        deadline = time.monotonic() + 240
        state: dict[str, str] = {}
        while time.monotonic() < deadline and not (state == want and ran[-6:] == [M] * 6):
            list(workers.map(one, range(6)))
            state = dict(sched.GetSchedulerState(scheduler_pb2.GetSchedulerStateRequest(),
                                                 timeout=10).model_state)
        changes = sched.GetSchedulerState(scheduler_pb2.GetSchedulerStateRequest(),
                                          timeout=10).pool_changes
    assert state == want, f"{state} after {len(ran)} requests"
    assert ran[-6:] == [M] * 6
    assert {(c.action, c.model) for c in changes if c.by == "stageroute"} >= {
        ("unload", S), ("unload", L)}
