"""The policy interface: an admission role, a stage role, a registry by name.

- **Admission** (`admit`, in the router, once per request): F(r), the configurations the
  request may run. Every policy has one.
- **Stage** (`stage`, in the scheduler, before each LLM stage of the request waits for a
  model): pick the stage's model among those C(r) still allows, or return None to leave it
  to the scheduling round (the beam round over C(r) and the live load: the default, and
  `aragog`'s). A policy that decides stages sets `decides_stages`; the scheduler asks no
  other, so the round's hot path costs the same for every policy that does not.
  The stage role runs on the scheduler's event loop: it must be arithmetic on what it is
  handed (no I/O, no model). Anything slow (an embedding of the input) belongs in
  `stage_state`, which the router computes at admission, off its event loop, and stores
  with the request; the scheduler hands it back to `stage` as `StageView.state`.

Policies register by name when their class is defined (`class P(Policy, name="p")`);
`make("name:arg")` builds one, the class parsing its own argument (`from_arg`). A policy
from another package registers through the `aragog.policies` entry-point group (the entry
point names a module or class; loading it defines the class): no edit to any service.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import structlog
from aragog.common.pool import PoolSpec
from aragog.common.workflow import WorkflowDef

if TYPE_CHECKING:
    from aragog.routing.artifacts import Artifacts
    from aragog.routing.context import Routing

log = structlog.get_logger("policies")
ENTRY_POINT_GROUP = "aragog.policies"


class PolicyError(ValueError):
    """Unknown policy, or one that cannot serve this workflow; the message says why."""


class ArtifactsUnavailable(PolicyError):
    """The policy needs routing artifacts that are missing or stale for this workflow and
    pool: a precondition the operator fixes by building them, not a bad request."""


ALL = None
"""F(r) = every configuration of the workflow (stored compactly, not enumerated)."""


@dataclasses.dataclass(frozen=True)
class StageView:
    """What the stage role sees of one LLM stage about to wait for a model."""

    request_id: str
    workflow: WorkflowDef
    pool: PoolSpec
    stage: str
    stage_index: int  # among the workflow's LLM stages
    options: tuple[str, ...]  # the models C(r) still allows this stage, in candidate order
    load: dict[str, tuple[int, int]]  # model -> (leases held, capacity), at the scheduler now
    state: bytes  # what this policy's stage_state stored at admission (b"" if nothing)


class Policy:
    """Base: `admit` returns F(r) as sorted int64 config indices, or ALL.

    `routing` gives the profiled and learned artifacts (aragog.routing); a policy that needs
    them raises ArtifactsUnavailable when the workflow has none. `learned` policies are slow
    enough (an embedding) that the router runs them off its event loop; `overlap` ones admit
    an F(r) that always holds the largest configuration, so the router may admit the request
    with that placeholder and compute F(r) while it waits. `wants_load` policies get the
    newest load snapshot (model name -> ModelLoad) as `load`. `wants_outcomes` policies
    also get `outcomes=`: the outcomes callers reported for the workflow (ReportOutcome),
    model -> (count, reward summed). `decides_stages` policies have a stage role (module
    docstring).
    """

    name: ClassVar[str] = ""
    learned: bool = False
    overlap: bool = False
    wants_load: bool = False
    wants_outcomes: bool = False
    decides_stages: bool = False
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

    def stage_state(self, workflow: WorkflowDef, pool: PoolSpec, request_input: str,
                    routing: Routing | None = None) -> bytes:
        """What the stage role will need of this request, computed at admission (router)."""
        return b""

    def stage(self, view: StageView) -> str | None:
        """The model for this stage, one of `view.options`; None leaves it to the round."""
        return None

    @staticmethod
    def one(index: int) -> np.ndarray:
        return np.array([index], dtype=np.int64)


def artifacts_for(policy: Policy, workflow: WorkflowDef, pool: PoolSpec,
                  routing: Routing | None) -> Artifacts:
    """The workflow's routing artifacts, or ArtifactsUnavailable saying what to build."""
    art = routing.artifacts(workflow, pool) if routing else None
    if art is None:
        why = routing.unavailable(workflow, pool) if routing else "no routing context"
        raise ArtifactsUnavailable(
            f"policy {policy.name} needs routing artifacts for workflow {workflow.id} on pool "
            f"{pool.family or 'default'}: {why}")
    return art


def trained_for(policy: Policy, workflow: WorkflowDef, pool: PoolSpec, routing: Routing | None,
                filename: str, load: Callable[[str], Any], what: str) -> tuple[Artifacts, Any]:
    """The workflow's artifacts and what `aragog-routing build` trained beside its router for
    `policy` (`filename`, read by `load`), or ArtifactsUnavailable saying to rebuild."""
    art = artifacts_for(policy, workflow, pool, routing)
    trained = art.companion(filename, load)
    if trained is None:
        raise ArtifactsUnavailable(
            f"policy {policy.name} needs {what} for workflow {workflow.id}; the routing "
            f"artifacts in {art.directory} have none: rebuild them with aragog-routing build "
            "(it trains the published routers beside Aragog's)")
    return art, trained


def decided_configuration(policy: Policy, workflow: WorkflowDef, pool: PoolSpec,
                          request_input: str, routing: Routing | None) -> int | None:
    """The configuration `policy` runs this request on, if it decides every stage without
    the load (one configuration admitted, or a stage role that decides from its admission
    state alone); None if it leaves choices to the scheduling round. What the capacity
    bounds and a simulator read."""
    f_r = policy.admit(workflow, pool, request_input, routing)
    if f_r is not None and len(f_r) == 1:
        return int(f_r[0])
    if not policy.decides_stages:
        return None
    state = policy.stage_state(workflow, pool, request_input, routing)
    allowed = None if f_r is None else {tuple(workflow.config_models(int(c))) for c in f_r}
    models = []
    for i, st in enumerate(workflow.llm_stages):
        options = tuple(m for m in st.candidates
                        if allowed is None or any(a[:i] == tuple(models) and a[i] == m
                                                  for a in allowed))
        model = policy.stage(StageView("", workflow, pool, st.name, i, options, {}, state))
        if model is None or model not in options:
            return None
        models.append(model)
    return workflow.config_index(models)


def by_size(pool: PoolSpec, models) -> list[str]:
    """`models` from the smallest to the largest (parameters), names breaking ties."""
    return sorted(models, key=lambda m: (pool.model(m).params_b, m))


_entry_points_loaded = False


def _load_entry_points() -> None:
    """Import the policies other packages register (once per process)."""
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            ep.load()
        except Exception:  # a broken plug-in must not take the service down
            log.exception("policy_entry_point_failed", entry_point=ep.name, value=ep.value)


def names() -> list[str]:
    _load_entry_points()
    return sorted(Policy._registry)


def make(spec: str) -> Policy:
    """Build a policy from `name` or `name:arg` (the class parses its argument)."""
    name, _, arg = spec.partition(":")
    cls = Policy._registry.get(name)
    if cls is None:
        _load_entry_points()
        cls = Policy._registry.get(name)
    if cls is None:
        raise PolicyError(f"unknown policy {spec[:60]!r}; known: {', '.join(names())} "
                          "(static:<m1,m2,...>, per-input:router|load, routellm:<mf|clf>@<share>)")
    return cls.from_arg(arg)
