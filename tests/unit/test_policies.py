import numpy as np
import pytest
from aragog import policies
from aragog.common.pool import load_pool
from aragog.common.workflow import parse_workflow
from aragog.stack import shipped_workflow


@pytest.fixture(scope="module")
def wf():
    return parse_workflow(shipped_workflow("chain3"), load_pool().names)


def models_of(wf, f_r):
    assert f_r is not None and len(f_r) == 1 and f_r.dtype == np.int64
    return wf.config_models(int(f_r[0]))


def test_registry_knows_the_policies():
    assert {"aragog", "per-input", "per-workflow", "static", "largest", "cheapest", "any"} <= set(
        policies.names())


def test_any_admits_every_configuration_explicitly(wf):
    assert policies.make("any").admit(wf, load_pool(), "hi") is policies.ALL


def test_policies_needing_artifacts_refuse_without_them(wf, tmp_path):
    """No silent fallback: without a router, aragog would lose its accuracy guarantee."""
    from aragog.common.settings import RouterSettings
    from aragog.routing.context import Routing

    routing = Routing(RouterSettings.from_env({"ARAGOG_ARTIFACTS_DIR": str(tmp_path)}))
    for name in ("aragog", "per-input"):
        with pytest.raises(policies.ArtifactsUnavailable, match="no routing artifacts in") as e:
            policies.make(name).admit(wf, load_pool(), "hi", routing)
        assert "aragog-routing build" in str(e.value)


def test_bound_policies_pick_one_configuration(wf):
    pool = load_pool()
    assert models_of(wf, policies.make("largest").admit(wf, pool)) == ["llama3-70b"] * 3
    assert models_of(wf, policies.make("cheapest").admit(wf, pool)) == ["llama3-3b"] * 3
    assert models_of(wf, policies.make("per-workflow").admit(wf, pool)) == list(wf.per_workflow)
    static = policies.make("static:llama3-8b,llama3-3b,llama3-70b")
    assert models_of(wf, static.admit(wf, pool)) == ["llama3-8b", "llama3-3b", "llama3-70b"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [("nope", "unknown policy"), ("static:", "needs models"), ("largest:x", "takes no argument")],
)
def test_bad_policy_names(spec, message):
    with pytest.raises(policies.PolicyError, match=message):
        policies.make(spec)


def test_static_with_wrong_models_is_rejected(wf):
    with pytest.raises(policies.PolicyError, match="3 LLM stages"):
        policies.make("static:llama3-8b").admit(wf, load_pool())
    with pytest.raises(policies.PolicyError, match="not a candidate"):
        policies.make("static:llama3-8b,llama3-8b,gpt-x").admit(wf, load_pool())


def test_per_input_modes_parse_their_argument():
    assert policies.make("per-input").mode == "profiled"
    assert policies.make("per-input:router").learned
    load_aware = policies.make("per-input:load")
    assert load_aware.wants_load and not load_aware.overlap
    with pytest.raises(policies.PolicyError, match="takes profiled, router, load"):
        policies.make("per-input:fastest")


def test_load_aware_binding_avoids_the_queued_model():
    from aragog.routing.space import build
    from aragog.v1 import common_pb2

    pool = load_pool("llama3")
    wf = parse_workflow(shipped_workflow("chain3"), pool.names)
    space = build(wf, pool)
    small = wf.config_index(["llama3-8b"] * 3)
    large = wf.config_index(["llama3-70b"] * 3)
    both = np.array(sorted([small, large]))
    idle = {}
    assert policies.least_loaded(space, both, idle) == small  # faster and cheaper when idle
    cap = pool.model("llama3-8b").capacity
    busy = {"llama3-8b": common_pb2.ModelLoad(model="llama3-8b", leased=cap, triton_pending=4 * cap)}
    assert policies.least_loaded(space, both, busy) == large  # the 8B's queue outweighs it


class _EveryStageSecond(policies.Policy):
    """Unregistered (no name): admits every configuration, puts each stage on its second
    candidate, or on none for a stage named in its state."""

    decides_stages = True

    def admit(self, workflow, pool, request_input="", routing=None, load=None):
        return policies.ALL

    def stage_state(self, workflow, pool, request_input, routing=None):
        return request_input.encode()

    def stage(self, view):
        return None if view.stage in view.state.decode() else view.options[1]


def test_decided_configuration_composes_the_stage_roles_picks(wf):
    pool = load_pool()
    second = [s.candidates[1] for s in wf.llm_stages]
    policy = _EveryStageSecond()
    assert wf.config_models(policies.decided_configuration(policy, wf, pool, "", None)) == second
    # one stage left to the round: the configuration is not decided at admission
    assert policies.decided_configuration(policy, wf, pool, wf.llm_stages[1].name, None) is None
    largest = policies.make("largest")
    assert policies.decided_configuration(largest, wf, pool, "", None) == int(largest.admit(wf, pool)[0])
    assert policies.decided_configuration(policies.make("any"), wf, pool, "", None) is None
