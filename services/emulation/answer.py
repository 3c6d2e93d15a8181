"""EMULATED answers of the pool's models (there are no weights on these machines).

One pure, deterministic function of (model, stage, prompt), shared by the Triton-hosted
emulated models and by the profiler, so what the profiler measures is what the pool serves.

For a prompt that carries a shipped benchmark request (aragog.emulation), the model answers it
correctly with the probability its stage's logistic model gives (aragog.emulation.specs):
larger models, easier requests and good upstream outputs raise it. The draw is a common
random number per (request, stage) plus a small per-model jitter, so a larger model is
almost always right when a smaller one is (accuracy is near-monotonic in model size, as
the paper observes of real models). Intermediate outputs carry a marker (`<<ok>>`,
`<<err>>`, `<<vote:X>>`) that downstream stages read back from their prompt: that is how
errors propagate. The final stage answers with the ground truth or a wrong answer.

The RECORDED models (aragog.emulation.recorded: RouteLLM's real GPT-4 and Mixtral outcomes
on MMLU) answer through `recorded.answer` instead: their correctness on a recorded MMLU
prompt is the real one; to any other prompt, a generated benchmark's included (they have no
emulated skill), they give the digest answer below.

Any other prompt gets `[model/stage] <digest> <first words>`: deterministic, and equal
prompts give equal answers.
"""

from __future__ import annotations

import functools
import hashlib
import math
import re

from aragog.emulation import calibration, recorded, skills
from aragog.emulation.generate import LETTERS, Item, index, unit
from aragog.emulation.specs import DEFAULT_STAGE, SPECS, StageSpec

PREVIEW_WORDS = 6
JITTER = 0.03
"""Width of the per-model jitter on the common draw: how far from strictly monotonic."""
MARK_RE = re.compile(r"<<(ok|err|vote:[A-Z])>>")


def answer(model: str, stage: str, prompt: str) -> str:
    if model in recorded.MODELS:
        letter = recorded.answer(model, prompt)
        return _digest(model, stage, prompt) if letter is None else letter
    item = find_item(prompt)
    if item is None:
        return _digest(model, stage, prompt)
    spec = SPECS[item.workflow]
    st = spec.stages.get(stage, DEFAULT_STAGE)
    marks = MARK_RE.findall(prompt)
    draw = unit(item.id, stage) + JITTER * (unit(item.id, stage, model) - 0.5)
    final = stage == _sink(item.workflow)
    if st.kind == "aggregate_vote":
        return _aggregate(item, model, stage, st, marks, draw, prompt)
    oks = [m == "ok" or m == f"vote:{item.answer}" for m in marks]
    upstream = sum(oks) / len(oks) if oks else 1.0
    ok = draw < probability(item, model, st, upstream)
    if st.kind == "vote":
        letter = item.answer if ok else _wrong_letter(item, stage, model)
        return f"{stage} ({model}) picks ({letter}) <<vote:{letter}>>"
    if final:
        return item.answer if ok else wrong_answer(item, stage, model, prompt)
    return f"{stage} ({model}) on request {item.id[-5:]}: {'sound' if ok else 'flawed'} step <<{'ok' if ok else 'err'}>>"


def _digest(model: str, stage: str, prompt: str) -> str:
    """The answer to a prompt no benchmark or record knows: deterministic, not an answer."""
    digest = hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:8]
    preview = " ".join(prompt.split()[:PREVIEW_WORDS])
    return f"[{model}/{stage}] {digest} {preview}".rstrip()


def probability(item: Item, model: str, st: StageSpec, upstream: float, bonus: float = 0.0) -> float:
    """Chance that `model` gets this stage of `item` right, given the upstream quality."""
    spec = SPECS[item.workflow]
    offset, scale = calibration.fit(item.workflow, skills.family(model))
    z = st.logit(skills.skill_gap(model, spec.reference), scale, offset, item.difficulty, upstream,
                 bonus)
    return 1.0 / (1.0 + math.exp(-z))


def _aggregate(item: Item, model: str, stage: str, st: StageSpec, marks: list[str],
               draw: float, prompt: str) -> str:
    """Plurality of the voters; the aggregator's own skill decides only a split vote."""
    votes = [m[5:] for m in marks if m.startswith("vote:")]
    right = votes.count(item.answer)
    wrong = {v: votes.count(v) for v in set(votes) if v != item.answer}
    top_wrong = max(wrong.values(), default=0)
    if right > top_wrong:
        p = probability(item, model, st, 1.0, bonus=2.0)
    elif right < top_wrong:
        p = probability(item, model, st, 0.0, bonus=-1.0)
    else:
        p = probability(item, model, st, 0.5)
    if draw < p:
        return item.answer
    if top_wrong:
        return max(sorted(wrong), key=lambda v: wrong[v])
    return item.lure or wrong_answer(item, stage, model, prompt)


def _wrong_letter(item: Item, stage: str, model: str) -> str:
    """Wrong voters favour the request's lure, so their errors are correlated, as real ones are."""
    if unit(item.id, stage, model, "lure") < 0.6 and item.lure:
        return item.lure
    others = [c for c in LETTERS if c != item.answer]
    return others[int(unit(item.id, stage, model, "pick") * len(others))]


def wrong_answer(item: Item, stage: str, model: str, prompt: str) -> str:
    """A wrong final answer in the ground truth's format. It depends on the whole prompt
    (so on the upstream work): two different paths rarely reach the same wrong answer,
    except on multiple choice, where only three wrong letters exist."""
    if item.answer in LETTERS:
        return _wrong_letter(item, stage, model)
    key = hashlib.blake2b(prompt.encode(), digest_size=8).hexdigest()
    if item.answer.isdigit():
        return str(int(item.answer) + 1 + int(unit(item.id, stage, model, key) * 997))
    prefix = item.answer.split(":")[0]
    return f"{prefix}:{int(unit(item.id, stage, model, key) * 16**8):08x}"


@functools.cache
def _sink(workflow: str) -> str:
    return list(SPECS[workflow].stages)[-1]


def find_item(prompt: str) -> Item | None:
    """The benchmark request a prompt carries: a line of the prompt, or what follows a line's
    `Label: `, is the request's input text."""
    idx = index()
    for line in prompt.splitlines():
        line = line.strip()
        if line in idx:
            return idx[line]
        _, sep, rest = line.partition(": ")
        if sep and rest in idx:
            return idx[rest]
    return None
