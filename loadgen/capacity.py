"""Fluid capacity bound: the most requests/second each policy could ever serve on a pool.

With every model busy all the time, a pool of G_m GPUs per model m serves at most
    lambda = 1 / max_m (mean GPU-seconds a request puts on m / G_m)
requests per second. A policy bound at arrival (per-input, per-workflow, largest) fixes each
request's configuration, so its load per model is fixed. A just-in-time policy may spread
each request over any configuration of its F(r); the best spread is a linear program
(minimise the busiest model's load). Its optimum is what `aragog` could reach with a
perfect scheduler; with the true F(r) instead of the router's, what any router could.

It ignores queueing, batching dynamics and the DAG's critical path, so it is an upper bound
that says whether a throughput target is reachable at all on a given pool provisioning,
not what the running system measures (`aragog-eval` measures that, and prints these bounds
next to it). Model answers and the pool are EMULATED (the generated benchmark and published
latency profiles).

    python -m aragog.loadgen.capacity [--family llama3] [--workflow voting]
    python -m aragog.loadgen.capacity --capacity-scale 0.5 --time-scale 0.1   # eval's units
    python -m aragog.loadgen.capacity --family llama3 --mixed   # the trace's workflow mix

Needs the routing artifacts (`aragog-routing build`).
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from collections.abc import Sequence

import numpy as np
import scipy.optimize
import scipy.sparse
from aragog import policies, workflows
from aragog.common.pool import PoolSpec, load_pool
from aragog.common.settings import RouterSettings
from aragog.emulation.generate import benchmark
from aragog.loadgen.report import AR_PROFILED, TRUE_F_SPREAD
from aragog.routing import artifacts
from aragog.routing.embedding import Embedder
from aragog.routing.model import cheapest_of
from aragog.routing.space import PROMPT_TOKENS, Space


def load_matrix(space: Space, pool: PoolSpec) -> np.ndarray:
    """[configurations, models]: GPU-seconds a request in each configuration puts on each
    model of `pool` (at saturation batch), divided by the model's GPUs."""
    names = pool.names
    out = np.zeros((space.size, len(names)))
    idx = np.arange(space.size)
    stride = 1
    for st in space.workflow.llm_stages:
        digit = (idx // stride) % len(st.candidates)
        stride *= len(st.candidates)
        for d, name in enumerate(st.candidates):
            m = pool.model(name)
            g = (m.gpu_seconds(PROMPT_TOKENS, st.output_tokens) * pool.time_scale
                 / (m.instances * m.tensor_parallel))
            out[digit == d, names.index(name)] += g
    return out


def bound_fixed(load: np.ndarray, configs: np.ndarray) -> float:
    """Requests/s when request i runs configs[i]."""
    return 1.0 / load[configs].mean(0).max()


def bound_spread(load: np.ndarray, sets: list[np.ndarray]) -> float:
    """Requests/s when each request's work may be split over its set (LP: min t subject to
    mean load per model <= t, each request's shares summing to 1)."""
    return bound_spread_rows([load[s] for s in sets], np.full(len(sets), 1.0 / len(sets)))


def bound_spread_rows(rows: Sequence[np.ndarray], weights: np.ndarray) -> float:
    """The same LP over requests of several workflows: rows[i] is request i's [its set's
    configurations, models] load and weights[i] its share of the arrivals (summing to 1)."""
    n, models = len(rows), rows[0].shape[1]
    sizes = np.array([len(r) for r in rows])
    owner = np.repeat(np.arange(n), sizes)
    ncols = int(sizes.sum())
    nvar = ncols + 1  # the shares, then t
    a_ub = scipy.sparse.hstack([
        scipy.sparse.csr_matrix(np.concatenate(rows).T * weights[owner]),
        -np.ones((models, 1)),
    ])
    a_eq = scipy.sparse.hstack([
        scipy.sparse.csr_matrix((np.ones(ncols), (owner, np.arange(ncols))), (n, ncols)),
        scipy.sparse.csr_matrix((n, 1)),
    ])
    c = np.zeros(nvar)
    c[-1] = 1.0
    res = scipy.optimize.linprog(c, A_ub=a_ub, b_ub=np.zeros(models), A_eq=a_eq, b_eq=np.ones(n),
                                 bounds=(0, None), method="highs")
    if not res.success:
        raise RuntimeError(res.message)
    return 1.0 / res.x[-1]


class _Loaded:
    """The routing context policies read (aragog.routing.context.Routing), over one
    workflow's artifacts already loaded."""

    def __init__(self, art: artifacts.Artifacts, embedder: Embedder):
        self.art, self.embedder = art, embedder

    def artifacts(self, wf, pool) -> artifacts.Artifacts:
        return self.art

    def unavailable(self, wf, pool) -> str:
        return "not loaded"


def bounds(art: artifacts.Artifacts, embedder: Embedder, served: PoolSpec,
           decided: Sequence[str] = ()) -> dict[str, float]:
    """Requests/s per policy over the held-out requests, on `served` (the family's pool,
    perhaps scaled as aragog-eval scales it)."""
    return mixed_bounds([(1.0, art)], embedder, served, decided)


def mixed_bounds(parts: Sequence[tuple[float, artifacts.Artifacts]], embedder: Embedder,
                 served: PoolSpec, decided: Sequence[str] = ()) -> dict[str, float]:
    """Requests/s per policy when arrivals are the workflows of `parts` in the given shares
    (summing to 1), each workflow's requests its held-out ones, on `served`.

    Policies bound at arrival add up each workflow's mean load per model, weighted by its
    share; the spreads solve one LP over every request of every workflow. `per-input:load`
    binds one configuration of the router's F(r) per request by the load at arrival: over
    many requests such bindings can split a kind of request over its F(r) in any proportion,
    so its fluid bound is the spread's, as `aragog`'s is; what separates them is how stale
    the load they decide on is, which a fluid bound does not see. `decided`: policies that
    fix each request's configuration without the load (the published routers,
    aragog.policies.decided_configuration), bound as the policies bound at arrival."""
    total = sum(p for p, _ in parts)
    if not parts or abs(total - 1.0) > 1e-6 or any(p <= 0 for p, _ in parts):
        raise ValueError(f"shares must be positive and sum to 1, got {[p for p, _ in parts]}")
    fixed: dict[str, np.ndarray] = {}
    true_rows: list[np.ndarray] = []
    routed_rows: list[np.ndarray] = []
    weights: list[np.ndarray] = []
    for share, art in parts:
        wid, space = art.space.workflow.id, art.space
        load = load_matrix(space, served)
        texts = [it.input for it in benchmark(wid).split("test")]
        true_sets = [art.true_f(t) for t in texts]
        # one text at a time, as the router service embeds them
        routed = [art.router.route(art.features([t], embedder)[0], space) for t in texts]
        n = len(texts)
        given = _Loaded(art, embedder)
        chosen = {p: [policies.decided_configuration(policies.make(p), space.workflow, served, t,
                                                     given) for t in texts] for p in decided}
        for p, configs in chosen.items():
            if None in configs:
                raise ValueError(f"policy {p} leaves choices to the scheduler: no fixed bound")
        for name, configs in (
            *chosen.items(),
            ("per-input", [cheapest_of(space, s) for s in true_sets]),
            ("per-input:router", [cheapest_of(space, s) for s in routed]),
            ("per-workflow", [art.per_workflow] * n),
            ("largest", [space.largest] * n),
            ("cheapest", [space.cheapest] * n),
        ):
            fixed[name] = fixed.get(name, 0.0) + share * load[np.array(configs)].mean(0)
        true_rows += [load[s] for s in true_sets]
        routed_rows += [load[s] for s in routed]
        weights.append(np.full(n, share / n))
    w = np.concatenate(weights)
    spread = bound_spread_rows(routed_rows, w)
    out = {"aragog": spread}
    out.update({k: 1.0 / v.max() for k, v in fixed.items()})
    out["per-input:load"] = spread
    out[AR_PROFILED] = out[TRUE_F_SPREAD] = bound_spread_rows(true_rows, w)
    # not a policy: kept under its earlier name for the capacity table
    out["router F(r), cheapest bound at arrival"] = out["per-input:router"]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--family", action="append", choices=["llama3", "qwen2.5"])
    p.add_argument("--workflow", action="append", choices=workflows.BENCHMARKED)
    p.add_argument("--capacity-scale", type=float, default=1.0,
                   help="saturation batches scaled as aragog-eval scales them")
    p.add_argument("--time-scale", type=float, default=1.0,
                   help="latencies scaled as aragog-eval scales them")
    p.add_argument("--mixed", action="store_true",
                   help="the workflows together, in the shares the Azure trace's requests map "
                   "to (aragog.loadgen.azure_trace), as aragog-eval --mixed serves them")
    args = p.parse_args()
    from aragog.loadgen import azure_trace
    from aragog.loadgen.evaluate import scaled_pool_file  # it imports this module

    embedder = Embedder()
    root = RouterSettings.from_env().artifacts_dir or artifacts.default_dir()
    for family in args.family or ["llama3", "qwen2.5"]:
        with tempfile.TemporaryDirectory() as tmp:
            served = load_pool(scaled_pool_file(family, args.capacity_scale, tmp))
        served = dataclasses.replace(served, time_scale=args.time_scale)
        gpus = ", ".join(f"{m.name} {m.instances * m.tensor_parallel}" for m in served.models)
        print(f"\n{family} (GPUs per model: {gpus}; saturation batches x{args.capacity_scale:g}, "
              f"time scale {args.time_scale:g}): requests/s, and the ratio to per-input\n")
        pool = load_pool(family)
        arts = {}
        for wid in args.workflow or workflows.BENCHMARKED:
            art, why = artifacts.load(root, pool, workflows.load(wid, pool.names))
            if art is None:
                raise SystemExit(f"{family}/{wid}: {why}; run aragog-routing build")
            arts[wid] = art
        if args.mixed:
            shares = azure_trace.mix(azure_trace.load(), list(arts))
            groups = {"mixed (" + ", ".join(f"{w} {s:.0%}" for w, s in shares.items()) + ")":
                      [(s, arts[w]) for w, s in shares.items()]}
        else:
            groups = {wid: [(1.0, art)] for wid, art in arts.items()}
        for name, parts in groups.items():
            b = mixed_bounds(parts, embedder, served)
            ref = b["per-input"]
            print(f"{name}: " + "; ".join(f"{k} {v:.2f} ({v / ref:.2f}x)" for k, v in b.items()),
                  flush=True)


if __name__ == "__main__":
    main()
