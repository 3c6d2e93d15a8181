"""The round's data types, shared by the compiled kernel's wrapper and the pure-Python reference.

Kept apart from ``__init__`` so that ``reference.py`` can import them without importing the
compiled module (the reference must keep working when the extension is missing).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

#: Hard limits of the kernel. The issue asks for 10 stages x 8 candidates and |C(r)| up to 1e6;
#: these bounds leave room while keeping every intermediate product inside int64.
MAX_STAGES = 32          # per-stage bitmasks are uint32
MAX_CANDIDATES = 255     # candidate indices are stored in int16 slots
MAX_SPACE = 1 << 39      # config indices < 2^39, so n * FLEX_SCALE (2^24) < 2^63
MAX_BEAM = 1024

#: Fixed-point scales of the two ranking terms (see the package docstring).
UTIL_SCALE = 1 << 30     # normalized throughput in units of 2^-30 of the model's peak
FLEX_SCALE = 1 << 24     # share of C(r) kept, in units of 2^-24


@dataclasses.dataclass(frozen=True, eq=False)
class WorkflowSpace:
    """Configuration space of a workflow: mixed radix over its LLM stages (stage order fixed).

    ``stage_models`` int32 [n_stages, max_cands]: global model id of each candidate, -1 pads.
    ``radices`` int64 [n_stages]: number of candidates of each stage.
    ``strides`` int64 [n_stages]: candidate index of stage s in config c is
    ``(c // strides[s]) % radices[s]``; the strides must form a mixed-radix system (sorted by
    stride, each one is the product of the radices of the stages with smaller strides).
    ``depths`` int32 [n_stages]: depth of the stage in the DAG (0 = source).

    Arrays are copied to the right dtype, made C-contiguous and read-only at construction, so
    the round can trust them without re-checking. Compared and hashed by identity.
    """

    stage_models: np.ndarray
    radices: np.ndarray
    strides: np.ndarray
    depths: np.ndarray

    def __post_init__(self) -> None:
        def fix(name: str, dtype: Any, ndim: int) -> np.ndarray:
            raw = getattr(self, name)
            arr = np.asarray(raw)
            if arr.ndim != ndim:
                raise ValueError(f"WorkflowSpace.{name} must be {ndim}-D, got shape {arr.shape}")
            if arr.size and not np.issubdtype(arr.dtype, np.integer):
                raise ValueError(f"WorkflowSpace.{name} must hold integers, got {arr.dtype}")
            arr = np.array(arr, dtype=dtype, order="C", copy=True)
            arr.setflags(write=False)
            object.__setattr__(self, name, arr)
            return arr

        sm = fix("stage_models", np.int32, 2)
        radices = fix("radices", np.int64, 1)
        strides = fix("strides", np.int64, 1)
        depths = fix("depths", np.int32, 1)
        n = sm.shape[0]
        if not 1 <= n <= MAX_STAGES:
            raise ValueError(f"a workflow space needs 1..{MAX_STAGES} LLM stages, got {n}")
        if radices.shape != (n,) or strides.shape != (n,) or depths.shape != (n,):
            raise ValueError(
                "WorkflowSpace arrays disagree on the number of stages: "
                f"stage_models has {n} rows, "
                f"radices {radices.shape}, strides {strides.shape}, depths {depths.shape}"
            )
        if sm.shape[1] > MAX_CANDIDATES:
            raise ValueError(f"at most {MAX_CANDIDATES} candidates per stage, got {sm.shape[1]}")
        if (radices < 1).any() or (radices > sm.shape[1]).any():
            raise ValueError(
                f"radices must be in 1..{sm.shape[1]} (the width of stage_models), "
                f"got {radices.tolist()}"
            )
        if (depths < 0).any():
            raise ValueError(f"stage depths must be >= 0, got {depths.tolist()}")
        for s in range(n):
            cands = sm[s, : radices[s]]
            if (cands < 0).any():
                raise ValueError(
                    f"stage {s}: candidate model ids must be >= 0, got {cands.tolist()}")
            if (sm[s, radices[s]:] != -1).any():
                raise ValueError(
                    f"stage {s}: stage_models must be padded with -1 after {radices[s]} candidates")
            if len(np.unique(cands)) != len(cands):
                raise ValueError(
                    f"stage {s}: a model appears twice among its candidates {cands.tolist()}")
        size = 1
        for r in radices.tolist():
            size *= r
        if size > MAX_SPACE:
            raise ValueError(
                f"configuration space of {size} configurations exceeds the limit {MAX_SPACE}")
        if (strides < 1).any():
            raise ValueError(f"strides must be >= 1, got {strides.tolist()}")
        expected = 1
        # a one-candidate stage has digit 0 whatever its stride: only the others must tile
        for s in sorted((i for i in range(n) if radices[i] > 1), key=lambda i: int(strides[i])):
            if int(strides[s]) != expected:
                raise ValueError(
                    f"strides {strides.tolist()} do not form a mixed-radix system over radices "
                    f"{radices.tolist()} (stage {s} should have stride {expected})"
                )
            expected *= int(radices[s])
        object.__setattr__(self, "_size", size)

    @classmethod
    def from_candidates(cls, candidates: list[list[int]], depths: list[int]) -> WorkflowSpace:
        """Build the space of stages with these candidate model ids; stage 0 has stride 1."""
        if not candidates or any(len(c) == 0 for c in candidates):
            raise ValueError("every LLM stage needs at least one candidate model")
        width = max(len(c) for c in candidates)
        sm = np.full((len(candidates), width), -1, dtype=np.int32)
        for i, c in enumerate(candidates):
            sm[i, : len(c)] = c
        radices = np.array([len(c) for c in candidates], dtype=np.int64)
        strides = np.ones(len(candidates), dtype=np.int64)
        for i in range(1, len(candidates)):
            strides[i] = strides[i - 1] * radices[i - 1]
        return cls(sm, radices, strides, np.asarray(depths, dtype=np.int32))

    @property
    def size(self) -> int:
        """Number of configurations: the product of the radices."""
        return self._size  # type: ignore[attr-defined,no-any-return]

    @property
    def n_stages(self) -> int:
        return int(self.stage_models.shape[0])

    def candidate(self, configs: np.ndarray, stage: int) -> np.ndarray:
        """Candidate index of ``stage`` in each config (vectorized)."""
        return (np.asarray(configs) // self.strides[stage]) % self.radices[stage]


class RoundRequest:
    """One request in the meta-queue; the scheduler keeps the same object across rounds.

    ``configs`` int64, sorted, unique: C(r) as config indices of ``space``.
    ``ready``: stage indices waiting for placement now (any order; the round orders them by
    depth desc, then index).

    The compiled round keeps private per-request state on the object (``_state``: per-stage
    candidate counts of ``configs`` and the joint counts of the ready stages). It is keyed by the
    identity and length of ``configs``: assigning a new array (such as the narrowed C(r) a round
    returns) invalidates it, changing ``ready`` keeps the per-stage counts. Do not modify a
    ``configs`` array in place; the arrays a round returns are read-only for that reason.
    """

    __slots__ = ("space", "configs", "ready", "_state")

    def __init__(self, space: WorkflowSpace, configs: Any, ready: list[int]):
        self.space = space
        self.configs = configs
        self.ready = ready
        self._state: Any = None

    def __repr__(self) -> str:
        return (f"RoundRequest(stages={self.space.n_stages}, |C|={len(self.configs)}, "
                f"ready={self.ready})")


@dataclasses.dataclass(frozen=True)
class Placement:
    request: int  # position in the queue list passed to the round
    stage: int
    model: int    # global model id


@dataclasses.dataclass
class RoundResult:
    placements: list[Placement]          # in the order they were decided
    configs: dict[int, np.ndarray]       # narrowed C(r) for each placed request position
