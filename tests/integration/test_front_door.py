"""Requests that name no workflow, through the live stack: the router's front door sends each
to the workflow its input belongs to, or to the single-model workflow, and says so in the
Admitted event (real MiniLM embeddings and routing artifacts; EMULATED model answers)."""

from __future__ import annotations

import json

import grpc
import pytest
from aragog.common.pool import load_pool
from aragog.emulation import recorded
from aragog.emulation.generate import benchmark
from aragog.router.http import CHAT_WORKFLOW, chat_workflow
from aragog.stack import shipped_workflow
from aragog.v1 import common_pb2, router_pb2

from tests.conftest import ROUTED
from tests.integration.test_http import call

pytestmark = pytest.mark.integration
FAMILY, VOTING = ROUTED


@pytest.fixture(scope="module")
def registered(stack):
    stack.register(shipped_workflow(VOTING))
    try:
        stack.register(chat_workflow(list(load_pool(FAMILY).names)))
    except grpc.RpcError as e:  # another module's chat completions registered it first
        assert e.code() == grpc.StatusCode.ALREADY_EXISTS
    return stack


def admitted_and_final(events):
    assert events[0].WhichOneof("event") == "admitted"
    assert events[-1].WhichOneof("event") == "completed"
    return events[0].admitted, events[-1].completed


@pytest.mark.parametrize("policy", ["moma", "largest"])
def test_an_input_like_a_workflows_goes_to_it(registered, policy):
    item = benchmark(VOTING).split("test")[3]
    events, _ = registered.submit("", item.input, policy=policy, timeout_s=60)
    adm, final = admitted_and_final(events)
    assert adm.workflow_id == VOTING and adm.intent.route == "agent"
    assert adm.intent.score >= adm.intent.threshold > 0
    assert final.state == common_pb2.REQUEST_STATE_SUCCEEDED, final.error
    assert final.workflow_id == VOTING and len(final.stages) == 5


def test_an_input_like_none_takes_the_single_model_route(registered):
    prompt = recorded.records()[1234].prompt  # a real MMLU question
    events, _ = registered.submit("", prompt, policy="moma", timeout_s=60)
    adm, final = admitted_and_final(events)
    assert adm.workflow_id == CHAT_WORKFLOW and adm.intent.route == "llm"
    assert adm.intent.nearest == VOTING
    assert final.state == common_pb2.REQUEST_STATE_SUCCEEDED, final.error
    # chat has no routing artifacts: moma has no prediction there and takes the largest
    assert [s.model for s in final.stages] == ["llama3-70b"]


def test_a_named_workflow_is_not_second_guessed(registered):
    prompt = recorded.records()[1234].prompt
    events, _ = registered.submit(VOTING, prompt, policy="largest", timeout_s=60)
    adm, final = admitted_and_final(events)
    assert adm.workflow_id == VOTING and not adm.intent.route
    assert final.state == common_pb2.REQUEST_STATE_SUCCEEDED


def test_bad_input_is_refused_before_the_front_door(registered):
    with registered.router() as r:
        with pytest.raises(grpc.RpcError) as e:
            list(r.SubmitRequest(router_pb2.SubmitRequestRequest(input=""), timeout=10))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "input is empty" in e.value.details()


def test_the_http_door_takes_requests_without_a_workflow(registered):
    item = benchmark(VOTING).split("test")[5]
    code, text = call(registered, "POST", "/v1/requests",
                      {"input": item.input, "policy": "largest"}, accept="text/event-stream")
    assert code == 200, text
    first = next(line for line in text.splitlines() if line.startswith("data: "))
    admitted = json.loads(first[len("data: "):])["admitted"]
    assert admitted["workflow_id"] == VOTING and admitted["intent"]["route"] == "agent"
    assert '"REQUEST_STATE_SUCCEEDED"' in text


def submit(stack, text, session="", tenant=""):
    with stack.router() as r:
        return list(r.SubmitRequest(router_pb2.SubmitRequestRequest(
            input=text, policy="largest", session_id=session, tenant=tenant), timeout=60))


def test_a_session_keeps_a_follow_up_on_its_conversations_workflow(registered):
    question = benchmark(VOTING).split("test")[7].input
    follow_up = recorded.records()[99].prompt  # alone, it fits no workflow
    assert admitted_and_final(submit(registered, follow_up))[0].workflow_id == CHAT_WORKFLOW
    adm, _ = admitted_and_final(submit(registered, question, session="conv-1", tenant="acme"))
    assert adm.workflow_id == VOTING and adm.intent.route == "agent"
    adm, final = admitted_and_final(submit(registered, follow_up, session="conv-1",
                                           tenant="acme"))
    assert adm.workflow_id == VOTING and adm.intent.route == "session"
    assert adm.intent.session_workflow == VOTING
    assert final.state == common_pb2.REQUEST_STATE_SUCCEEDED, final.error
    # sessions are the tenant's own: another tenant's "conv-1" has no context
    adm, _ = admitted_and_final(submit(registered, follow_up, session="conv-1", tenant="bravo"))
    assert adm.workflow_id == CHAT_WORKFLOW and not adm.intent.session_workflow
    with pytest.raises(grpc.RpcError) as e:
        submit(registered, follow_up, session="bad id!")
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "session_id" in e.value.details()


def test_naming_no_policy_on_a_workflow_without_artifacts_runs_moma(registered):
    """The single-model route has no routing artifacts, where the default policy may need
    them (`aragog` does): a request naming neither workflow nor policy runs `moma` there."""
    with registered.router() as r:
        events = list(r.SubmitRequest(router_pb2.SubmitRequestRequest(
            input=recorded.records()[4321].prompt), timeout=60))
    adm, final = admitted_and_final(events)
    assert adm.workflow_id == CHAT_WORKFLOW and adm.policy == "moma"
    assert final.state == common_pb2.REQUEST_STATE_SUCCEEDED, final.error
    # where the workflow has artifacts, the default policy stands
    with registered.router() as r:
        events = list(r.SubmitRequest(router_pb2.SubmitRequestRequest(
            input=benchmark(VOTING).split("test")[9].input), timeout=60))
    assert events[0].admitted.workflow_id == VOTING and events[0].admitted.policy == "largest"
