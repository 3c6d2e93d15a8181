"""The scheduling round in pure Python: the specification the compiled kernel is tested against.

Written for clarity, not speed: each beam state carries its own free-capacity list and, for
the request being expanded, the explicit list of configs it still allows; nothing is cached
between rounds. The ranking uses the same integer fixed-point terms as the kernel, so both
agree exactly (see the package docstring for the definitions).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._types import FLEX_SCALE, UTIL_SCALE, Placement, RoundResult
from ._validate import check_queue, check_round_args


@dataclass
class _State:
    free: list[int]            # free capacity per model after this state's placements
    util: int                  # utilization gain (fixed point, 2^-30)
    flex: int                  # flexibility lost (fixed point, 2^-24 of a request's options)
    history: Any               # linked list ((pos, stage, model, cand), parent) of placements
    allowed: list[int] | None  # configs of the current request still allowed (None: all)


def gain_table(curves: np.ndarray) -> list[list[int]]:
    """g[m][o] = trunc(curve[m, o] / max over all m', o' of curve[m', o'] * 2^30); all 0 if
    every curve is 0."""
    top = max((max(row) for row in curves.tolist()), default=0.0)
    return [[int(x / top * UTIL_SCALE) if top > 0 else 0 for x in row] for row in curves.tolist()]


def reference_round(queue: Sequence[Any], free: np.ndarray, occupancy: np.ndarray,
                    curves: np.ndarray, beam_width: int = 4) -> RoundResult:
    """The round of ``aragog.scheduler_ext.schedule_round``, in pure Python."""
    free_a, occ_a, curves_a, width = check_round_args(free, occupancy, curves, beam_width)
    queue = list(queue)
    n_models = len(free_a)
    ordered = check_queue(queue, n_models)
    g = gain_table(curves_a)
    last = curves_a.shape[1] - 1
    free0 = free_a.tolist()
    occ0 = occ_a.tolist()

    beam = [_State(free=list(free0), util=0, flex=0, history=None, allowed=None)]
    stop = False
    for pos, rr in enumerate(queue):
        if stop:
            break
        space = rr.space
        configs = rr.configs.tolist()
        n0 = len(configs)
        for st in beam:
            st.allowed = None
        for stage in ordered[pos]:
            # the round ends when nothing more fits
            if all(sum(max(f, 0) for f in st.free) == 0 for st in beam):
                stop = True
                break
            stride = int(space.strides[stage])
            radix = int(space.radices[stage])
            models = space.stage_models[stage].tolist()
            shared_counts = None
            children = []
            for rank, st in enumerate(beam):
                pool = configs if st.allowed is None else st.allowed
                if st.allowed is None:
                    if shared_counts is None:
                        shared_counts = Counter((c // stride) % radix for c in configs)
                    counts = shared_counts
                else:
                    counts = Counter((c // stride) % radix for c in pool)
                n_before = len(pool)
                any_child = False
                for cand in range(radix):
                    n = counts.get(cand, 0)
                    m = models[cand]
                    if n == 0 or st.free[m] <= 0:
                        continue
                    occ = occ0[m] + (free0[m] - st.free[m])
                    du = g[m][min(occ + 1, last)] - g[m][min(occ, last)]
                    df = n_before * FLEX_SCALE // n0 - n * FLEX_SCALE // n0
                    key = (-(st.util + du), st.flex + df, rank, m)
                    children.append((key, rank, m, cand))
                    any_child = True
                if not any_child:
                    # look-ahead: the request's stage waits for a later round in this state
                    children.append(((-st.util, st.flex, rank, -1), rank, -1, -1))
            children.sort(key=lambda ch: ch[0])
            new_beam = []
            for key, rank, m, cand in children[:width]:
                parent = beam[rank]
                if m < 0:
                    new_beam.append(_State(parent.free, parent.util, parent.flex,
                                           parent.history, parent.allowed))
                    continue
                pool = configs if parent.allowed is None else parent.allowed
                nfree = list(parent.free)
                nfree[m] -= 1
                new_beam.append(_State(
                    free=nfree, util=-key[0], flex=key[1],
                    history=((pos, stage, m, cand), parent.history),
                    allowed=[c for c in pool if (c // stride) % radix == cand],
                ))
            beam = new_beam

    best = beam[0]
    decided = []
    node = best.history
    while node is not None:
        decided.append(node[0])
        node = node[1]
    decided.reverse()
    narrowed: dict[int, np.ndarray] = {}
    for pos in dict.fromkeys(p for p, _, _, _ in decided):
        space = queue[pos].space
        keep = queue[pos].configs.tolist()
        for p, stage, _, cand in decided:
            if p == pos:
                stride, radix = int(space.strides[stage]), int(space.radices[stage])
                keep = [c for c in keep if (c // stride) % radix == cand]
        arr = np.array(keep, dtype=np.int64)
        arr.setflags(write=False)
        narrowed[pos] = arr
    return RoundResult([Placement(p, s, m) for p, s, m, _ in decided], narrowed)
