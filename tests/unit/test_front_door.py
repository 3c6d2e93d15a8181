"""The front door for requests that name no workflow (MoMA's agent routing): intent by example
inputs, masks by what the deployment can serve now, the single-model route, refusals.

On the session's real routing artifacts (llama3/voting: MiniLM embeddings of the generated
benchmark's training inputs) and real MMLU prompts (RouteLLM's recorded set)."""

from __future__ import annotations

import numpy as np
import pytest
from aragog.common.pool import load_pool
from aragog.common.settings import RouterSettings
from aragog.common.workflow import parse_workflow
from aragog.emulation import recorded
from aragog.emulation.generate import benchmark
from aragog.router import front_door
from aragog.router.http import chat_workflow
from aragog.routing import intent
from aragog.routing.context import Routing
from aragog.stack import shipped_workflow

from tests.conftest import ROUTED

FAMILY, VOTING = ROUTED

ONLY_70B = """\
id: big-only
description: one stage only the 70B may serve
stages:
  - {name: think, prompt: "{input}", candidates: [llama3-70b], output_tokens: 8}
"""


@pytest.fixture(scope="module")
def setup(artifacts_dir):
    pool = load_pool(FAMILY)
    routing = Routing(RouterSettings.from_env({"ARAGOG_ARTIFACTS_DIR": artifacts_dir}))
    wfs = {w.id: w for w in (parse_workflow(shipped_workflow(VOTING), pool.names),
                             parse_workflow(shipped_workflow("chain3"), pool.names),
                             parse_workflow(chat_workflow(pool.names), pool.names))}
    return pool, routing, wfs


def go(setup, text, deprecated=(), states=None, llm="chat", only=None, session=""):
    pool, routing, wfs = setup
    chosen = [w for k, w in wfs.items() if only is None or k in only]
    return front_door.route(text, chosen, set(deprecated), states or {}, pool, routing, llm,
                            session)


def test_fit_accepts_its_own_inputs_and_refuses_far_ones():
    rng = np.random.default_rng(0)
    centre = rng.normal(size=32)
    own = centre + 0.3 * rng.normal(size=(intent.EXAMPLES + 300, 32))
    own /= np.linalg.norm(own, axis=1, keepdims=True)
    ex = intent.fit(own)
    assert len(ex.vectors) == intent.EXAMPLES  # evenly thinned to the cap
    assert intent.fit(own[:300]).vectors.shape == (300, 32)
    fresh = centre + 0.3 * rng.normal(size=(200, 32))
    fresh /= np.linalg.norm(fresh, axis=1, keepdims=True)
    accepted = np.mean([ex.score(v) >= ex.threshold for v in fresh])
    assert accepted > 0.9  # ~ACCEPT of inputs like its own
    far = rng.normal(size=(50, 32))
    far /= np.linalg.norm(far, axis=1, keepdims=True)
    assert not any(ex.score(v) >= ex.threshold for v in far)
    with pytest.raises(ValueError, match="at least"):
        intent.fit(own[:intent.K])


def test_a_workflows_own_held_out_inputs_go_to_it(setup):
    items = benchmark(VOTING).split("test")[:20]
    routes = [go(setup, it.input) for it in items]
    assert sum(wf.id == VOTING for wf, _ in routes) >= 18
    wf, how = next(r for r in routes if r[0].id == VOTING)
    assert how.route == "agent" and how.score >= how.threshold and how.nearest == VOTING
    # chain3 has no routing artifacts in this directory: masked, and said why
    assert any(m.startswith("chain3: no intent examples") for m in how.masked)


def test_an_mmlu_question_takes_the_single_model_route(setup):
    prompts = [r.prompt for r in recorded.records()[:200:10]]
    routes = [go(setup, p) for p in prompts]
    assert sum(wf.id == "chat" for wf, _ in routes) >= 18
    wf, how = next(r for r in routes if r[0].id == "chat")
    assert how.route == "llm" and how.nearest == VOTING and how.score == 0.0


def test_masks_move_an_input_elsewhere_and_refusals_say_why(setup):
    text = benchmark(VOTING).split("test")[0].input
    assert go(setup, text)[0].id == VOTING
    wf, how = go(setup, text, deprecated=[VOTING])
    assert wf.id == "chat" and f"{VOTING}: deprecated" in how.masked
    # nothing fits and no single-model workflow: refused, with what to do
    with pytest.raises(front_door.NoRoute, match="ARAGOG_LLM_WORKFLOW"):
        go(setup, text, deprecated=[VOTING], llm="")
    with pytest.raises(front_door.NoRoute, match="not registered"):
        go(setup, text, deprecated=[VOTING], llm="nope")
    with pytest.raises(front_door.NoRoute, match="chat cannot serve now"):
        go(setup, text, deprecated=[VOTING, "chat"])


def test_a_stage_without_a_serving_model_masks_its_workflow(setup):
    pool = setup[0]
    big = parse_workflow(ONLY_70B, pool.names)
    assert front_door.masks([big], set(), {}, pool) == {}
    assert front_door.masks([big], set(), {"llama3-70b": "loading"}, pool) == {}
    for state in ("draining", "unloaded", "failed"):
        assert front_door.masks([big], set(), {"llama3-70b": state}, pool) == {
            "big-only": "stage think has no serving model"}


def test_a_session_keeps_its_workflow_while_nothing_else_fits(setup):
    mcq = benchmark(VOTING).split("test")[1].input
    follow_up = recorded.records()[7].prompt  # fits no workflow (alone: the llm route)
    assert go(setup, follow_up)[0].id == "chat"
    wf, how = go(setup, follow_up, session=VOTING)  # a follow-up in a voting conversation
    assert wf.id == VOTING and how.route == "session" and how.session_workflow == VOTING
    assert how.score < how.threshold  # kept by the context, not by the intent
    wf, how = go(setup, mcq, session=VOTING)
    assert wf.id == VOTING and how.route == "session" and how.score >= how.threshold
    # an input that fits another workflow leaves the conversation's (here: the llm route's)
    wf, how = go(setup, mcq, session="chat")
    assert wf.id == VOTING and how.route == "agent" and how.session_workflow == "chat"
    # a session on a workflow without intent examples (it was named) keeps it too
    assert go(setup, follow_up, session="chain3")[0].id == "chain3"
    # the session's workflow masked: the context cannot hold the request there
    wf, how = go(setup, follow_up, session=VOTING, deprecated=[VOTING])
    assert wf.id == "chat" and how.route == "llm" and how.session_workflow == VOTING
    assert go(setup, follow_up, session="gone")[0].id == "chat"  # unknown: no context
