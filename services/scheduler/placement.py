"""The meta-queue's entries and the scheduling round over them, with no I/O.

The scheduler service keeps the queue, the leases and Redis; this module decides where the
stages waiting now go. It knows no asyncio, no Redis and no clock, so a simulator runs
exactly what the service runs: build entries, call `Round.run` with the free capacity,
apply the placements it returns.

By default a round is cost-first: each request's cheapest configurations, then escalations
into what that left free (views.py says why); `cost_first=False` is the work-conserving
round that sees C(r) whole in one pass.
"""

from __future__ import annotations

import dataclasses
from operator import attrgetter
from typing import Any

import numpy as np
import structlog
from aragog import policies
from aragog.common.pool import PoolSpec
from aragog.common.store import ALL_CONFIGS, decode_configs
from aragog.common.workflow import WorkflowDef
from aragog.scheduler import views
from aragog.scheduler_ext import RoundRequest, WorkflowSpace, schedule_round

log = structlog.get_logger("scheduler")


@dataclasses.dataclass
class Unplaceable:
    """The models no stage may be placed on now (draining, unloaded or still loading:
    deployment.py), shared by every entry of one scheduler and changed in place.

    Each stage not placed yet keeps the configurations of C(r) whose model for it is
    placeable. A request none of whose configurations is left (its F(r) allowed only a
    model that is gone) is widened to one configuration: for each stage, the largest model
    still placeable, which is what `largest` means in the pool as it is now. That
    configuration joins its F(r), so the stages placed on it stand once the model is back.
    It is served, at a cost in accuracy knowledge rather than in a failure; `widened`
    counts them.
    """

    gone: np.ndarray  # bool per pool model
    size: np.ndarray  # params_b per pool model: "largest" when a request must be widened
    widened: int = 0

    def restrict(self, entry: Entry, configs: np.ndarray) -> np.ndarray:
        """`configs` (C(r) as narrowed so far) without the unplaceable models (see above)."""
        if not self.gone.any() or not len(configs):
            return configs
        space = entry.round_request.space
        keep = np.ones(len(configs), dtype=bool)
        for stage in range(len(space.radices)):
            if stage not in entry.chosen:
                models = space.stage_models[stage]
                cands = (configs // space.strides[stage]) % space.radices[stage]
                keep &= ~self.gone[models[cands]]
        if keep.any():
            return configs[keep]
        index = 0
        for stage in range(len(space.radices)):
            cand = entry.chosen.get(stage)
            if cand is None:
                models = space.stage_models[stage][: space.radices[stage]]
                placeable = np.flatnonzero(~self.gone[models])
                if not len(placeable):
                    return configs  # no model of this stage is left: it waits for one
                cand = int(placeable[np.argmax(self.size[models[placeable]])])
            index += cand * int(space.strides[stage])
        self.widened += 1
        log.warning("request_widened", request_id=entry.request_id,
                    reason="every configuration of its F(r) needs a model that is not placeable")
        # admitted for good: the stages it places there stand when the model comes back
        entry.admitted = np.union1d(entry.admitted, [index]).astype(np.int64)
        return np.array([index], dtype=np.int64)


@dataclasses.dataclass
class Entry:
    """A request the scheduler knows: F(r), the choices so far, C(r) and the stages it waits for.

    The same RoundRequest object lives on across the request's stages, so the round's cached
    per-request state stays warm and no stage reloads the request from Redis.
    """

    request_id: str
    workflow: WorkflowDef
    admitted: np.ndarray  # F(r)
    chosen: dict[int, int]  # LLM stage index -> candidate index chosen for it
    round_request: RoundRequest  # C(r), and the LLM stages ready now (`ready`)
    waiters: dict[int, Any]  # LLM stage index -> whoever waits for it (the service's Waiter)
    choice_lease: dict[str, str] = dataclasses.field(default_factory=dict)  # stage -> lease that chose
    # LLM stage index -> candidates whose model call failed for it: its retry goes elsewhere
    # when C(r) allows (kept in memory only: a reloaded entry may try such a model again)
    avoid: dict[int, set[int]] = dataclasses.field(default_factory=dict)
    partial: bool = False  # F(r) is the router's placeholder until its routing finishes
    seen: float = 0.0  # when this entry was made (monotonic)
    hold_over: bool = False  # its wait for the router's F(r) has run out
    arrival: float = 0.0  # admission time (created_at): its place in the FIFO meta-queue
    policy: policies.Policy | None = None  # the request's policy, if it has a stage role
    stage_state: bytes = b""  # what that policy stored at admission for its stage role
    # GPU-seconds per stage and candidate (views.stage_costs): the cost-first round's two
    # views of C(r) (see views.py); None: the work-conserving round sees C(r) whole
    costs: np.ndarray | None = None
    unplaceable: Unplaceable | None = None  # the scheduler's models gone from placement
    cheap: RoundRequest = dataclasses.field(init=False)  # C(r)'s cheapest configurations
    _escalation: tuple[tuple[int, ...], RoundRequest | None] | None = dataclasses.field(
        default=None, init=False)  # (ready stages it was built for, the view)

    def __post_init__(self) -> None:
        self.cheap = self.round_request
        self._views()

    def renarrow(self) -> None:
        """C(r) = F(r) narrowed by every choice still standing, then, for each stage not yet
        placed, without the models that failed it, unless no configuration would be left."""
        space = self.round_request.space
        configs = self.admitted
        for stage, cand in self.chosen.items():
            configs = configs[(configs // space.strides[stage]) % space.radices[stage] == cand]
        for stage, cands in self.avoid.items():
            if stage not in self.chosen:
                at = (configs // space.strides[stage]) % space.radices[stage]
                kept = configs[~np.isin(at, list(cands))]
                if len(kept):
                    configs = kept
        if self.unplaceable is not None:
            configs = self.unplaceable.restrict(self, configs)
        self.set_configs(configs)

    def narrow(self, stage: int, cand: int) -> None:
        """C(r) without the configurations that disagree with the model just chosen."""
        rr = self.round_request
        self.set_configs(rr.configs[(rr.configs // rr.space.strides[stage])
                                    % rr.space.radices[stage] == cand])

    def set_configs(self, configs: np.ndarray) -> None:
        self.round_request.configs = configs
        self._views()

    def _views(self) -> None:
        rr = self.round_request
        self._escalation = None
        low = rr.configs if self.costs is None else views.cheapest(rr.configs, rr.space, self.costs)
        if low is rr.configs:
            self.cheap = rr
        elif self.cheap is rr:
            self.cheap = RoundRequest(rr.space, low, rr.ready)  # shares the ready list
        else:
            self.cheap.configs = low

    def escalation(self) -> RoundRequest | None:
        """C(r) as the escalation pass sees it for the stages ready now; None when it holds
        nothing dearer than the cheapest plan for them."""
        rr = self.round_request
        if self.cheap is rr:
            return None
        ready = tuple(sorted(rr.ready))
        if self._escalation is None or self._escalation[0] != ready:
            wide = views.escalations(rr.configs, self.cheap.configs, rr.space, rr.ready)
            view = None if len(wide) == len(self.cheap.configs) else RoundRequest(
                rr.space, wide, rr.ready)
            self._escalation = (ready, view)
        return self._escalation[1]


@dataclasses.dataclass(frozen=True)
class CompiledWorkflow:
    """A workflow's configuration space over a pool, built once per workflow id (registered
    workflows never change: the router refuses to redefine an id)."""

    workflow: WorkflowDef
    space: WorkflowSpace
    every: np.ndarray  # every configuration index, read-only, shared
    costs: np.ndarray  # GPU-seconds per stage and candidate (views.stage_costs)

    @classmethod
    def build(cls, wf: WorkflowDef, pool: PoolSpec) -> CompiledWorkflow:
        ids = {m.name: i for i, m in enumerate(pool.models)}
        llm = wf.llm_stages
        depths = wf.depths()
        space = WorkflowSpace.from_candidates(
            [[ids[m] for m in s.candidates] for s in llm], [depths[s.name] for s in llm])
        every = np.arange(space.size, dtype=np.int64)
        every.flags.writeable = False
        return cls(wf, space, every, views.stage_costs(wf, pool, space))

    def admitted(self, f_raw: bytes) -> np.ndarray | None:
        """F(r) as the router stored it, or None if it does not fit this space.

        F(r) = every configuration is shared by all such requests (1e6 configs = 8 MB each)."""
        size = self.space.size
        configs = self.every if f_raw == ALL_CONFIGS else decode_configs(f_raw, size)
        if configs.size and (configs[0] < 0 or configs[-1] >= size
                             or (configs.size > 1 and not (np.diff(configs) > 0).all())):
            return None
        return configs


@dataclasses.dataclass(frozen=True)
class Placement:
    """A ready stage placed on a model: its entry, LLM stage index and pool model index."""

    entry: Entry
    stage: int
    model: int
    escalated: bool  # on a dearer model than its cheapest plan (the second pass)


class Round:
    """The scheduling round: places ready stages within free capacity, FIFO by arrival."""

    def __init__(self, pool: PoolSpec, *, cost_first: bool, beam_width: int,
                 unplaceable: Unplaceable | None = None):
        """`unplaceable`: the models gone from placement, which every entry made here
        leaves out of C(r) (the service's deployment; None: the whole pool, always)."""
        self.cost_first = cost_first
        self.beam_width = beam_width
        self.unplaceable = unplaceable
        self.set_pool(pool)

    def set_pool(self, pool: PoolSpec) -> None:
        """The pool the round forecasts with (again when a model was added to it)."""
        curves = [m.throughput_curve() for m in pool.models]
        width = max(len(c) for c in curves) + 1
        self.curves = np.array([c + [c[-1]] * (width - len(c)) for c in curves], dtype=np.float64)

    def entry(self, cw: CompiledWorkflow, request_id: str, admitted: np.ndarray,
              chosen: dict[int, int] | None = None, **fields: Any) -> Entry:
        """The queue entry of an admitted request: C(r) = F(r) narrowed by the choices made
        so far, with the views of C(r) this round reads (cost-first: the stage costs).
        `fields`: Entry's other fields (partial, seen, arrival, policy, stage_state)."""
        entry = Entry(request_id, cw.workflow, admitted, dict(chosen or {}),
                      RoundRequest(cw.space, admitted, []), {},
                      costs=cw.costs if self.cost_first else None,
                      unplaceable=self.unplaceable, **fields)
        if entry.chosen or (self.unplaceable is not None and self.unplaceable.gone.any()):
            entry.renarrow()
        return entry

    def run(self, entries: list[Entry], free: np.ndarray, occupancy: np.ndarray,
            reserve: np.ndarray | None = None) -> list[Placement]:
        """Place what fits in `free` (per model; `occupancy` is what is held now) among the
        ready stages of `entries`. Records each placement in its entry (the choice made, C(r)
        narrowed, the stage no longer ready); the caller takes the capacity (leases) and
        answers whoever waits for the stage. `free` and `occupancy` are not changed.
        `reserve` (per model; only the simulator's oracle, which knows arrivals to come,
        passes it): capacity the escalation pass leaves alone."""
        # FIFO by request arrival, not by when a stage became ready: a request's later stage
        # goes before newer requests' first stages, so under overload requests finish in
        # order instead of all progressing a little and all timing out. (Callers keep
        # entries by last enqueue: a few sorted runs, which the stable sort merges cheaply.)
        entries = sorted(entries, key=attrgetter("arrival"))
        free, occupancy = free.astype(np.int32), occupancy.astype(np.int32)
        if not self.cost_first:
            return self._pass(entries, [e.round_request for e in entries], free, occupancy,
                              whole=True)
        placed = self._pass(entries, [e.cheap for e in entries], free, occupancy, whole=False)
        if not (free > 0).any():
            return placed
        wider = [(e, view) for e in entries if e.round_request.ready
                 for view in (e.escalation(),) if view is not None]
        if wider:
            room = free if reserve is None else np.maximum(free - reserve, 0).astype(np.int32)
            placed += self._pass([e for e, _ in wider], [v for _, v in wider], room, occupancy,
                                 whole=False, escalated=True)
        return placed

    def _pass(self, entries: list[Entry], requests: list[RoundRequest], free: np.ndarray,
              occupancy: np.ndarray, *, whole: bool, escalated: bool = False) -> list[Placement]:
        """One kernel call over `requests` (one view of each entry's C(r), `whole` if C(r)
        itself); applies its placements to the entries and to `free` and `occupancy`."""
        result = schedule_round(requests, free.copy(), occupancy.copy(), self.curves,
                                self.beam_width)
        if whole:
            for pos, configs in result.configs.items():
                entries[pos].set_configs(configs)
        placed = []
        for pl in result.placements:
            entry = entries[pl.request]
            entry.round_request.ready.remove(pl.stage)
            cand = list(entry.round_request.space.stage_models[pl.stage]).index(pl.model)
            entry.chosen[pl.stage] = cand
            if not whole:
                entry.narrow(pl.stage, cand)
            free[pl.model] -= 1
            occupancy[pl.model] += 1
            placed.append(Placement(entry, pl.stage, pl.model, escalated))
        return placed


def apply_stage_role(entry: Entry, index: int, pool: PoolSpec, occupancy: np.ndarray,
                     capacity: np.ndarray) -> str:
    """Before LLM stage `index` of `entry` waits: ask the request's policy (its stage role)
    for the stage's model and narrow C(r) to it. A model outside C(r), or a policy that
    fails, leaves the stage to the round. Returns what happened: picked, deferred (the
    policy left it to the round), overruled (outside C(r)) or failed (it raised)."""
    space = entry.round_request.space
    configs = entry.round_request.configs
    allowed = np.unique((configs // space.strides[index]) % space.radices[index])
    candidates = entry.workflow.llm_stages[index].candidates
    view = policies.StageView(
        entry.request_id, entry.workflow, pool, entry.workflow.llm_stages[index].name, index,
        tuple(candidates[int(c)] for c in allowed),
        {m.name: (int(occupancy[i]), int(capacity[i])) for i, m in enumerate(pool.models)},
        entry.stage_state)
    try:
        model = entry.policy.stage(view)  # type: ignore[union-attr]
    except Exception:
        log.exception("stage_policy_failed", policy=entry.policy.name)  # type: ignore[union-attr]
        return "failed"
    if model is None:
        return "deferred"
    if model not in view.options:
        log.warning("stage_policy_overruled", model=str(model)[:80], options=view.options)
        return "overruled"
    entry.chosen[index] = list(candidates).index(model)
    entry.renarrow()
    return "picked"
