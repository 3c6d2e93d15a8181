"""Capacity planning: the instances per model a policy needs to serve a workload within its
SLO, found by the fluid bound (to prune) and the simulator (to confirm).

A model m with n_m instances of tp_m GPUs supplies n_m x tp_m GPU-seconds per second; a
workload at `rate` requests/s whose requests put L_m GPU-seconds each on m (at the
saturation batch, as aragog.routing.space prices them, played at the simulator's time
scale) needs n_m >= rate x L_m / tp_m, or
the queue on m grows without end. No provisioning below that per-model floor can meet any
SLO, so the search starts there, not at one instance each. Where the policy decides its
models by load (aragog), L_m moves with the provisioning, so it is measured again after
every simulated run. When a run misses the SLO with every model at its floor, one instance
goes to the busiest model (highest rate x L_m / (n_m x tp_m)) and the run is repeated.

It is greedy, not optimal: it adds where the fluid load says the pressure is and stops at
the first provisioning that meets the SLO. It reports the floor at its answer, so how far
above the fluid minimum each model is provisioned is in plain sight.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

from aragog.common.pool import PoolSpec
from aragog.sim.core import Arrival, Simulator


@dataclasses.dataclass
class Plan:
    """A provisioning the simulator confirmed (or the last one tried, if none was)."""

    instances: dict[str, int]
    gpus: int
    floor: dict[str, int]  # the fluid bound's least instances per model, at the last run
    met: bool  # the share of arrivals within the SLO was reached
    within_slo: float  # the share reached
    runs: int  # simulated runs it took


def provisioned(base: PoolSpec, instances: Sequence[int]) -> PoolSpec:
    return dataclasses.replace(base, models=tuple(
        dataclasses.replace(m, instances=int(n)) for m, n in zip(base.models, instances,
                                                                 strict=True)))


def plan_instances(base: PoolSpec, make_sim: Callable[[PoolSpec], Simulator],
                   arrivals: Sequence[Arrival], policy: str, slo_s: dict[str, float],
                   share: float, budget_gpus: int, max_runs: int = 64) -> Plan:
    """The fewest instances per model (greedy, from the fluid floor) with which `policy`
    serves `share` of `arrivals` ok within their workflow's SLO, within `budget_gpus`."""
    models = base.models
    tp = [m.tensor_parallel for m in models]
    duration = max((a.offset for a in arrivals), default=0.0) or 1.0
    rate = len(arrivals) / duration

    def measure(n: list[int]) -> tuple[list[float], float]:
        """One run at `n` instances: each model's pressure (its fluid floor, unrounded: the
        instances the GPU-seconds it served need at `rate`) and the share within the SLO."""
        sim = make_sim(provisioned(base, n))
        load, _, good = served(sim, arrivals, policy, slo_s)
        k = max(len(arrivals), 1)  # GPU-seconds are priced at the profile's own time scale
        return [rate * load[i] * sim.scale / k / tp[i] for i in range(len(models))], good / k

    def floors(pressure: list[float]) -> list[int]:
        return [max(1, math.ceil(p - 1e-9)) for p in pressure]

    n = [m.instances for m in models]  # the first run measures the load on the pool as given
    pressure, within = measure(n)
    runs = 1
    if not (within >= share and n == floors(pressure)):
        n = floors(pressure)  # the search starts at the fluid floor
        while True:
            if sum(n[i] * tp[i] for i in range(len(models))) > budget_gpus or runs >= max_runs:
                return _plan(models, n, tp, floors(pressure), False, within, runs)
            pressure, within = measure(n)
            runs += 1
            if within >= share:
                break
            nxt = [max(n[i], f) for i, f in enumerate(floors(pressure))]
            if nxt == n:  # at every floor and still missing: the busiest model gets one more
                busiest = max(range(len(models)), key=lambda i: pressure[i] / n[i])
                nxt[busiest] += 1
            n = nxt
    return _plan(models, n, tp, floors(pressure), True, within, runs)


def served(sim: Simulator, arrivals: Sequence[Arrival], policy: str, slo_s: dict[str, float]
           ) -> tuple[list[float], int, int]:
    """One run, streamed (nothing kept per request): the GPU-seconds each pool model served,
    how many requests ended ok, and how many of those within their workflow's SLO."""
    index = {m.name: i for i, m in enumerate(sim.pool.models)}
    load = [0.0] * len(index)
    ok = good = 0

    def count(r) -> None:
        nonlocal ok, good
        for st in r.stages:
            if st.model in index:
                load[index[st.model]] += st.gpu_seconds
        ok += r.status == "ok"
        good += r.status == "ok" and r.latency_s <= slo_s[r.workflow]

    sim.run(arrivals, policy, on_record=count)
    return load, ok, good


def _plan(models: Sequence[Any], n: list[int], tp: list[int], floor: list[int], met: bool,
          within: float, runs: int) -> Plan:
    return Plan({m.name: n[i] for i, m in enumerate(models)},
                sum(n[i] * tp[i] for i in range(len(models))),
                {m.name: floor[i] for i, m in enumerate(models)}, met, within, runs)
