"""`oracle:<horizon_s>`: the policy that exists only in the simulator, as the upper bound the
others are measured against. It knows what no deployed policy can:

- each request's profiled F(r) (the configurations that answer it as the largest one does:
  `aragog-profiled`'s clairvoyant F(r)), and
- the arrivals of the next `horizon_s` seconds. The scheduling round is the service's own;
  the oracle only withholds from its escalation pass (a stage taking a dearer model than
  its cheapest plan) the capacity that requests arriving within the horizon will want for
  their first stages at their cheapest. A live scheduler escalates into any idle model,
  since it cannot know that a request needing it arrives a moment later.

It is a heuristic with more information, not a proof of optimality: the fluid capacity
bound (`aragog-sim --bounds`, aragog.loadgen.capacity) is the hard ceiling.
"""

from __future__ import annotations

import numpy as np
from aragog import policies
from aragog.loadgen.eval_policies import AragogProfiledPolicy
from aragog.scheduler import views
from aragog.scheduler.placement import CompiledWorkflow


class OraclePolicy(AragogProfiledPolicy, name="oracle"):
    """Profiled F(r), and the arrivals of the next `horizon_s` seconds (default 5)."""

    horizon_s = 5.0

    @classmethod
    def from_arg(cls, arg: str) -> OraclePolicy:
        p = cls()
        if arg:
            try:
                p.horizon_s = float(arg)
            except ValueError:
                p.horizon_s = -1.0
            if not p.horizon_s >= 0:
                raise policies.PolicyError(
                    f"oracle:<horizon_s> wants a horizon in seconds >= 0, got {arg!r}")
        return p


def first_stage_models(cw: CompiledWorkflow, admitted: np.ndarray) -> list[int]:
    """The pool models a request's first LLM stages (depth 0) take in its cheapest
    configuration of `admitted` (the cost-first round's first pass)."""
    space = cw.space
    cheap = views.cheapest(admitted, space, cw.costs)
    config = int(cheap[0])
    return [int(space.stage_models[s][(config // space.strides[s]) % space.radices[s]])
            for s in range(space.n_stages) if space.depths[s] == 0]
