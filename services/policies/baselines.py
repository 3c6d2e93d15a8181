"""The baselines the paper compares against, and policies that need no learning.

Each binds F(r) at arrival (one configuration, or all of them for `any`); the scheduler's
round then only places what is bound (|C(r)| = 1), as the paper gives its baselines.
"""

from __future__ import annotations

import numpy as np
from aragog.common.workflow import WorkflowError
from aragog.policies.base import ALL, Policy, PolicyError, artifacts_for
from aragog.routing.model import cheapest_of


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
        art = artifacts_for(self, workflow, pool, routing)
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
