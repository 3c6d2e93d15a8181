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

Needs the routing artifacts (`aragog-routing build`).
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile

import numpy as np
import scipy.optimize
import scipy.sparse
from aragog import workflows
from aragog.common.pool import PoolSpec, load_pool
from aragog.emulation.generate import benchmark
from aragog.loadgen.report import TRUE_F_SPREAD
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
    n, models = len(sets), load.shape[1]
    sizes = np.array([len(s) for s in sets])
    cols = np.concatenate(sets)
    nvar = len(cols) + 1  # the shares, then t
    owner = np.repeat(np.arange(n), sizes)
    a_ub = scipy.sparse.hstack([
        scipy.sparse.csr_matrix(load[cols].T / n), -np.ones((models, 1)),
    ])
    a_eq = scipy.sparse.hstack([
        scipy.sparse.csr_matrix((np.ones(len(cols)), (owner, np.arange(len(cols)))),
                                (n, len(cols))),
        scipy.sparse.csr_matrix((n, 1)),
    ])
    c = np.zeros(nvar)
    c[-1] = 1.0
    res = scipy.optimize.linprog(c, A_ub=a_ub, b_ub=np.zeros(models), A_eq=a_eq, b_eq=np.ones(n),
                                 bounds=(0, None), method="highs")
    if not res.success:
        raise RuntimeError(res.message)
    return 1.0 / res.x[-1]


def bounds(art: artifacts.Artifacts, embedder: Embedder, served: PoolSpec) -> dict[str, float]:
    """Requests/s per policy over the held-out requests, on `served` (the family's pool,
    perhaps scaled as aragog-eval scales it)."""
    wid = art.space.workflow.id
    space = art.space
    load = load_matrix(space, served)
    true_sets, routed = [], []
    for it in benchmark(wid).split("test"):
        true_sets.append(art.true_f(it.input))
        routed.append(art.router.route(art.features([it.input], embedder)[0], space))
    n = len(true_sets)
    return {
        "aragog": bound_spread(load, routed),
        "per-input": bound_fixed(load, np.array([cheapest_of(space, s) for s in true_sets])),
        "per-workflow": bound_fixed(load, np.full(n, art.per_workflow)),
        "largest": bound_fixed(load, np.full(n, space.largest)),
        "cheapest": bound_fixed(load, np.full(n, space.cheapest)),
        # not policies: the router's F(r) bound at arrival, and any router's best
        "router F(r), cheapest bound at arrival": bound_fixed(
            load, np.array([cheapest_of(space, s) for s in routed])),
        TRUE_F_SPREAD: bound_spread(load, true_sets),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--family", action="append", choices=["llama3", "qwen2.5"])
    p.add_argument("--workflow", action="append", choices=workflows.BENCHMARKED)
    p.add_argument("--capacity-scale", type=float, default=1.0,
                   help="saturation batches scaled as aragog-eval scales them")
    p.add_argument("--time-scale", type=float, default=1.0,
                   help="latencies scaled as aragog-eval scales them")
    args = p.parse_args()
    from aragog.loadgen.evaluate import scaled_pool_file  # it imports this module

    embedder = Embedder()
    for family in args.family or ["llama3", "qwen2.5"]:
        with tempfile.TemporaryDirectory() as tmp:
            served = load_pool(scaled_pool_file(family, args.capacity_scale, tmp))
        served = dataclasses.replace(served, time_scale=args.time_scale)
        gpus = ", ".join(f"{m.name} {m.instances * m.tensor_parallel}" for m in served.models)
        print(f"\n{family} (GPUs per model: {gpus}; saturation batches x{args.capacity_scale:g}, "
              f"time scale {args.time_scale:g}): requests/s, and the ratio to per-input\n")
        for wid in args.workflow or workflows.BENCHMARKED:
            pool = load_pool(family)
            art, why = artifacts.load(artifacts.default_dir(), pool, workflows.load(wid, pool.names))
            if art is None:
                raise SystemExit(f"{family}/{wid}: {why}; run aragog-routing build")
            b = bounds(art, embedder, served)
            ref = b["per-input"]
            print(f"{wid}: " + "; ".join(f"{k} {v:.2f} ({v / ref:.2f}x)" for k, v in b.items()),
                  flush=True)


if __name__ == "__main__":
    main()
