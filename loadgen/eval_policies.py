"""A policy only the evaluation runs, and the router process that serves it.

`aragog-profiled` is `aragog` given each request's *profiled* F(r) (the configurations
that answer it as the largest one does, from the routing artifacts' profile) instead of the
router's prediction: the same just-in-time scheduling over a perfect F(r), the oracle
counterpart of `per-input` (which binds the cheapest of that F(r) at arrival). It separates
what the per-stage scheduler gains from what the router's F(r) allows. Like `per-input`, it
serves profiled inputs only (the generated benchmarks' held-out requests are profiled) and
refuses any other.

Policies register by name in the process that admits requests (aragog.policies); an
entry point would put this one in every router installed beside the evaluation, so
`aragog-eval` starts its router as
`python -m aragog.loadgen.eval_policies`: this module registers the policy, then runs the
router's own entry point unchanged. A deployed router never has it.
"""

from __future__ import annotations

from aragog import policies
from aragog.policies.base import artifacts_for
from aragog.policies.jit import AragogPolicy


class AragogProfiledPolicy(AragogPolicy, name="aragog-profiled"):  # = report.AR_PROFILED
    """F(r) = the request's profiled F(r) (it holds the largest configuration, so the router
    admits with the placeholder and swaps it in, as for `aragog`); the scheduler then picks
    among it per stage by load. Fails (PolicyError) for an input the profile does not hold,
    and (ArtifactsUnavailable) without current artifacts."""

    def admit(self, workflow, pool, request_input="", routing=None, load=None):
        art = artifacts_for(self, workflow, pool, routing)
        truth = art.true_f(request_input)
        if truth is None:
            raise policies.PolicyError(
                f"policy {self.name} admits the request's profiled F(r); this input is not a "
                f"profiled request of workflow {workflow.id}")
        return truth


if __name__ == "__main__":
    from aragog.router.__main__ import main

    main()
