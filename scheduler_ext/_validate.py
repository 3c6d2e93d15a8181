"""Input checks shared by the compiled round's wrapper and the pure-Python reference."""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

import numpy as np

from ._types import MAX_BEAM, WorkflowSpace


def _int_vector(name: str, value: Any) -> np.ndarray:
    arr = np.asarray(value)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array (one entry per model), got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must hold integers (int32), got {arr.dtype}")
    if arr.size and (arr.min() < np.iinfo(np.int32).min or arr.max() > np.iinfo(np.int32).max):
        raise ValueError(f"{name} does not fit in int32")
    return np.ascontiguousarray(arr, dtype=np.int32)


def check_round_args(free: Any, occupancy: Any, curves: Any, beam_width: Any
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Validate and normalize the model arrays and the beam width.

    free: int32 [n_models] (negative values mean over-committed and count as no capacity);
    occupancy: int32 [n_models], >= 0; curves: float64 [n_models, L], L >= 1, finite, >= 0;
    beam_width: int in 1..MAX_BEAM.
    """
    free_a = _int_vector("free", free)
    occ_a = _int_vector("occupancy", occupancy)
    n = free_a.shape[0]
    if occ_a.shape != (n,):
        raise ValueError(f"occupancy has {occ_a.shape[0]} entries but free has {n} (one per model)")
    if n and occ_a.min() < 0:
        raise ValueError(f"occupancy must be >= 0, got {occ_a.tolist()}")
    cur = np.asarray(curves)
    if cur.ndim != 2 or cur.shape[0] != n or cur.shape[1] < 1:
        raise ValueError(
            f"curves must be a 2-D array [n_models={n}, L >= 1] of throughput by occupancy, "
            f"got shape {cur.shape}"
        )
    if not (np.issubdtype(cur.dtype, np.floating) or np.issubdtype(cur.dtype, np.integer)):
        raise ValueError(f"curves must hold numbers (float64), got {cur.dtype}")
    cur = np.ascontiguousarray(cur, dtype=np.float64)
    if not np.isfinite(cur).all() or (cur < 0).any():
        raise ValueError("curves must be finite and >= 0 (throughput at each occupancy)")
    if isinstance(beam_width, bool | float) or not hasattr(beam_width, "__index__"):
        raise ValueError(f"beam_width must be an integer, got {beam_width!r}")
    b = operator.index(beam_width)
    if not 1 <= b <= MAX_BEAM:
        raise ValueError(f"beam_width must be in 1..{MAX_BEAM}, got {b}")
    return free_a, occ_a, cur, b


def check_queue(queue: Sequence[Any], n_models: int) -> list[list[int]]:
    """Validate every request as the compiled round does; return each one's ordered ready stages.

    Pure Python (used by the reference; the compiled round does the same checks in its walk
    over the queue).
    """
    ordered: list[list[int]] = []
    seen_spaces: set[int] = set()
    for pos, rr in enumerate(queue):
        try:
            space, configs, ready = rr.space, rr.configs, rr.ready
        except AttributeError:
            raise ValueError(f"queue[{pos}] is not a RoundRequest (it needs .space, .configs and "
                             f".ready), got {type(rr).__name__}") from None
        if id(space) not in seen_spaces:
            if not isinstance(space, WorkflowSpace):
                raise ValueError(
                    f"queue[{pos}].space must be a WorkflowSpace, got {type(space).__name__}")
            top = int(space.stage_models.max())
            if top >= n_models:
                raise ValueError(f"queue[{pos}].space names model {top} but the round has "
                                 f"{n_models} models (free has length {n_models})")
            seen_spaces.add(id(space))
        if not isinstance(configs, np.ndarray):
            raise ValueError(f"queue[{pos}].configs must be a numpy int64 array of config indices, "
                             f"got {type(configs).__name__}")
        if configs.dtype != np.int64 or configs.ndim != 1:
            raise ValueError(f"queue[{pos}].configs must be a 1-D int64 array, got "
                             f"{configs.dtype} with shape {configs.shape}")
        n_stages = space.n_stages
        stages: list[int] = []
        for obj in ready:
            try:
                s = operator.index(obj)
            except TypeError:
                raise ValueError(
                    f"queue[{pos}].ready must hold stage indices, got {obj!r}") from None
            if s < 0 or s >= n_stages:
                raise ValueError(f"queue[{pos}].ready has stage {s}, outside 0..{n_stages - 1}")
            if s in stages:
                raise ValueError(f"queue[{pos}].ready lists stage {s} twice")
            stages.append(s)
        if stages and len(configs):
            prev = -1
            size = space.size
            for i, c in enumerate(configs.tolist()):
                if c <= prev or c >= size:
                    raise ValueError(f"queue[{pos}].configs must be sorted, unique config indices "
                                     f"in [0, {size}); element {i} breaks that")
                prev = c
        depths = space.depths.tolist()
        ordered.append(sorted(stages, key=lambda st: (-depths[st], st)))
    return ordered
