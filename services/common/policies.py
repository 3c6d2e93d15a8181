"""Routing policies: what each admits as F(r) when a request arrives.

Every policy hands the scheduler a set of configurations; the same graph-aware
scheduling round then picks one model per stage just in time among what is left. So a
policy that binds one configuration (`largest`, `static:...`) gets the same scheduler
with |C(r)| = 1, as the paper gives its baselines.

Policies register themselves by name; `make(name)` builds one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import numpy as np
from aragog.common.pool import PoolSpec
from aragog.common.workflow import WorkflowDef, WorkflowError
from aragog.routing.model import cheapest_of

if TYPE_CHECKING:
    from aragog.routing.context import Routing


class PolicyError(ValueError):
    """Unknown policy, or one that cannot serve this workflow; the message says why."""


class ArtifactsUnavailable(PolicyError):
    """The policy needs routing artifacts that are missing or stale for this workflow and
    pool: a precondition the operator fixes by building them, not a bad request."""


ALL = None
"""F(r) = every configuration of the workflow (stored compactly, not enumerated)."""


class Policy:
    """Base: `admit` returns F(r) as sorted int64 config indices, or ALL.

    `routing` gives the profiled and learned artifacts (aragog.routing); a policy that needs
    them raises PolicyError when the workflow has none. `learned` policies are slow enough
    (an embedding) that the router runs them off its event loop.
    """

    name: ClassVar[str] = ""
    learned: ClassVar[bool] = False
    _registry: ClassVar[dict[str, type[Policy]]] = {}

    def __init_subclass__(cls, name: str = "", **kw: object) -> None:
        super().__init_subclass__(**kw)
        if name:
            cls.name = name
            Policy._registry[name] = cls

    def admit(self, workflow: WorkflowDef, pool: PoolSpec, request_input: str = "",
              routing: Routing | None = None) -> np.ndarray | None:
        raise NotImplementedError

    @staticmethod
    def one(index: int) -> np.ndarray:
        return np.array([index], dtype=np.int64)


class AragogPolicy(Policy, name="aragog"):
    """The paper's just-in-time policy. F(r) comes from the learned router (embedding of the
    input -> MLP per configuration, visited in cost order); the scheduler then picks among
    F(r) per stage by load. Without current artifacts for the workflow it refuses the request
    (ArtifactsUnavailable): admitting every configuration would drop the accuracy guarantee
    silently."""

    learned = True

    def admit(self, workflow, pool, request_input="", routing=None):
        art = _artifacts(self, workflow, pool, routing)
        return routing.route(art, request_input)


class PerInputPolicy(Policy, name="per-input"):
    """The paper's per-input baseline, with perfect accuracy knowledge: the cheapest
    configuration of the request's *profiled* F(r), bound at arrival. Only benchmark
    requests have a profiled F(r); any other input is refused."""

    def admit(self, workflow, pool, request_input="", routing=None):
        art = _artifacts(self, workflow, pool, routing)
        truth = art.true_f(request_input)
        if truth is None:
            raise PolicyError(
                f"policy per-input binds the cheapest configuration of the request's profiled "
                f"F(r); this input is not a request of workflow {workflow.id}'s benchmark"
            )
        return self.one(cheapest_of(art.space, truth))


class PerWorkflowPolicy(Policy, name="per-workflow"):
    """One configuration for every request of a workflow: the cheapest whose accuracy over
    the profiling split matches the largest's (from the routing artifacts), else the
    `per_workflow` entry of its YAML. Fails for a workflow with neither."""

    def admit(self, workflow, pool, request_input="", routing=None):
        art = routing.artifacts(workflow, pool) if routing else None
        if art is not None:
            return self.one(art.per_workflow)
        if not workflow.per_workflow:
            raise PolicyError(
                f"workflow {workflow.id} has no profiled per-workflow configuration and its YAML "
                "declares no `per_workflow`; build the routing artifacts or use another policy"
            )
        return self.one(workflow.config_index(workflow.per_workflow))


def _artifacts(policy: Policy, workflow, pool, routing):
    art = routing.artifacts(workflow, pool) if routing else None
    if art is None:
        why = routing.unavailable(workflow, pool) if routing else "no routing context"
        raise ArtifactsUnavailable(
            f"policy {policy.name} needs routing artifacts for workflow {workflow.id} on pool "
            f"{pool.family or 'default'}: {why}")
    return art


class LargestPolicy(Policy, name="largest"):
    """The largest candidate (parameters) at every stage: the accuracy reference."""

    def admit(self, workflow, pool, request_input="", routing=None):
        models = [max(s.candidates, key=lambda m: pool.model(m).params_b) for s in workflow.llm_stages]
        return self.one(workflow.config_index(models))


class CheapestPolicy(Policy, name="cheapest"):
    """The smallest candidate at every stage."""

    def admit(self, workflow, pool, request_input="", routing=None):
        models = [min(s.candidates, key=lambda m: pool.model(m).params_b) for s in workflow.llm_stages]
        return self.one(workflow.config_index(models))


class AnyPolicy(Policy, name="any"):
    """Every configuration: the scheduler picks each stage's model by load alone. No accuracy
    guarantee (nothing says a small model preserves the answer); for workflows with no
    artifacts whose owner chooses cost over accuracy, explicitly."""

    def admit(self, workflow, pool, request_input="", routing=None):
        return ALL


class StaticPolicy(Policy, name="static"):
    """`static:<m1,m2,...>`: the given model for each LLM stage, in stage order."""

    def __init__(self, models: list[str]):
        self.models = models

    def admit(self, workflow, pool, request_input="", routing=None):
        try:
            return self.one(workflow.config_index(self.models))
        except WorkflowError as e:
            raise PolicyError(f"policy static:{','.join(self.models)}: {e}") from e


def names() -> list[str]:
    return sorted(Policy._registry)


def make(spec: str) -> Policy:
    """Build a policy from its name (`static:<m1,m2,...>` takes models)."""
    name, _, arg = spec.partition(":")
    cls = Policy._registry.get(name)
    if cls is None:
        raise PolicyError(f"unknown policy {spec!r}; known: {', '.join(names())} (static:<m1,m2,...>)")
    if cls is StaticPolicy:
        models = [m.strip() for m in arg.split(",") if m.strip()]
        if not models:
            raise PolicyError("policy static needs models: static:<m1,m2,...>")
        return StaticPolicy(models)
    if arg:
        raise PolicyError(f"policy {name} takes no argument")
    return cls()
