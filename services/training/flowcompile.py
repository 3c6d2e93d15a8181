"""Compiling a workflow into FlowCompile's Pareto set (aragog.policies.flowcompile).

"Measuring" a configuration here reads its column of the profile over the profiling split,
which is what running it over that split would give; the count of configurations measured is
what the proxy saves a compile that has no exhaustive profile to read.
"""

from __future__ import annotations

import numpy as np
from aragog.policies.flowcompile import FILENAME, ParetoSet
from aragog.routing.artifacts import Profile
from aragog.routing.space import Space

__all__ = ["FILENAME", "compile_front", "pareto"]


def pareto(cost: np.ndarray, accuracy: np.ndarray) -> np.ndarray:
    """Positions of the Pareto-optimal points (no other is as cheap and more accurate, or
    cheaper and as accurate), cheapest first."""
    order = np.lexsort((-accuracy, cost))
    keep, best = [], -np.inf
    for i in order:
        if accuracy[i] > best + 1e-12:
            keep.append(int(i))
            best = accuracy[i]
    return np.array(keep, dtype=np.int64)


def compile_front(space: Space, prof: Profile, rows: np.ndarray) -> ParetoSet:
    """The proxy-guided compile over requests `rows` (module docstring of the policy)."""
    measured: dict[int, float] = {}

    def measure(c: int) -> float:
        if c not in measured:
            measured[c] = float(prof.preserving[rows, c].mean())
        return measured[c]

    ranks, top = space.ranks, space.ranks.max(0)
    predicted = np.ones(space.size)
    for s in range(ranks.shape[1]):
        per_rank = {}
        for r in range(int(top[s]) + 1):
            want = top.copy()
            want[s] = r
            per_rank[r] = measure(int(np.flatnonzero((ranks == want).all(1))[0]))
        predicted *= np.array([per_rank[int(r)] for r in ranks[:, s]])
    for c in pareto(space.gpu_seconds, predicted):
        measure(int(c))
    configs = np.array(sorted(measured), dtype=np.int64)
    acc = np.array([measured[int(c)] for c in configs])
    keep = configs[pareto(space.gpu_seconds[configs], acc)]
    return ParetoSet(keep, np.array([measured[int(c)] for c in keep]),
                     space.gpu_seconds[keep].astype(float), len(measured), space.size)
