"""How each shipped workflow's EMULATED models behave: the knobs of the benchmark generator.

The emulated models (aragog.emulation.answer) answer a benchmark request correctly with a
probability set per stage by a logistic model (see `StageSpec.logit`):

    logit = offset + scale * k * (skill(model) - skill(smallest))
            - slope * (difficulty - 0.5) + UNIT * (base - propagation * (1 - upstream_ok))

(`slope` per stage, SLOPE by default; UNIT = SLOPE / 16).

- `k`, the stage's size sensitivity: how much a larger model helps at this stage (keyword
  extraction barely cares; SQL generation and solving care a lot);
- `propagation`: how much a poor upstream output lowers this stage's chance (errors
  propagate; a refine stage with a good critique can still repair a bad draft);
- `skill(model)` = logit of the model's published accuracy on the domain's reference
  benchmark (aragog/pool/pools/accuracy.yaml), so the gaps between sizes follow the
  published gaps of the family; `offset` and `scale` are fitted per workflow and family by
  `aragog.emulation.calibrate` so the one-model configurations' end-to-end accuracies match the
  published ones (results in calibration.json, checked by tests).

Voting aggregators take the plurality of the voters' answers (so independent voters help);
their own skill matters only when the vote is split.
"""

from __future__ import annotations

import dataclasses

SLOPE = 64.0
"""Logit lost from the easiest to the hardest request: difficulty dominates model size, so
many requests are easy for every model and some are hard for all.

It also sets how much of an outcome is luck (the logistic draw, spread ~1.8 logit) rather
than difficulty, which the input text shows. At 16, even a router told each request's true
difficulty could not recover more than 13-78% of the oracle's saving on most workflows
(the oracle knows the draws; measured with the threshold router of the time); at 64 such a
router recovers 87-98% on the chain and decomposition workflows and 80-86% on voting, whose
voters keep more luck by design (benchmarks/routing_ceiling.py, risk-weight router). Real
prompts are closer to the former workflows: an answer at temperature 0 is a function of
the prompt."""


UNIT = SLOPE / 16.0
"""`base`, `propagation` and the aggregators' vote bonus are written in logits of a
slope-16 world; this scales them with SLOPE, so how much a poor upstream output costs,
relative to difficulty, stays what the specs below say."""


@dataclasses.dataclass(frozen=True)
class StageSpec:
    k: float = 1.0
    base: float = 0.0
    propagation: float = 0.0
    kind: str = "solve"  # solve | vote | aggregate_vote
    slope: float = SLOPE  # how sharply difficulty decides this stage (lower: more luck)

    def logit(self, skill_gap: float, scale: float, offset: float, difficulty: float,
              upstream_ok: float, bonus: float = 0.0) -> float:
        return (offset + scale * self.k * skill_gap - self.slope * (difficulty - 0.5)
                + UNIT * (self.base + bonus - self.propagation * (1.0 - upstream_ok)))


@dataclasses.dataclass(frozen=True)
class BenchSpec:
    """One workflow's benchmark: its input domain, reference benchmark, difficulty mix and
    stage behaviour. `mix` = shares of (easy, medium, hard) requests; each tier draws its
    difficulty from a Beta distribution (`tiers`)."""

    workflow: str
    domain: str  # aragog.emulation.texts domain of the input text
    reference: str  # benchmark in accuracy.yaml the family's gaps come from (see SPECS)
    stages: dict[str, StageSpec]
    mix: tuple[float, float, float] = (0.5, 0.3, 0.2)
    tiers: tuple[tuple[float, float], ...] = ((2.0, 9.0), (6.0, 6.0), (9.0, 2.5))
    seed: int = 0


DEFAULT_STAGE = StageSpec(k=1.0, propagation=2.0)
"""Behaviour of a stage the spec does not name (a user's own workflow on benchmark inputs)."""

# References: MBPP for code (rises with size in both families, unlike Qwen's HumanEval);
# MATH for text-to-SQL, as a stand-in: no BIRD/Spider figures were found for all six models
# (pools/ACCURACY.md), and multi-step reasoning is what separates sizes there too;
# MMLU-Pro for multiple choice (the one MMLU variant published for all six); MATH for the
# decomposed multi-step problems.
SPECS: dict[str, BenchSpec] = {
    s.workflow: s
    for s in (
        BenchSpec(
            workflow="self-refine", domain="code", reference="mbpp", seed=11,
            stages={
                "generate": StageSpec(k=1.0),
                "critique": StageSpec(k=0.5, base=1.0, propagation=0.5),
                "refine": StageSpec(k=0.8, base=0.5, propagation=2.0),
            },
        ),
        BenchSpec(
            workflow="text-to-sql", domain="sql", reference="math", seed=12,
            stages={
                "keywords": StageSpec(k=0.1, base=2.5),
                "columns": StageSpec(k=0.5, base=1.5, propagation=2.0),
                "sql": StageSpec(k=2.0, base=0.5, propagation=3.0),
                "refine": StageSpec(k=0.5, base=1.5, propagation=3.0),
            },
        ),
        BenchSpec(
            workflow="voting", domain="mcq", reference="mmlu_pro", seed=13,
            stages={
                # sampled reasoning varies between voters: luck matters more than elsewhere
                # (half the slope), which is why independent votes help
                **{f"voter{i}": StageSpec(k=1.0, kind="vote", slope=32.0) for i in range(1, 5)},
                "aggregate": StageSpec(k=0.3, kind="aggregate_vote"),
            },
        ),
        BenchSpec(
            workflow="task-decomposition", domain="math", reference="math", seed=14,
            stages={
                "decompose": StageSpec(k=0.7, base=1.5),
                **{f"solve_{c}": StageSpec(k=1.0, base=0.5, propagation=2.0) for c in "abc"},
                "aggregate": StageSpec(k=0.4, base=1.5, propagation=3.0),
            },
        ),
    )
}
