"""Routing policies, by name: `aragog`, the baselines, and published routers (base.py says
what a policy is; each module holds one family)."""

# defining the policies registers them
from aragog.policies import (  # noqa: F401
    agentrouter,
    baselines,
    flowcompile,
    jit,
    moma,
    routellm,
    stageroute,
)
from aragog.policies.base import (
    ALL,
    ArtifactsUnavailable,
    Policy,
    PolicyError,
    StageView,
    decided_configuration,
    make,
    names,
)
from aragog.policies.baselines import least_loaded

__all__ = ["ALL", "ArtifactsUnavailable", "Policy", "PolicyError", "StageView",
           "decided_configuration", "least_loaded", "make", "names"]
