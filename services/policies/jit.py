"""Aragog's own policy: F(r) from the learned router at arrival, each stage's model just in
time by the scheduling round."""

from __future__ import annotations

from aragog.policies.base import Policy, artifacts_for


class AragogPolicy(Policy, name="aragog"):
    """The paper's just-in-time policy. F(r) comes from the learned router (embedding of the
    input -> MLP per configuration, visited in cost order); the scheduler then picks among
    F(r) per stage by load. Without current artifacts for the workflow it refuses the request
    (ArtifactsUnavailable): admitting every configuration would drop the accuracy guarantee
    silently."""

    learned = True
    overlap = True

    def admit(self, workflow, pool, request_input="", routing=None, load=None):
        art = artifacts_for(self, workflow, pool, routing)
        return routing.route(art, request_input)
