"""`routellm`: RouteLLM's strong/weak routers (Ong et al., arXiv 2406.18665), per request or
per stage.

Algorithm. A router scores a prompt by how likely the strong model is needed; prompts
scoring at or above a threshold go to the strong model, the rest to the weak one. Two
routers, both reading the features Aragog's own router reads (MiniLM + lexical):
- `mf`, RouteLLM's matrix factorisation: a learned vector per model (unit length), the
  prompt's features projected to the same space; a model's score is a linear read-out of
  their elementwise product, and the strong model's win probability is the sigmoid of the
  strong score minus the weak one. Trained on "the weak model loses" labels.
- `clf`, a logistic-regression classifier on the same features (the "classifier on local
  embeddings" RouteLLM's BERT router stands for here).
The threshold is calibrated to a target share of strong calls: the (1 - share) quantile of
the scores of the profiling split's prompts (RouteLLM calibrates on its public prompts).

Strong = the stage's largest candidate, weak = its smallest (middle models go unused: the
router is binary). `routellm:mf@0.3` decides once per request: every stage strong, or
every stage weak (the two ends of the configuration space). `routellm:mf@0.3:stage` decides
each stage on its own, by a router trained on "this stage alone made weak loses the answer";
the decisions are made at admission from the request's input (the router holds the
embedding) and applied by the stage role when the scheduler places each stage.

Observes: the request's input text only (no load, no upstream outputs). Fails: where the
weak-vs-strong label does not follow from the text (then it is random routing, APGR ~0.5);
a stage whose label is constant in training gets constant scores, and the share cannot be
met for it (all strong or all weak); it ignores load, so a saturated strong model queues.
Trained by `aragog-routing build` (aragog.training.routellm) into routellm.npz beside the
router's artifacts.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from aragog.policies.base import (
    ALL,
    Policy,
    PolicyError,
    StageView,
    artifacts_for,
    by_size,
    trained_for,
)

FILENAME = "routellm.npz"
KINDS = ("mf", "clf")
REQUEST = "request"
"""The unit that routes a whole request; each stage's unit is `stage:<name>`."""


@dataclasses.dataclass
class Scorer:
    """One trained router: linear in the features for `clf`, bilinear for `mf`; `calibration`
    holds the sorted scores of the profiling split's prompts."""

    kind: str
    weights: dict[str, np.ndarray]
    calibration: np.ndarray

    def score(self, x: np.ndarray) -> np.ndarray:
        """Higher: the strong model more likely needed (a logit)."""
        w = self.weights
        if self.kind == "clf":
            return x @ w["w"] + w["b"]
        q = x @ w["proj"].T  # [n, dim]
        v = w["models"] / np.linalg.norm(w["models"], axis=1, keepdims=True)  # [strong, weak]
        return q @ ((v[0] - v[1]) * w["readout"])

    def threshold(self, share: float) -> float:
        """Strong iff score >= this: `share` of the calibration prompts go strong."""
        if share <= 0.0:
            return float("inf")
        return float(np.quantile(self.calibration, 1.0 - share, method="inverted_cdf"))


@dataclasses.dataclass
class RouteLLMModel:
    """Every trained router of one workflow: (kind, unit) -> Scorer."""

    scorers: dict[tuple[str, str], Scorer]

    def save(self, path: str) -> None:
        arrays = {}
        for (kind, unit), sc in self.scorers.items():
            for k, v in sc.weights.items():
                arrays[f"{kind}|{unit}|{k}"] = v
            arrays[f"{kind}|{unit}|calibration"] = sc.calibration
        with open(path, "wb") as f:
            np.savez_compressed(f, **arrays)

    @classmethod
    def load(cls, path: str) -> RouteLLMModel:
        z = np.load(path)
        scorers: dict[tuple[str, str], Scorer] = {}
        for key in z.files:
            kind, unit, name = key.split("|")
            sc = scorers.setdefault((kind, unit), Scorer(kind, {}, np.zeros(0)))
            if name == "calibration":
                sc.calibration = z[key]
            else:
                sc.weights[name] = z[key]
        return cls(scorers)

    def scorer(self, kind: str, unit: str) -> Scorer:
        return self.scorers[(kind, unit)]


def strong_weak(workflow, pool) -> tuple[list[str], list[str]]:
    """Each LLM stage's strong (largest) and weak (smallest) candidate."""
    ordered = [by_size(pool, s.candidates) for s in workflow.llm_stages]
    return [o[-1] for o in ordered], [o[0] for o in ordered]


class RouteLLMPolicy(Policy, name="routellm"):
    """RouteLLM's strong/weak routing, per request or per stage (the module docstring says
    its algorithm, what it observes and how it fails)."""

    learned = True

    def __init__(self, kind: str, share: float, per_stage: bool):
        self.kind, self.share, self.per_stage = kind, share, per_stage
        self.decides_stages = per_stage

    @classmethod
    def from_arg(cls, arg: str) -> Policy:
        usage = "routellm:<mf|clf>@<share of strong calls, 0..1>[:stage], e.g. routellm:mf@0.3"
        spec, _, mode = arg.partition(":")
        kind, _, share = spec.partition("@")
        if kind not in KINDS or mode not in ("", "stage"):
            raise PolicyError(f"policy routellm takes {usage}, not {arg[:40]!r}")
        try:
            value = float(share)
        except ValueError:
            raise PolicyError(f"policy routellm takes {usage}, not {arg[:40]!r}") from None
        if not 0.0 <= value <= 1.0:
            raise PolicyError(f"policy routellm: the share of strong calls is between 0 and 1, "
                              f"not {value}")
        return cls(kind, value, mode == "stage")

    def _strong(self, workflow, pool, request_input, routing, units: list[str]) -> list[bool]:
        art, model = trained_for(self, workflow, pool, routing, FILENAME, RouteLLMModel.load,
                                 "RouteLLM's routers")
        x = art.features([request_input], routing.embedder)
        out = []
        for unit in units:
            sc = model.scorer(self.kind, unit)
            out.append(bool(sc.score(x)[0] >= sc.threshold(self.share)))
        return out

    def admit(self, workflow, pool, request_input="", routing=None, load=None):
        if self.per_stage:
            artifacts_for(self, workflow, pool, routing)  # refuse now, not at the first stage
            return ALL
        (strong,) = self._strong(workflow, pool, request_input, routing, [REQUEST])
        models = strong_weak(workflow, pool)[0 if strong else 1]
        return self.one(workflow.config_index(models))

    def stage_state(self, workflow, pool, request_input, routing=None):
        if not self.per_stage:
            return b""
        units = [f"stage:{s.name}" for s in workflow.llm_stages]
        return bytes(self._strong(workflow, pool, request_input, routing, units))

    def stage(self, view: StageView) -> str | None:
        if view.stage_index >= len(view.state):
            return None  # admitted before this policy decided stages: the round decides
        ordered = by_size(view.pool, view.options)
        return ordered[-1] if view.state[view.stage_index] else ordered[0]
