"""`agentrouter`: a step-level classifier into four model tiers (after AgentRouter).

Algorithm. Each LLM stage of a request is classified into a tier — minimal, efficient,
mid-range, frontier — by a multinomial logistic regression on six features (ours; the
published router's are not specified in enough detail to copy):
  1. role: whether the stage is a final one (no stage reads its output) or intermediate;
  2. position: its place among the LLM stages, 0 (first) to 1 (last);
  3. depth: its depth in the DAG over the workflow's deepest stage;
  4. input length: log characters of the request's input;
  5. upstream budget: log of the output tokens its upstream stages may write (the profile
     records which configurations preserve the answer, not what stages wrote, so the
     declared budget stands for the upstream outputs' length);
  6. difficulty: P(the request's weakest configuration loses the answer), a logistic
     regression on the request's text features (MiniLM + lexical, as Aragog's router).
A stage's training label is the lowest tier whose model, with every other stage on its
largest, still preserves the answer. Tiers map to a stage's candidates by size (tier t of
4 on the candidate at t/3 of the way from the smallest to the largest, rounded).

All six features are known at admission, so the router classifies every stage then
(`stage_state`: one tier per stage) and the scheduler's stage role applies each tier when
the stage is placed.

Observes: the workflow's structure and the request's text; no load, no outcomes. Fails:
where a stage's need does not follow from these features (a tier is then the usual one for
its position), and under load (a frontier-tier stage queues behind a busy large model).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from aragog.policies.base import (
    ALL,
    Policy,
    StageView,
    artifacts_for,
    by_size,
    trained_for,
)

FILENAME = "agentrouter.npz"
TIERS = ("minimal", "efficient", "mid-range", "frontier")


def candidate_of_tier(tier: int, n_candidates: int) -> int:
    """Size rank (0 = smallest) of the candidate serving `tier` among `n_candidates`."""
    return int(round(tier * (n_candidates - 1) / (len(TIERS) - 1)))


def tier_of_rank(rank: int, n_candidates: int) -> int:
    """The tier a size rank stands for (inverse of candidate_of_tier on its image)."""
    if n_candidates <= 1:
        return len(TIERS) - 1
    return int(round(rank * (len(TIERS) - 1) / (n_candidates - 1)))


def stage_features(workflow, request_input: str, difficulty: float) -> np.ndarray:
    """[LLM stages, 6]: the features of module docstring, one row per LLM stage."""
    llm = workflow.llm_stages
    read = {d for s in workflow.stages for d in s.depends_on}
    depths = workflow.depths()
    deepest = max(depths.values()) or 1
    by_name = {s.name: s for s in workflow.stages}
    rows = []
    for i, s in enumerate(llm):
        upstream = sum(by_name[d].output_tokens for d in _ancestors(s.name, by_name))
        rows.append([
            0.0 if s.name in read else 1.0,
            i / max(1, len(llm) - 1),
            depths[s.name] / deepest,
            math.log1p(len(request_input)),
            math.log1p(upstream),
            difficulty,
        ])
    return np.array(rows, dtype=np.float32)


def _ancestors(name: str, by_name: dict) -> set[str]:
    seen: set[str] = set()
    todo = list(by_name[name].depends_on)
    while todo:
        d = todo.pop()
        if d not in seen:
            seen.add(d)
            todo.extend(by_name[d].depends_on)
    return seen


@dataclasses.dataclass
class AgentRouterModel:
    """The difficulty regression (on text features) and the tier classifier (on stage
    features, standardised)."""

    difficulty_w: np.ndarray
    difficulty_b: float
    mean: np.ndarray
    scale: np.ndarray
    tier_w: np.ndarray  # [6, 4]
    tier_b: np.ndarray  # [4]

    def difficulty(self, x: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-(x @ self.difficulty_w + self.difficulty_b)))

    def tiers(self, features: np.ndarray) -> np.ndarray:
        z = (features - self.mean) / self.scale
        return np.argmax(z @ self.tier_w + self.tier_b, axis=1)

    def save(self, path: str) -> None:
        with open(path, "wb") as f:
            np.savez_compressed(f, **{k: np.asarray(v) for k, v in dataclasses.asdict(self).items()})

    @classmethod
    def load(cls, path: str) -> AgentRouterModel:
        z = np.load(path)
        return cls(z["difficulty_w"], float(z["difficulty_b"]), z["mean"], z["scale"],
                   z["tier_w"], z["tier_b"])


class AgentRouterPolicy(Policy, name="agentrouter"):
    """AgentRouter's step-level tier classifier (the module docstring says its algorithm,
    what it observes and how it fails)."""

    learned = True
    decides_stages = True

    def admit(self, workflow, pool, request_input="", routing=None, load=None):
        artifacts_for(self, workflow, pool, routing)  # refuse now, not at the first stage
        return ALL

    def stage_state(self, workflow, pool, request_input, routing=None):
        art, model = trained_for(self, workflow, pool, routing, FILENAME, AgentRouterModel.load,
                                 "its tier classifier")
        x = art.features([request_input], routing.embedder)
        tiers = model.tiers(stage_features(workflow, request_input, float(model.difficulty(x)[0])))
        return bytes(int(t) for t in tiers)

    def stage(self, view: StageView) -> str | None:
        if view.stage_index >= len(view.state):
            return None
        ordered = by_size(view.pool, view.options)
        return ordered[candidate_of_tier(view.state[view.stage_index], len(ordered))]
