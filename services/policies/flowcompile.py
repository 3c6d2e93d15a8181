"""`flowcompile`: a workflow compiled once into a Pareto set of configurations, each request
bound to the member its preference asks for.

Algorithm (after FlowCompile's compile-time exploration; aragog.training.flowcompile).
At build time, with a structure-aware proxy instead of measuring every configuration: each
stage's sensitivity is measured alone (that stage on each of its candidates, every other
stage on its largest, over the profiling split), a configuration's accuracy is predicted as
the product of its stages' measured accuracies (stages fail independently along the DAG),
the predicted Pareto front (GPU-seconds against accuracy) is then measured, and the set
kept is the Pareto front of everything measured. Accuracy is the share of the profiling
split a configuration answers as the largest does (the paper's "preserves accuracy").

At run time, per request, one member is bound at arrival:
- `flowcompile:<beta>` (0..1): the member maximising (1 - beta) x accuracy - beta x cost,
  both scaled to the set's range: 0 is the most accurate (the largest configuration), 1 the
  cheapest member.
- `flowcompile:acc>=<a>`: the cheapest member whose accuracy is at least `a` (0..1), else
  the most accurate one.

Observes: nothing of the request (the same member for every request of a workflow at one
preference) and no load. Fails: the proxy misses configurations whose stages interact (a
weak draft a strong refine repairs), so the set can lack them; it cannot adapt to an input
(an easy request pays for the hard ones) or to load (a bound member queues behind a busy
model).
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
from aragog.policies.base import Policy, PolicyError, trained_for

FILENAME = "flowcompile.json"


@dataclasses.dataclass
class ParetoSet:
    """The compiled set, cheapest first (accuracy then rises strictly)."""

    configs: np.ndarray  # int64 configuration indices
    accuracy: np.ndarray  # on the profiling split
    gpu_seconds: np.ndarray
    measured: int  # configurations the compile measured
    configurations: int  # in the whole space

    def to_json(self) -> dict:
        return {"configs": self.configs.tolist(), "accuracy": self.accuracy.tolist(),
                "gpu_seconds": self.gpu_seconds.tolist(), "measured": self.measured,
                "configurations": self.configurations}

    def save(self, path: str) -> None:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_json(), f, indent=1)

    @classmethod
    def load(cls, path: str) -> ParetoSet:
        with open(path, encoding="utf-8") as f:
            d = json.load(f)
        return cls(np.array(d["configs"], dtype=np.int64), np.array(d["accuracy"]),
                   np.array(d["gpu_seconds"]), int(d["measured"]), int(d["configurations"]))

    def by_preference(self, beta: float) -> int:
        acc, cost = self.accuracy, self.gpu_seconds
        span_a = max(float(acc.max() - acc.min()), 1e-12)
        span_c = max(float(cost.max() - cost.min()), 1e-12)
        value = (1 - beta) * (acc - acc.min()) / span_a - beta * (cost - cost.min()) / span_c
        return int(self.configs[int(np.argmax(value))])  # ties: the cheaper (first)

    def cheapest_with(self, accuracy: float) -> int:
        ok = np.flatnonzero(self.accuracy >= accuracy - 1e-12)
        return int(self.configs[ok[0]] if len(ok) else self.configs[-1])


class FlowCompilePolicy(Policy, name="flowcompile"):
    """FlowCompile's compiled Pareto set, one member bound per request (the module docstring
    says its algorithm, what it observes and how it fails)."""

    def __init__(self, beta: float | None, accuracy: float | None):
        self.beta, self.accuracy = beta, accuracy

    @classmethod
    def from_arg(cls, arg: str) -> Policy:
        usage = "flowcompile:<beta 0..1> or flowcompile:acc>=<accuracy 0..1>"
        text = arg.removeprefix("acc>=")
        try:
            value = float(text)
        except ValueError:
            raise PolicyError(f"policy flowcompile takes {usage}, not {arg[:40]!r}") from None
        if not 0.0 <= value <= 1.0:
            raise PolicyError(f"policy flowcompile takes {usage}: {value} is outside 0..1")
        return cls(None, value) if text != arg else cls(value, None)

    def admit(self, workflow, pool, request_input="", routing=None, load=None):
        _, front = trained_for(self, workflow, pool, routing, FILENAME, ParetoSet.load,
                               "its compiled Pareto set")
        if self.beta is not None:
            return self.one(front.by_preference(self.beta))
        return self.one(front.cheapest_with(self.accuracy))
