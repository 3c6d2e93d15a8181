"""The profiler: which configurations preserve accuracy on each benchmark request.

A configuration c *preserves accuracy* on request r when its answer on r matches the answer
of the most expensive configuration (DESIGN, issue 4). Measuring that exhaustively costs
|configs| x |LLM stages| stage executions per request. Two savings:

1. A configuration tree: a stage's output depends only on its own and its ancestors'
   models, so configurations sharing those share the execution (aragog.emulation.run).
2. Near-monotonicity: a configuration whose models are all at least as large as a
   preserving one almost always preserves too, and one below a non-preserving one does not.
   The profiler runs the largest configuration, then the cheapest (on most requests it
   preserves, and then so does everything); then, while some configurations are undecided the
   profiler runs the one that decides most per stage execution it still costs
   (min(#undecided above it, #undecided below it) / uncached stages; the cheaper on ties)
   and infers its up-set (if it preserves) or its down-set (if not).

Inference is wrong where accuracy is not monotonic; `verify` measures how often, on
requests profiled both ways. The result, per request, is the preserving set as a bitmap.

"""

from __future__ import annotations

import dataclasses

import numpy as np
from aragog.emulation.generate import Item
from aragog.emulation.run import Runner
from aragog.routing.space import Space


@dataclasses.dataclass
class RequestProfile:
    preserving: np.ndarray  # [n] bool
    largest_correct: bool
    executions: int


def profile_request(space: Space, item: Item, exhaustive: bool = False) -> RequestProfile:
    """Which configurations preserve accuracy on `item`, and the stage executions spent."""
    runner = Runner(space.workflow, item.input)
    n = space.size
    largest = space.largest
    reference = runner.answer(space.models(largest))

    def correct(c: int) -> bool:  # preserves: answers as the largest configuration does
        return runner.answer(space.models(c)) == reference

    largest_correct = reference == item.answer
    if exhaustive:
        keep = np.array([correct(c) for c in range(n)])
        return RequestProfile(keep, largest_correct, runner.executions)
    dom = space.dominates  # dom[i, j]: i >= j
    state = np.zeros(n, dtype=np.int8)  # 0 undecided, 1 preserves, -1 does not
    state[largest] = 1
    # Most requests are easy: if the cheapest configuration preserves, everything does.
    if correct(space.cheapest):
        return RequestProfile(np.ones(n, dtype=bool), largest_correct, runner.executions)
    state[dom[space.cheapest, :]] = -1
    cheap_first = np.argsort(np.argsort(space.flops, kind="stable"))
    while True:
        undecided = state == 0
        if not undecided.any():
            break
        u = undecided.astype(np.int32)
        above = dom.T @ u  # undecided configurations at or above each c
        below = dom @ u  # ... at or below each c
        # information per stage execution: what the answer decides over what it costs now
        cand = np.flatnonzero(undecided)
        work = np.array([max(1, runner.missing(space.models(c))) for c in cand])
        score = np.minimum(above[cand], below[cand]) / work - cheap_first[cand] / (n * n)
        c = int(cand[np.argmax(score)])
        if correct(c):
            state[dom[:, c] & undecided] = 1
        else:
            state[dom[c, :] & undecided] = -1
    return RequestProfile(state == 1, largest_correct, runner.executions)


@dataclasses.dataclass
class Profile:
    """Profiles of a benchmark's requests for one workflow on one pool."""

    item_ids: list[str]
    preserving: np.ndarray  # [items, n] bool
    largest_correct: np.ndarray  # [items] bool
    executions: np.ndarray  # [items] stage executions spent
    exhaustive_executions: int  # per request, without either saving

    def save(self, path: str) -> None:
        np.savez_compressed(
            path,
            item_ids=np.array(self.item_ids),
            preserving=np.packbits(self.preserving, 1),
            n=self.preserving.shape[1],
            largest_correct=self.largest_correct,
            executions=self.executions,
            exhaustive=self.exhaustive_executions,
        )

    @classmethod
    def load(cls, path: str) -> Profile:
        z = np.load(path)
        n = int(z["n"])
        return cls(
            [str(x) for x in z["item_ids"]],
            np.unpackbits(z["preserving"], 1, count=n).astype(bool),
            z["largest_correct"],
            z["executions"],
            int(z["exhaustive"]),
        )


def profile(space: Space, items: list[Item]) -> Profile:
    results = [profile_request(space, it) for it in items]
    return Profile(
        [it.id for it in items],
        np.array([r.preserving for r in results]).reshape(len(items), space.size),
        np.array([r.largest_correct for r in results], dtype=bool),
        np.array([r.executions for r in results], dtype=np.int32),
        space.size * len(space.workflow.llm_stages),
    )


def verify(space: Space, items: list[Item]) -> dict[str, float]:
    """Accelerated against exhaustive profiling on `items`: label agreement and the
    executions each needed (the exhaustive run still shares prefixes, so it is reported
    both with and without that saving)."""
    fast = [profile_request(space, it) for it in items]
    full = [profile_request(space, it, exhaustive=True) for it in items]
    agree = np.mean(
        [(f.preserving == e.preserving).mean() for f, e in zip(fast, full, strict=True)]
    )
    missed = sum(int((e.preserving & ~f.preserving).sum()) for f, e in zip(fast, full, strict=True))
    extra = sum(int((f.preserving & ~e.preserving).sum()) for f, e in zip(fast, full, strict=True))
    return {
        "requests": len(items),
        "label_agreement": float(agree),
        "preserving_missed": missed,
        "preserving_wrongly_inferred": extra,
        "executions_accelerated": float(np.mean([f.executions for f in fast])),
        "executions_tree_only": float(np.mean([e.executions for e in full])),
        "executions_exhaustive": space.size * len(space.workflow.llm_stages),
    }
