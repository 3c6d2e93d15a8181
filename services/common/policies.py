"""Routing policies: what each admits as F(r) when a request arrives.

Every policy hands the scheduler a set of configurations; the same graph-aware
scheduling round then picks one model per stage just in time among what is left. So a
policy that binds one configuration (`largest`, `static:...`) gets the same scheduler
with |C(r)| = 1, as the paper gives its baselines.

Policies register themselves by name; `make(name)` builds one.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from aragog.common.pool import PoolSpec
from aragog.common.workflow import WorkflowDef, WorkflowError


class PolicyError(ValueError):
    """Unknown policy, or one that cannot serve this workflow; the message says why."""


ALL = None
"""F(r) = every configuration of the workflow (stored compactly, not enumerated)."""


class Policy:
    """Base: `admit` returns F(r) as sorted int64 config indices, or ALL."""

    name: ClassVar[str] = ""
    _registry: ClassVar[dict[str, type[Policy]]] = {}

    def __init_subclass__(cls, name: str = "", **kw: object) -> None:
        super().__init_subclass__(**kw)
        if name:
            cls.name = name
            Policy._registry[name] = cls

    def admit(self, workflow: WorkflowDef, pool: PoolSpec) -> np.ndarray | None:
        raise NotImplementedError

    @staticmethod
    def one(index: int) -> np.ndarray:
        return np.array([index], dtype=np.int64)


class AragogPolicy(Policy, name="aragog"):
    """The paper's just-in-time policy. F(r) is every configuration until the learned
    one-time router exists (issue 4): the scheduler then picks per stage by load alone."""

    def admit(self, workflow: WorkflowDef, pool: PoolSpec) -> np.ndarray | None:
        return ALL


class PerWorkflowPolicy(Policy, name="per-workflow"):
    """One configuration for every request of a workflow: the profiled `per_workflow`
    entry of its YAML. Fails for a workflow that declares none."""

    def admit(self, workflow: WorkflowDef, pool: PoolSpec) -> np.ndarray | None:
        if not workflow.per_workflow:
            raise PolicyError(
                f"workflow {workflow.id} declares no `per_workflow` configuration; "
                "add one to its YAML or use another policy"
            )
        return self.one(workflow.config_index(workflow.per_workflow))


class LargestPolicy(Policy, name="largest"):
    """The largest candidate (parameters) at every stage: the accuracy reference."""

    def admit(self, workflow: WorkflowDef, pool: PoolSpec) -> np.ndarray | None:
        models = [max(s.candidates, key=lambda m: pool.model(m).params_b) for s in workflow.llm_stages]
        return self.one(workflow.config_index(models))


class CheapestPolicy(Policy, name="cheapest"):
    """The smallest candidate at every stage."""

    def admit(self, workflow: WorkflowDef, pool: PoolSpec) -> np.ndarray | None:
        models = [min(s.candidates, key=lambda m: pool.model(m).params_b) for s in workflow.llm_stages]
        return self.one(workflow.config_index(models))


class StaticPolicy(Policy, name="static"):
    """`static:<m1,m2,...>`: the given model for each LLM stage, in stage order."""

    def __init__(self, models: list[str]):
        self.models = models

    def admit(self, workflow: WorkflowDef, pool: PoolSpec) -> np.ndarray | None:
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
