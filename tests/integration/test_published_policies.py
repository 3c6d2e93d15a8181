"""Published routers in the running stack: RouteLLM per request (bound at admission) and per
stage (decided at admission, applied by the scheduler's stage role), on the session's
trained voting workflow (real MiniLM embeddings, EMULATED model answers)."""

from __future__ import annotations

import pytest
from aragog import policies
from aragog.common.pool import load_pool
from aragog.common.settings import RouterSettings
from aragog.common.workflow import parse_workflow
from aragog.emulation.generate import benchmark
from aragog.policies.routellm import strong_weak
from aragog.routing.context import Routing
from aragog.stack import shipped_workflow
from aragog.v1 import common_pb2

from tests.conftest import ROUTED

pytestmark = pytest.mark.integration
FAMILY, WORKFLOW = ROUTED


@pytest.fixture(scope="module")
def wf(stack):
    stack.register(shipped_workflow(WORKFLOW))
    return parse_workflow(shipped_workflow(WORKFLOW), load_pool(FAMILY).names)


@pytest.fixture(scope="module")
def routing(artifacts_dir):
    return Routing(RouterSettings.from_env({"ARAGOG_ARTIFACTS_DIR": artifacts_dir}))


def ran(stack, text: str, policy: str) -> list[str]:
    events, _ = stack.submit(WORKFLOW, text, policy=policy, timeout_s=60)
    status = events[-1].completed
    assert status.state == common_pb2.REQUEST_STATE_SUCCEEDED, status.error
    return [s.model for s in status.stages]


@pytest.mark.parametrize("mode", ["", ":stage"])
def test_the_share_of_strong_calls_moves_every_stage_to_one_end(stack, wf, mode):
    strong, weak = strong_weak(wf, load_pool(FAMILY))
    text = benchmark(WORKFLOW).split("test")[0].input
    assert ran(stack, text, f"routellm:mf@1{mode}") == strong
    assert ran(stack, text, f"routellm:clf@0{mode}") == weak


def test_the_scheduler_places_each_stage_where_the_stage_role_says(stack, wf, routing):
    """At a middle share the per-stage router sends some stages of a request strong and
    others weak; the models that ran are exactly its decisions, stage by stage."""
    pool = load_pool(FAMILY)
    strong, weak = strong_weak(wf, pool)
    policy = policies.make("routellm:mf@0.5:stage")
    mixed = 0
    for item in benchmark(WORKFLOW).split("test")[:6]:
        decided = policy.stage_state(wf, pool, item.input, routing)
        want = [strong[i] if decided[i] else weak[i] for i in range(len(wf.llm_stages))]
        assert ran(stack, item.input, "routellm:mf@0.5:stage") == want
        mixed += 0 < sum(decided) < len(decided)
    assert mixed, "no request had both strong and weak stages: the test shows nothing"


def test_per_request_routing_binds_one_end(stack, wf, routing):
    pool = load_pool(FAMILY)
    strong, weak = strong_weak(wf, pool)
    policy = policies.make("routellm:clf@0.5")
    seen = set()
    for item in benchmark(WORKFLOW).split("test")[:6]:
        (c,) = policy.admit(wf, pool, item.input, routing)
        want = wf.config_models(int(c))
        assert want in (strong, weak)
        assert ran(stack, item.input, "routellm:clf@0.5") == want
        seen.add(tuple(want))
    assert len(seen) == 2, "every request went one way: the test shows nothing"


def test_flowcompile_binds_the_member_of_its_compiled_set_the_preference_asks_for(stack, wf,
                                                                                routing):
    pool = load_pool(FAMILY)
    text = benchmark(WORKFLOW).split("test")[1].input
    largest = wf.config_models(int(policies.make("largest").admit(wf, pool)[0]))
    assert ran(stack, text, "flowcompile:0") == largest
    for spec in ("flowcompile:1", "flowcompile:acc>=0.9"):
        (c,) = policies.make(spec).admit(wf, pool, text, routing)
        assert ran(stack, text, spec) == wf.config_models(int(c))
    art = routing.artifacts(wf, pool)
    assert art.summary["flowcompile"]["measured"] < art.space.size


def test_agentrouter_places_each_stage_on_its_classified_tier(stack, wf, routing):
    pool = load_pool(FAMILY)
    policy = policies.make("agentrouter")
    for item in benchmark(WORKFLOW).split("test")[:3]:
        tiers = policy.stage_state(wf, pool, item.input, routing)
        want = [policy.stage(policies.StageView("r", wf, pool, s.name, i, tuple(s.candidates),
                                                {}, tiers))
                for i, s in enumerate(wf.llm_stages)]
        assert ran(stack, item.input, "agentrouter") == want
