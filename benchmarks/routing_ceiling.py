"""How much of the oracle's saving a router *could* recover on the EMULATED benchmarks.

The oracle knows each request's true F(r), draws of luck included; a router sees only the
text. This trains the router exactly as `aragog-routing build` does (same MLP, same
cross-fitted risk weight), but on the request's true latent difficulty instead of its text
embedding (a radial encoding of it): what it recovers on the held-out split is the ceiling
that luck alone leaves to any text router. It is how the benchmark's SLOPE was chosen
(aragog/bench/specs.py).

    python benchmarks/routing_ceiling.py [--family llama3] [--workflow voting]
"""

from __future__ import annotations

import argparse

import numpy as np
from aragog import workflows
from aragog.bench.generate import benchmark
from aragog.common.pool import load_pool
from aragog.routing import artifacts, profiler
from aragog.routing import model as router_model
from aragog.routing.space import build as build_space


def difficulty_features(d: np.ndarray, width: float = 0.05, n: int = 24) -> np.ndarray:
    centers = np.linspace(0.0, 1.0, n)
    return np.exp(-(((d[:, None] - centers[None]) / width) ** 2)).astype(np.float32)


def ceiling(family: str, wid: str) -> dict:
    pool = load_pool(family)
    space = build_space(workflows.load(wid, pool.names), pool)
    items = list(benchmark(wid).items)
    prof = profiler.profile(space, items)
    x = difficulty_features(np.array([it.difficulty for it in items]))
    train = np.array([i for i, it in enumerate(items) if it.split == "train"])
    test = np.array([i for i, it in enumerate(items) if it.split == "test"])
    router, _ = artifacts.train_router(space, x, prof, train)
    cost, largest = space.gpu_seconds, space.largest
    router_saving, oracle_saving, lost = [], [], []
    for i in test:
        chosen = router_model.cheapest_of(space, router.route(x[i], space))
        oracle = router_model.cheapest_of(space, np.flatnonzero(prof.preserving[i]))
        router_saving.append(cost[largest] - cost[chosen])
        oracle_saving.append(cost[largest] - cost[oracle])
        lost.append(prof.largest_correct[i] and not prof.preserving[i, chosen])
    return {
        "family": family,
        "workflow": wid,
        "risk_weight": router.risk_weight,
        "recovered": float(np.mean(router_saving) / max(np.mean(oracle_saving), 1e-12)),
        "oracle_saving_share": float(np.mean(oracle_saving) / cost[largest]),
        "accuracy_lost_points": 100 * float(np.mean(lost)),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--family", action="append", choices=["llama3", "qwen2.5"])
    p.add_argument("--workflow", action="append", choices=workflows.BENCHMARKED)
    args = p.parse_args()
    print("| pool | workflow | risk weight | oracle saving / largest | ceiling recovered | "
          "accuracy lost (pts) |")
    print("|---|---|---|---|---|---|")
    for family in args.family or ["llama3", "qwen2.5"]:
        for wid in args.workflow or workflows.BENCHMARKED:
            r = ceiling(family, wid)
            print(f"| {family} | {wid} | {r['risk_weight']:.3g} | {r['oracle_saving_share']:.2f} | "
                  f"{r['recovered']:.0%} | {r['accuracy_lost_points']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
