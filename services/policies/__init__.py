"""Routing policies, by name: `aragog`, the baselines, and published routers (base.py says
what a policy is; each module holds one family)."""

from aragog.policies import agentrouter, baselines, flowcompile, jit, routellm  # noqa: F401 - defining them registers them
from aragog.policies.base import (
    ALL,
    ArtifactsUnavailable,
    Policy,
    PolicyError,
    StageView,
    make,
    names,
)
from aragog.policies.baselines import least_loaded

__all__ = ["ALL", "ArtifactsUnavailable", "Policy", "PolicyError", "StageView", "least_loaded",
           "make", "names"]
