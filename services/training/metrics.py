"""RouteLLM's metrics of a strong/weak router: the performance curve, APGR and CPT(x%).

Ong et al., "RouteLLM: Learning to Route LLMs with Preference Data" (arXiv 2406.18665), §5.
A router gives each prompt a score (higher: more need for the strong model); a threshold
sends the prompts scoring at or above it to the strong model, the rest to the weak one.
Sweeping the threshold traces performance (mean correctness) against the share of strong
calls, from the weak model alone (share 0) to the strong model alone (share 1).

- PGR (performance gap recovered) at a share: (performance - weak) / (strong - weak).
- APGR: the area under PGR over the strong-call share from 0 to 1, i.e. its average.
  Random routing gives 0.5; an oracle can exceed 1 where the weak model is right and the
  strong one wrong (it sends those last).
- CPT(x%): the smallest strong-call share at which PGR reaches x% (a fraction here).

How this differs from RouteLLM's evaluation code (routellm/evals/evaluate.py at 0b64fda,
read for the definitions): RouteLLM samples the curve at 11 score quantiles and integrates
those points with the trapezoidal rule, and reads CPT by interpolating them. Here the curve
is exact: one point at every threshold a router can realise (each distinct score), joined
by straight lines, so its area and CPT do not depend on a sampling. Equal scores are routed
together; the straight segment across such a tie is the expected performance if the tie
were broken at random, so neither the input order nor a sort's tie rule changes a figure.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Curve:
    """Performance at each realisable strong-call share (ascending, from 0 to 1)."""

    share: np.ndarray
    performance: np.ndarray
    weak: float  # performance at share 0: the weak model alone
    strong: float  # at share 1: the strong model alone

    @property
    def pgr(self) -> np.ndarray:
        """Performance gap recovered at each point."""
        return (self.performance - self.weak) / (self.strong - self.weak)


def curve(strong_correct, weak_correct, score) -> Curve:
    """The performance curve of router scores `score` on prompts where the strong and weak
    models were correct or not (arrays of equal length; bools or 0..1 grades)."""
    s = np.asarray(strong_correct, dtype=float)
    w = np.asarray(weak_correct, dtype=float)
    x = np.asarray(score, dtype=float)
    if not (s.shape == w.shape == x.shape) or s.ndim != 1 or not len(s):
        raise ValueError(f"need three non-empty 1-D arrays of one length, got shapes "
                         f"{s.shape}, {w.shape}, {x.shape}")
    if np.isnan(x).any():
        raise ValueError("scores contain NaN")
    n = len(s)
    order = np.argsort(-x, kind="stable")
    gained = np.concatenate([[0.0], np.cumsum((s - w)[order])])  # after the top k go strong
    ranked = x[order]
    ends = np.concatenate([[0], np.flatnonzero(ranked[1:] != ranked[:-1]) + 1, [n]])
    return Curve(ends / n, (w.sum() + gained[ends]) / n, float(w.mean()), float(s.mean()))


def _gap(c: Curve) -> None:
    if c.strong == c.weak:
        raise ValueError("the strong and weak models perform alike: no gap to recover")


def apgr(c: Curve) -> float:
    """Average performance gap recovered: the area under PGR over shares 0 to 1 (exact for
    the piecewise-linear curve)."""
    _gap(c)
    p = c.pgr
    return float(np.sum((p[1:] + p[:-1]) / 2 * np.diff(c.share)))


def cpt(c: Curve, x: float) -> float:
    """Call-performance threshold: the smallest strong-call share (0..1) at which PGR
    reaches `x` (0.5 for CPT(50%)); NaN if no share does."""
    _gap(c)
    p = c.pgr
    reached = np.flatnonzero(p >= x)
    if not len(reached):
        return float("nan")
    j = int(reached[0])
    if j == 0:
        return 0.0
    s0, s1, p0, p1 = c.share[j - 1], c.share[j], p[j - 1], p[j]
    return float(s0 + (x - p0) / (p1 - p0) * (s1 - s0))


def share_for(c: Curve, performance: float) -> float:
    """The smallest strong-call share at which performance reaches `performance` (NaN if
    none does): how RouteLLM's "x% of GPT-4's quality at y% of the calls" reads."""
    _gap(c)
    return cpt(c, (performance - c.weak) / (c.strong - c.weak))


def summary(strong_correct, weak_correct, score) -> dict[str, float]:
    """APGR, CPT(50%) and CPT(80%) of one router, with the two models' performance."""
    c = curve(strong_correct, weak_correct, score)
    return {"apgr": apgr(c), "cpt50": cpt(c, 0.5), "cpt80": cpt(c, 0.8),
            "weak": c.weak, "strong": c.strong}
