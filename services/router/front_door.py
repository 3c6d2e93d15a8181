"""The front door for a request that names no workflow (MoMA's agent routing).

A small state machine, run once per such request, on what the deployment is now and on
the request's conversation (its session: the workflow the session's last request ran):

    CLASSIFY  score the input against every registered workflow's intent (its example
              inputs, aragog.routing.intent), best first
    MASK      drop the workflows that cannot serve it now: deprecated ones, ones with a stage
              none of whose candidate models is serving (an operator or StageRoute unloaded
              them), ones with no intent examples (no routing artifacts built)
    SESSION   the session's workflow, if it is not masked, keeps the request when the input
              still fits it or fits no other workflow (a follow-up such as "and last year?"
              looks like nothing; it belongs to its conversation)
    AGENT     else the best workflow left whose score reaches its threshold runs it
    LLM       none does: the single-model workflow (ARAGOG_LLM_WORKFLOW) runs it, if it is
              set and can serve; otherwise the request is refused, saying why

The masks are the "dynamic" part: the same input goes to another workflow, or to a single
model, while the one it fits best is unloaded or deprecated, with no retraining. Which
configuration (which models) then serves the chosen workflow is the request's policy's
decision as for any request; `moma` picks by predicted accuracy against cost.
"""

from __future__ import annotations

import dataclasses

from aragog.common.pool import PoolSpec
from aragog.common.workflow import WorkflowDef
from aragog.routing import intent
from aragog.routing.context import Routing
from aragog.v1 import router_pb2

SERVING = ("serving", "loading")
"""Model states a stage may count on (a loading model serves once loaded)."""


class NoRoute(Exception):
    """No workflow can take the request; the message says why and what would fix it."""


@dataclasses.dataclass(frozen=True)
class Candidate:
    workflow: WorkflowDef
    score: float
    threshold: float


MAX_MASKED = 16
"""Masked workflows an IntentRoute lists at most (it is stored with every admitted event)."""


def _bounded(why: list[str]) -> list[str]:
    if len(why) <= MAX_MASKED:
        return why
    return [*why[:MAX_MASKED - 1], f"... and {len(why) - MAX_MASKED + 1} more"]


def masks(workflows: list[WorkflowDef], deprecated: set[str], states: dict[str, str],
          pool: PoolSpec) -> dict[str, str]:
    """Workflow id -> why it cannot serve now (MASK, without the intent examples)."""
    names = set(pool.names)
    out = {}
    for wf in workflows:
        if wf.id in deprecated:
            out[wf.id] = "deprecated"
            continue
        for st in wf.llm_stages:
            if not any(m in names and states.get(m, "serving") in SERVING for m in st.candidates):
                out[wf.id] = f"stage {st.name} has no serving model"
                break
    return out


def classify(text: str, workflows: list[WorkflowDef], pool: PoolSpec,
             routing: Routing) -> tuple[list[Candidate], dict[str, str]]:
    """CLASSIFY: each workflow's score and threshold, the largest margin first; and the
    workflows with no intent examples, with why (blocking: loads artifacts, embeds)."""
    candidates, missing = [], {}
    embedding = None
    for wf in workflows:
        art = routing.artifacts(wf, pool)
        examples = art.companion(intent.FILENAME, intent.Examples.load) if art else None
        if examples is None:
            missing[wf.id] = "no intent examples (build its routing artifacts)"
            continue
        if embedding is None:
            embedding = routing.embedder.encode([text])[0]
        candidates.append(Candidate(wf, examples.score(embedding), examples.threshold))
    candidates.sort(key=lambda c: c.score - c.threshold, reverse=True)
    return candidates, missing


def route(text: str, workflows: list[WorkflowDef], deprecated: set[str],
          states: dict[str, str], pool: PoolSpec, routing: Routing,
          llm_workflow: str, session: str = "") -> tuple[WorkflowDef, router_pb2.IntentRoute]:
    """The workflow the request runs and how it was chosen; `session`: the workflow the
    request's session is on ('' if none). Blocking: call it off the event loop."""
    masked = masks(workflows, deprecated, states, pool)
    by_id = {w.id: w for w in workflows}
    llm = by_id.get(llm_workflow)
    # a session stays on a workflow that can serve, intent examples or not (it was named)
    kept = by_id.get(session) if session not in masked else None
    candidates, missing = classify(
        text, [w for w in workflows if w.id not in masked and w.id != llm_workflow], pool,
        routing)
    masked.update(missing)
    if kept is not None:  # named before, it serves without intent examples
        masked.pop(kept.id, None)
    why = _bounded(sorted(f"{k}: {v}" for k, v in masked.items()))
    best = candidates[0] if candidates else None
    nearest = best.workflow.id if best else ""
    fits = best is not None and best.score >= best.threshold
    if kept is not None:
        own = next((c for c in candidates if c.workflow.id == session), None)
        if not fits or (own is not None and own.score >= own.threshold):
            return kept, router_pb2.IntentRoute(
                route="session", score=own.score if own else 0.0,
                threshold=own.threshold if own else 0.0, nearest=nearest, masked=why,
                session_workflow=session)
    if fits:
        return best.workflow, router_pb2.IntentRoute(
            route="agent", score=best.score, threshold=best.threshold, nearest=nearest,
            masked=why, session_workflow=session)
    if llm is not None and llm.id not in masked:
        return llm, router_pb2.IntentRoute(route="llm", nearest=nearest, masked=why,
                                           session_workflow=session)
    near = (f"the nearest, {best.workflow.id}, scored {best.score:.3f} under its threshold "
            f"{best.threshold:.3f}" if best else "none has intent examples to compare with")
    if not llm_workflow:
        fallback = ("no single-model workflow is configured (ARAGOG_LLM_WORKFLOW): name a "
                    "workflow_id, or configure one")
    elif llm is None:
        fallback = (f"the single-model workflow {llm_workflow} (ARAGOG_LLM_WORKFLOW) is not "
                    "registered")
    else:
        fallback = f"the single-model workflow {llm.id} cannot serve now ({masked[llm.id]})"
    detail = f" (masked: {'; '.join(why)})" if why else ""
    raise NoRoute(f"no registered workflow fits this input: {near}{detail}; and {fallback}")
