"""What the router's acceptance rule and its served model are worth (EMULATED answers).

Two acceptance rules read the same MLP's probabilities and are fitted the same way
(out-of-fold over the training split's 4 folds, the largest saving whose loss stays under
MAX_LOSS); only what they accept differs:

- threshold (the paper's): F(r) is every configuration with P(preserves) >= t, closed
  upwards; its cheapest is the one that runs.
- risk weight (`RouterModel.route`): the configuration minimising relative cost +
  w x P(does not preserve), with the configurations at least as safe.

And two ways to serve what was fitted: the average of the 4 fold routers the rule was
fitted on (what `aragog-routing build` ships), or one router retrained on the whole
training split with the fitted rule (how it was built before 2026-11-27).

Each is scored on the held-out split: the share of the oracle's GPU-second saving it
recovers and the accuracy it loses (requests where the largest configuration is right and
the chosen one answers otherwise). Training seeds vary, as the held-out figures move with
them. Needs the routing artifacts (`aragog-routing build`).

    python benchmarks/routing_rules.py [--family llama3] [--workflow voting] [--seeds 3]
"""

from __future__ import annotations

import argparse

import numpy as np
from aragog import workflows
from aragog.common.pool import load_pool
from aragog.common.settings import RouterSettings
from aragog.emulation.generate import benchmark
from aragog.routing import artifacts
from aragog.routing import model as router_model
from aragog.routing.embedding import Embedder
from aragog.training import build as builder
from aragog.training import learn

THRESHOLDS = (0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.88, 0.9, 0.92, 0.94, 0.95, 0.96, 0.97, 0.975,
              0.98, 0.985, 0.99, 0.993, 0.995, 0.997, 0.998, 0.999, 0.9995, 0.9998, 0.9999)
"""The thresholds the router chose from before the risk weight."""


def threshold_choices(router, space, x: np.ndarray) -> np.ndarray:
    """[len(THRESHOLDS), requests]: the cheapest configuration with P >= t (or the largest)."""
    out = np.empty((len(THRESHOLDS), len(x)), dtype=np.int64)
    every = np.arange(space.size)
    for i, e in enumerate(x):
        p = router.probabilities(e, space, every)
        p[space.largest] = 1.0
        for t, tau in enumerate(THRESHOLDS):
            out[t, i] = router_model.cheapest_of(space, np.flatnonzero(p >= tau))
    return out


WAYS = (("threshold", "fold average"), ("risk weight", "retrained"),
        ("risk weight", "fold average"))
"""(rule, served model) pairs compared; the last is the shipped one."""


def compare(art: artifacts.Artifacts, x: np.ndarray, seeds: int) -> dict[tuple, list]:
    space, prof = art.space, art.profile
    items = benchmark(space.workflow.id).items
    train = np.array([i for i, it in enumerate(items) if it.split == "train"])
    test = np.array([i for i, it in enumerate(items) if it.split == "test"])
    decay = art.summary["validation"]["weight_decay"]
    folds = np.array_split(np.random.default_rng(0).permutation(train), builder.FOLDS)
    val = np.concatenate(folds)
    cost, largest = space.gpu_seconds, space.largest
    oracle = np.mean([cost[largest] - cost[router_model.cheapest_of(
        space, np.flatnonzero(prof.preserving[i]))] for i in test])
    rules = {"threshold": threshold_choices, "risk weight": learn.chosen_configs}
    out: dict[tuple, list] = {way: [] for way in WAYS}
    for seed in range(seeds):
        fold_models = []
        for k in range(len(folds)):
            fit = np.concatenate([f for j, f in enumerate(folds) if j != k])
            fold_models.append(learn.train(space, x[fit], prof.preserving[fit],
                                                  weight_decay=decay, seed=seed))
        served = {
            "fold average": router_model.RouterModel.average(fold_models),
            "retrained": learn.train(space, x[train], prof.preserving[train],
                                            weight_decay=decay, seed=seed),
        }
        fitted = {}  # rule -> its setting's row, fitted on the fold routers' routes
        for rule, choices in rules.items():
            oof = np.concatenate([choices(m, space, x[f]) for m, f in zip(fold_models, folds,
                                                                          strict=True)], axis=1)
            fitted[rule], _ = learn.best_within_loss(
                space, oof, prof.preserving[val], prof.largest_correct[val], builder.MAX_LOSS)
        for rule, how in WAYS:
            k = fitted[rule]
            held = (rules[rule](served[how], space, x[test])[k] if k >= 0
                    else np.full(len(test), largest))
            lost = np.mean(prof.largest_correct[test] & ~prof.preserving[test, held])
            saving = np.mean(cost[largest] - cost[held])
            out[rule, how].append((saving / oracle, 100 * lost))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--family", action="append", choices=["llama3", "qwen2.5"])
    p.add_argument("--workflow", action="append", choices=workflows.BENCHMARKED)
    p.add_argument("--seeds", type=int, default=3)
    args = p.parse_args()
    settings = RouterSettings.from_env()
    root = settings.artifacts_dir or artifacts.default_dir()
    embedder = Embedder.from_settings(settings)
    heads = [f"{rule}, {how}" for rule, how in WAYS]
    print("| pool | workflow | " + " | ".join(f"{h}: recovered (lost pts) per seed" for h in heads)
          + " | mean recovered: " + " / ".join(heads) + " |")
    print("|---|---|" + "---|" * (len(WAYS) + 1))
    for family in args.family or ["llama3", "qwen2.5"]:
        for wid in args.workflow or workflows.BENCHMARKED:
            pool = load_pool(family)
            art, why = artifacts.load(root, pool, workflows.load(wid, pool.names))
            if art is None:
                raise SystemExit(f"{family}/{wid}: {why}; run aragog-routing build")
            items = list(benchmark(wid).items)
            x = artifacts.router_input(builder.embeddings(root, embedder, [it.input for it in items]),
                                       art.lexicon, [it.input for it in items])
            r = compare(art, x, args.seeds)
            cells = [", ".join(f"{s:.0%} ({lost:.2f})" for s, lost in r[w]) for w in WAYS]
            means = " / ".join(f"{np.mean([s for s, _ in r[w]]):.0%}" for w in WAYS)
            print(f"| {family} | {wid} | " + " | ".join(cells) + f" | {means} |", flush=True)


if __name__ == "__main__":
    main()
