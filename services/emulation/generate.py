"""The shipped benchmarks, generated from a seed (nothing but this code is kept on disk).

Each workflow's benchmark has `SIZE` requests: an input text (aragog.emulation.texts, whose
surface carries real but noisy signal of the request's difficulty), a ground-truth answer,
a latent difficulty in [0, 1] (never shown to the router; the emulated models use it) and a
split: `train` (profiling and router training) or `test` (held out).

Difficulty comes from a mixture of easy, medium and hard tiers (BenchSpec.mix), so for many
requests a cheap configuration matches the largest and for others it does not.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib

import numpy as np
from aragog.emulation import texts
from aragog.emulation.specs import SPECS, BenchSpec

SIZE = 2000
TRAIN_SHARE = 0.7
LETTERS = "ABCD"


class BenchmarkError(KeyError):
    """No shipped benchmark for this workflow."""


@dataclasses.dataclass(frozen=True)
class Item:
    id: str
    workflow: str
    input: str
    answer: str
    difficulty: float
    split: str  # "train" or "test"
    lure: str = ""  # mcq: the distractor wrong voters favour


@dataclasses.dataclass(frozen=True)
class Benchmark:
    spec: BenchSpec
    items: tuple[Item, ...]

    def split(self, name: str) -> list[Item]:
        return [it for it in self.items if it.split == name]


def _answer(domain: str, rng: np.random.Generator) -> tuple[str, str]:
    """Ground truth (and, for multiple choice, the lure) in the domain's answer format."""
    if domain == "mcq":
        truth, lure = rng.choice(4, size=2, replace=False)
        return LETTERS[truth], LETTERS[lure]
    if domain == "math":
        return str(int(rng.integers(2, 100_000))), ""
    prefix = {"sql": "rows", "code": "patch"}.get(domain, "answer")
    return f"{prefix}:{int(rng.integers(16**8)):08x}", ""


@functools.cache
def benchmark(workflow: str, size: int = SIZE) -> Benchmark:
    """The workflow's benchmark; deterministic for its spec's seed."""
    spec = SPECS.get(workflow)
    if spec is None:
        raise BenchmarkError(
            f"no shipped benchmark for workflow {workflow!r}; shipped: {', '.join(sorted(SPECS))}"
        )
    rng = np.random.default_rng(spec.seed)
    tiers = rng.choice(len(spec.mix), size=size, p=np.asarray(spec.mix) / sum(spec.mix))
    seen: set[str] = set()
    raw = []
    for i in range(size):
        a, b = spec.tiers[tiers[i]]
        d = float(rng.beta(a, b))
        # the text has its own stream per request, so rewording the texts never moves the
        # difficulties, answers or split (nor the calibration fitted to them)
        text_rng = np.random.default_rng([spec.seed, i])
        text = texts.render(spec.domain, text_rng, d)
        while text in seen:  # inputs identify requests: keep them unique
            text = texts.render(spec.domain, text_rng, d)
        seen.add(text)
        truth, lure = _answer(spec.domain, rng)
        raw.append((text, truth, d, lure))
    train = set(rng.permutation(size)[: int(size * TRAIN_SHARE)].tolist())
    items = tuple(
        Item(
            f"{workflow}-{i:05d}", workflow, text, truth, d, "train" if i in train else "test", lure
        )
        for i, (text, truth, d, lure) in enumerate(raw)
    )
    return Benchmark(spec, items)


def feature_levels(workflow: str) -> list[list[float]]:
    """Each request's text feature levels (texts.render_with_levels), replayed from its own
    text stream: all a reader of its text could learn of its difficulty (for bounds only)."""
    bench = benchmark(workflow)
    out = []
    for i, it in enumerate(bench.items):
        text_rng = np.random.default_rng([bench.spec.seed, i])
        for _ in range(100):  # as generated: rerendered past duplicates
            text, levels = texts.render_with_levels(bench.spec.domain, text_rng, it.difficulty)
            if text == it.input:
                out.append(levels)
                break
        else:
            raise RuntimeError(f"{it.id}: its text stream no longer renders its input")
    return out


@functools.cache
def index() -> dict[str, Item]:
    """Every shipped benchmark request by its input text."""
    return {it.input: it for wid in SPECS for it in benchmark(wid).items}


def unit(*parts: str) -> float:
    """A uniform draw in [0, 1) fixed by `parts` (the emulation's common random numbers)."""
    h = hashlib.blake2b("|".join(parts).encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") / 2.0**64
