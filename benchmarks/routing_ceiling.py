"""How much of the oracle's saving a router *could* recover on the EMULATED benchmarks.

The oracle knows each request's true F(r), draws of luck included; a router sees only the
text. This trains the router exactly as `aragog-routing build` does (same MLP, same
cross-fitted risk weight), but on the request's true latent difficulty instead of its text
embedding (a radial encoding of it): what it recovers on the held-out split is the ceiling
that luck alone leaves to any text router. It is how the benchmark's SLOPE was chosen
(aragog/bench/specs.py).

The other signals bound a router that reads the text:
- `--levels`: the levels the text's features were drawn at (aragog.emulation.texts
  .render_with_levels; their mean and count, which is all they tell of the difficulty). The
  text depends on the difficulty only through them, so no text reader, with any embedding,
  knows more: what this recovers bounds every text router;
- `--text`: the difficulty as a ridge regression reads it from the router's own embedding,
  fitted on the training split's true difficulties (which no router has);
- `--noise SD`: the true difficulty blurred by Gaussian noise (how exact a reading must be).

    python benchmarks/routing_ceiling.py [--family llama3] [--workflow voting]
        [--levels | --text | --noise SD]
"""

from __future__ import annotations

import argparse

import numpy as np
from aragog import workflows
from aragog.common.pool import load_pool
from aragog.common.settings import RouterSettings
from aragog.emulation.generate import benchmark, feature_levels
from aragog.routing import artifacts
from aragog.routing import model as router_model
from aragog.routing.embedding import Embedder
from aragog.routing.space import build as build_space
from aragog.training import build as builder
from aragog.training import dataset, graders, profiler


def difficulty_features(d: np.ndarray, width: float = 0.05, n: int = 24) -> np.ndarray:
    centers = np.linspace(0.0, 1.0, n)
    return np.exp(-(((d[:, None] - centers[None]) / width) ** 2)).astype(np.float32)


RIDGE_ALPHAS = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)


def _ridge(x: np.ndarray, y: np.ndarray, alpha: float):
    mu, y0 = x.mean(0), y.mean()
    w = np.linalg.solve((x - mu).T @ (x - mu) + alpha * np.eye(x.shape[1]), (x - mu).T @ (y - y0))
    return lambda z: (z - mu) @ w + y0


def _cross_fitted(x: np.ndarray, y: np.ndarray, alpha: float, folds: int = 5) -> np.ndarray:
    out = np.empty(len(y))
    for f in np.array_split(np.random.default_rng(1).permutation(len(y)), folds):
        fit = np.setdiff1d(np.arange(len(y)), f)
        out[f] = _ridge(x[fit], y[fit], alpha)(x[f])
    return out


def text_difficulty(x: np.ndarray, d: np.ndarray, train: np.ndarray, test: np.ndarray):
    """The difficulty as a ridge regression reads it from embeddings `x` (its alpha chosen
    by cross-validation on `train`): cross-fitted on `train`, fitted on all of it for
    `test`; and its R^2 on `test`."""
    x = x.astype(np.float64)
    fits = {a: _cross_fitted(x[train], d[train], a) for a in RIDGE_ALPHAS}
    alpha = min(fits, key=lambda a: np.mean((fits[a] - d[train]) ** 2))
    est = np.empty(len(d))
    est[train] = fits[alpha]
    est[test] = _ridge(x[train], d[train], alpha)(x[test])
    r2 = 1 - np.mean((est[test] - d[test]) ** 2) / np.var(d[test])
    return np.clip(est, 0.0, 1.0), float(r2)


def levels_features(levels: list[list[float]]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and count of each request's feature levels (with equal, independent Gaussian
    noise per feature they are sufficient for the surface difficulty the levels were drawn
    around) as router input; and the mean."""
    mean = np.clip([np.mean(lv) for lv in levels], 0.0, 1.0)
    count = np.array([len(lv) for lv in levels])
    onehot = (count[:, None] == np.arange(1, count.max() + 1)[None]).astype(np.float32)
    return np.hstack([difficulty_features(mean), onehot]), mean


def ceiling(family: str, wid: str, text: bool = False, noise: float = 0.0,
            levels: bool = False, seeds: int = 1) -> dict:
    """The bound on the true difficulty, on the text's feature levels (`levels`), on the
    difficulty read from the text (`text`), or on the true one blurred by Gaussian `noise`."""
    pool = load_pool(family)
    space = build_space(workflows.load(wid, pool.names), pool)
    items = list(benchmark(wid).items)
    prof = profiler.profile(space, dataset.from_benchmark(wid),
                            graders.make(builder.BENCHMARK_GRADER))
    d = np.array([it.difficulty for it in items])
    train = np.array([i for i, it in enumerate(items) if it.split == "train"])
    test = np.array([i for i, it in enumerate(items) if it.split == "test"])
    r2 = 1.0
    x = None
    if levels:
        x, mean = levels_features(feature_levels(wid))
        r2 = 1 - np.mean((mean[test] - d[test]) ** 2) / np.var(d[test])
    elif text:
        settings = RouterSettings.from_env()
        root = settings.artifacts_dir or artifacts.default_dir()
        emb = builder.embeddings(root, Embedder.from_settings(settings), [it.input for it in items])
        d, r2 = text_difficulty(emb, d, train, test)
    elif noise:
        blurred = np.clip(d + np.random.default_rng(2).normal(0.0, noise, len(d)), 0.0, 1.0)
        r2 = 1 - np.mean((blurred[test] - d[test]) ** 2) / np.var(d[test])
        d = blurred
    if x is None:
        x = difficulty_features(d)
    cost, largest = space.gpu_seconds, space.largest
    oracle_saving = np.mean([
        cost[largest] - cost[router_model.cheapest_of(space, np.flatnonzero(prof.preserving[i]))]
        for i in test])
    runs = []  # (risk weight, recovered, lost points) per training seed
    for seed in range(seeds):
        router, _ = builder.train_router(space, x, prof, train, seed=seed)
        chosen = np.array([router_model.cheapest_of(space, router.route(x[i], space))
                           for i in test])
        lost = np.mean(prof.largest_correct[test] & ~prof.preserving[test, chosen])
        saving = np.mean(cost[largest] - cost[chosen])
        runs.append((router.risk_weight, saving / max(oracle_saving, 1e-12), 100 * lost))
    return {
        "family": family,
        "workflow": wid,
        "risk_weight": [w for w, _, _ in runs],
        "recovered": [float(r) for _, r, _ in runs],
        "oracle_saving_share": float(oracle_saving / cost[largest]),
        "accuracy_lost_points": [float(lost) for _, _, lost in runs],
        "difficulty_r2": r2,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--family", action="append", choices=["llama3", "qwen2.5"])
    p.add_argument("--workflow", action="append", choices=workflows.BENCHMARKED)
    p.add_argument("--levels", action="store_true",
                   help="train on the text's feature levels (the bound on any text router)")
    p.add_argument("--text", action="store_true",
                   help="train on the difficulty read from the text, not the true one")
    p.add_argument("--noise", type=float, default=0.0, metavar="SD",
                   help="train on the true difficulty plus Gaussian noise of this spread")
    p.add_argument("--seeds", type=int, default=1,
                   help="train this many times (training seeds 0..N-1); report each and the mean")
    args = p.parse_args()
    print("| pool | workflow | difficulty R^2 | risk weight | oracle saving / largest | "
          "ceiling recovered (lost pts) per seed | mean recovered |")
    print("|---|---|---|---|---|---|---|")
    for family in args.family or ["llama3", "qwen2.5"]:
        for wid in args.workflow or workflows.BENCHMARKED:
            r = ceiling(family, wid, text=args.text, noise=args.noise, levels=args.levels,
                        seeds=args.seeds)
            runs = ", ".join(f"{v:.0%} ({lost:.2f})"
                             for v, lost in zip(r["recovered"], r["accuracy_lost_points"],
                                                strict=True))
            weights = ", ".join(f"{w:.3g}" for w in r["risk_weight"])
            print(f"| {family} | {wid} | {r['difficulty_r2']:.2f} | {weights} | "
                  f"{r['oracle_saving_share']:.2f} | {runs} | {np.mean(r['recovered']):.0%} |",
                  flush=True)


if __name__ == "__main__":
    main()
