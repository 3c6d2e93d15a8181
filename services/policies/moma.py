"""MoMA (Guo et al., "Towards Generalized Routing: Model and Agent Orchestration for Adaptive
and Efficient Inference", arXiv 2509.07571): route a query to an agent that fits it, else to
the LLM with the best predicted performance for its cost.

In Aragog the agents are the registered workflows, and the agent routing is the router's
front door (aragog.router.front_door: intent by example inputs, a state machine that masks
workflows that cannot serve now), which serves a request without a workflow_id whatever its
policy. What `moma` adds is MoMA's LLM selection, on the workflow the front door chose (a
single-model workflow on its llm route): the configuration with the best predicted accuracy
against its cost, bound at arrival. The router's model predicts, per configuration, the risk
of losing the largest configuration's answer, and its risk weight prices that risk in cost
(aragog.routing.model), so the pick is its best-scored configuration: `per-input:router`'s.
A workflow with no
routing artifacts has no prediction: it runs on its largest configuration (the safe choice,
logged), where `per-input:router` would refuse.
"""

from __future__ import annotations

import structlog
from aragog.policies.base import Policy
from aragog.policies.baselines import LargestPolicy, PerInputPolicy

log = structlog.get_logger("policies")


class MomaPolicy(Policy, name="moma"):
    learned = True

    def admit(self, workflow, pool, request_input="", routing=None, load=None):
        if routing is None or routing.artifacts(workflow, pool) is None:
            log.info("moma_no_prediction", workflow=workflow.id)
            return LargestPolicy().admit(workflow, pool)
        return PerInputPolicy("router").admit(workflow, pool, request_input, routing)
