"""Routing policies: what each admits as F(r) when a request arrives.

Every policy hands the scheduler a set of configurations; the same graph-aware
scheduling round then picks one model per stage just in time among what is left. So a
policy that binds one configuration (`largest`, `static:...`) gets the same scheduler
with |C(r)| = 1, as the paper gives its baselines.

Policies register themselves by name; `make("name:arg")` builds one, the class parsing its
own argument (`from_arg`).
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
    them raises ArtifactsUnavailable when the workflow has none. `learned` policies are slow
    enough (an embedding) that the router runs them off its event loop; `overlap` ones admit
    an F(r) that always holds the largest configuration, so the router may admit the request
    with that placeholder and compute F(r) while it waits. `wants_load` policies get the
    newest load snapshot (model name -> ModelLoad) as `load`.
    """

    name: ClassVar[str] = ""
    learned: bool = False
    overlap: bool = False
    wants_load: bool = False
    _registry: ClassVar[dict[str, type[Policy]]] = {}

    def __init_subclass__(cls, name: str = "", **kw: object) -> None:
        super().__init_subclass__(**kw)
        if name:
            cls.name = name
            Policy._registry[name] = cls

    @classmethod
    def from_arg(cls, arg: str) -> Policy:
        """The policy for `name:arg`; policies without arguments refuse one."""
        if arg:
            raise PolicyError(f"policy {cls.name} takes no argument")
        return cls()

    def admit(self, workflow: WorkflowDef, pool: PoolSpec, request_input: str = "",
              routing: Routing | None = None, load: dict | None = None) -> np.ndarray | None:
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
    overlap = True

    def admit(self, workflow, pool, request_input="", routing=None, load=None):
        art = _artifacts(self, workflow, pool, routing)
        return routing.route(art, request_input)


class PerInputPolicy(Policy, name="per-input"):
    """The paper's per-input baseline: one configuration bound at arrival, never revisited.

    - `per-input` (= `per-input:profiled`): the cheapest configuration of the request's
      *profiled* F(r) (perfect accuracy knowledge). Only profiled inputs have one; any other
      input is refused.
    - `per-input:router`: the cheapest configuration of the router's own F(r), the same
      information `aragog` has: the difference to `aragog` is deciding per stage.
    - `per-input:load`: among the router's F(r), the configuration the load at arrival
      favours, bound then (what an engineer builds without a per-stage scheduler): least
      estimated time to finish, each stage's profiled latency stretched by its model's
      queue (leased + pending in Triton + 1 over capacity, at least 1); ties by GPU-seconds.
      It fails where load shifts during the request's lifetime, which is the point.
    """

    MODES = ("profiled", "router", "load")

    def __init__(self, mode: str = "profiled"):
        self.mode = mode
        self.learned = mode != "profiled"
        self.wants_load = mode == "load"

    @classmethod
    def from_arg(cls, arg: str) -> Policy:
        if arg and arg not in cls.MODES:
            raise PolicyError(f"policy per-input takes {', '.join(cls.MODES)}, not {arg[:40]!r}")
        return cls(arg or "profiled")

    def admit(self, workflow, pool, request_input="", routing=None, load=None):
        art = _artifacts(self, workflow, pool, routing)
        if self.mode == "profiled":
            truth = art.true_f(request_input)
            if truth is None:
                raise PolicyError(
                    "policy per-input binds the cheapest configuration of the request's profiled "
                    f"F(r); this input is not a profiled request of workflow {workflow.id} "
                    "(per-input:router binds from the router's F(r) instead)")
            return self.one(cheapest_of(art.space, truth))
        f_r = routing.route(art, request_input)
        if self.mode == "router":
            return self.one(cheapest_of(art.space, f_r))
        return self.one(least_loaded(art.space, f_r, load or {}))


def least_loaded(space, configs: np.ndarray, load: dict) -> int:
    """The configuration of `configs` with the least estimated time to finish under `load`
    (model -> ModelLoad), GPU-seconds breaking ties (no load known: the cheapest)."""
    wf, pool = space.workflow, space.pool
    stretch = {}
    for m in pool.models:
        ml = load.get(m.name)
        queued = (ml.leased + ml.triton_pending) if ml is not None else 0.0
        stretch[m.name] = max(1.0, (queued + 1.0) / max(1, m.capacity))
    stages = wf.llm_stages
    best, best_key = int(configs[0]), (np.inf, np.inf)
    for c in configs:
        models = space.models(int(c))
        t = sum(pool.model(m).batch_latency_s(1, 256, st.output_tokens) * stretch[m]
                for m, st in zip(models, stages, strict=True))
        key = (t, float(space.gpu_seconds[c]))
        if key < best_key:
            best, best_key = int(c), key
    return best


class PerWorkflowPolicy(Policy, name="per-workflow"):
    """One configuration for every request of a workflow: the cheapest whose accuracy over
    the profiling split matches the largest's (from the routing artifacts), else the
    `per_workflow` entry of its YAML. Fails for a workflow with neither."""

    def admit(self, workflow, pool, request_input="", routing=None, load=None):
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

    def admit(self, workflow, pool, request_input="", routing=None, load=None):
        models = [max(s.candidates, key=lambda m: pool.model(m).params_b) for s in workflow.llm_stages]
        return self.one(workflow.config_index(models))


class CheapestPolicy(Policy, name="cheapest"):
    """The smallest candidate at every stage."""

    def admit(self, workflow, pool, request_input="", routing=None, load=None):
        models = [min(s.candidates, key=lambda m: pool.model(m).params_b) for s in workflow.llm_stages]
        return self.one(workflow.config_index(models))


class AnyPolicy(Policy, name="any"):
    """Every configuration: the scheduler picks each stage's model by load alone. No accuracy
    guarantee (nothing says a small model preserves the answer); for workflows with no
    artifacts whose owner chooses cost over accuracy, explicitly."""

    def admit(self, workflow, pool, request_input="", routing=None, load=None):
        return ALL


class StaticPolicy(Policy, name="static"):
    """`static:<m1,m2,...>`: the given model for each LLM stage, in stage order."""

    def __init__(self, models: list[str]):
        self.models = models

    @classmethod
    def from_arg(cls, arg: str) -> Policy:
        models = [m.strip() for m in arg.split(",") if m.strip()]
        if not models:
            raise PolicyError("policy static needs models: static:<m1,m2,...>")
        return cls(models)

    def admit(self, workflow, pool, request_input="", routing=None, load=None):
        try:
            return self.one(workflow.config_index(self.models))
        except WorkflowError as e:
            raise PolicyError(f"policy static:{','.join(self.models)}: {e}") from e


def names() -> list[str]:
    return sorted(Policy._registry)


def make(spec: str) -> Policy:
    """Build a policy from `name` or `name:arg` (the class parses its argument)."""
    name, _, arg = spec.partition(":")
    cls = Policy._registry.get(name)
    if cls is None:
        raise PolicyError(f"unknown policy {spec[:60]!r}; known: {', '.join(names())} "
                          "(static:<m1,m2,...>, per-input:router|load)")
    return cls.from_arg(arg)
