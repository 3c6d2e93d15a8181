"""The scheduling round: a beam search placing queued stages on models (Cython, with a reference).

Aragog's per-stage scheduler runs a round whenever an engine frees capacity, over every
queued request (DESIGN.md, "Per-stage scheduling"). This package is that round:
``schedule_round`` runs the compiled kernel (``_beam.pyx``), ``reference_round`` the same
round in pure Python (``reference.py``); the two return identical results on every input
(tests/unit/test_scheduler_ext.py holds them to it with hypothesis).

Inputs
    The meta-queue in FIFO order (``RoundRequest``: workflow space, C(r) as sorted config
    indices, ready stages), per model its free capacity (saturation batch minus occupancy), its
    occupancy and its throughput-vs-occupancy curve, and the beam width B (default 4).

Algorithm
    The round is a sequence of *steps*, one per (request, ready stage): requests in queue
    order (FIFO), and within a request its ready stages by depth descending, then stage index.
    A beam state is a partial assignment. At each step every state is expanded into one child
    per *feasible* model of the stage -- a candidate m of the stage such that some config the
    state still allows for the request picks m there, and m has free capacity left in that
    state (free[m] minus the state's own placements on m, > 0). A state with no feasible model
    gets a single "skip" child (the stage waits for a later round: look-ahead). The B best
    children by the ranking below form the next beam. The round ends after the last step, or
    as soon as no state has free capacity left ("nothing more fits"). The result is the best
    final state: its placements in the order decided, and for each placed request its C(r)
    narrowed to the configs that agree with every model chosen for it. A placement never
    happens without capacity, and several ready stages of one request can be placed in one
    round (deeper first). Per-input and per-workflow policies use the same round with
    |C(r)| = 1 (one bound configuration).

Ranking of beam states (exact integer keys, so kernel and reference agree bit for bit)
    1. Forecast utilization improvement, larger first::

           U = sum_m  g[m, min(occ_m + k_m, L-1)] - g[m, min(occ_m, L-1)]
           g[m, o] = trunc(curves[m, o] / max_m',o' curves[m', o'] * 2^30)   (0 if all are 0)

       where occ_m is the model's occupancy at the start of the round and k_m the placements
       the state made on m: the requests/second the placements add to the pool, on one scale
       for every model, summed over models. With concave curves this favours engines far
       from saturation, where one more request adds the most throughput; and between models
       it favours the one whose next slot serves the most (a fast small model over a slow
       large one, until the small one saturates). Scaling each model by its own peak instead
       made a slot of a 70B model worth as much as a slot of a 3B one, so an idle pool sent
       work to the slowest model first.
    2. Flexibility preservation, larger first, i.e. the flexibility lost, smaller first::

           F_lost = sum over requests placed in the state of
                    q(|C(r)|) - q(|C'(r)|),   q(n) = floor(n * 2^24 / |C(r)|)

       C(r) is the request's option set at the start of the round and C'(r) what the state's
       choices leave of it: the share of each request's future options that the round
       removes (a request the state did not place loses nothing).
    3. Deterministically: the parent's rank in the previous beam, then the smaller global
       model id (the skip child ranks as model -1; it never competes with a sibling).

Per-request state kept between rounds
    The compiled round keeps on each ``RoundRequest`` the candidate counts of its ready
    stage(s) for its current C(r) (per stage, plus the joint counts of several ready stages),
    keyed by the identity of the ``configs`` array. While a request waits through rounds its
    C(r) is never scanned again; once placed, its narrowed C(r) -- which never contains the
    options the placement removed -- is the array the next rounds scan, once. The GIL is
    released for the scan, the beam search and the narrowing.

Failure modes
    Bad input raises ValueError naming the queue position (wrong dtype or shape, unsorted or
    duplicate configs, a ready stage out of range or listed twice, a model id past the model
    arrays, beam width outside 1..1024). ``schedule_round`` raises RuntimeError when the
    compiled module is missing; ``require_extension()`` says so up front (the scheduler service
    calls it at start). Rounds over the same ``RoundRequest`` objects must not run
    concurrently (the per-request state is updated in place).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ._types import (
    FLEX_SCALE,
    MAX_BEAM,
    MAX_CANDIDATES,
    MAX_SPACE,
    MAX_STAGES,
    UTIL_SCALE,
    Placement,
    RoundRequest,
    RoundResult,
    WorkflowSpace,
)
from ._validate import check_round_args
from .reference import reference_round

try:
    from . import _beam
except ImportError as exc:  # pragma: no cover - exercised by the service's start check
    _beam = None
    _IMPORT_ERROR: ImportError | None = exc
else:
    _IMPORT_ERROR = None

#: True when the compiled round ``aragog.scheduler_ext._beam`` could be imported.
HAVE_EXTENSION = _beam is not None
#: What schedule_round runs: the compiled module's file (shown by the scheduler's state).
ROUND_IMPL = str(getattr(_beam, "__file__", "")) if _beam is not None else "missing"

__all__ = [
    "FLEX_SCALE",
    "HAVE_EXTENSION",
    "MAX_BEAM",
    "MAX_CANDIDATES",
    "MAX_SPACE",
    "MAX_STAGES",
    "ROUND_IMPL",
    "UTIL_SCALE",
    "Placement",
    "RoundRequest",
    "RoundResult",
    "WorkflowSpace",
    "reference_round",
    "require_extension",
    "schedule_round",
]


def require_extension() -> None:
    """Raise RuntimeError with instructions when the compiled round cannot be imported."""
    if _beam is None:
        raise RuntimeError(
            "the compiled scheduling round aragog.scheduler_ext._beam is missing; reinstall with "
            "`pip install .` (or `pip install -e . --no-build-isolation`, or `make build-ext` for "
            "an in-place build), which compiles scheduler_ext/_beam.pyx with Cython and a C "
            f"compiler (import error: {_IMPORT_ERROR})"
        )


def schedule_round(queue: Sequence[RoundRequest], free: np.ndarray, occupancy: np.ndarray,
                   curves: np.ndarray, beam_width: int = 4) -> RoundResult:
    """Run one scheduling round with the compiled kernel (see the module docstring).

    free, occupancy: int32 [n_models]; curves: float64 [n_models, L], curves[m, o] = throughput
    of model m at occupancy o (callers pad with the last value; occupancies past L-1 read the
    last value). Returns the placements in the order decided and the narrowed C(r) of each
    placed request position (read-only int64 arrays).
    """
    require_extension()
    free_a, occ_a, curves_a, beam = check_round_args(free, occupancy, curves, beam_width)
    rows, configs, _ = _beam.run_round(
        queue if type(queue) is list else list(queue), free_a, occ_a, curves_a, beam, WorkflowSpace
    )
    return RoundResult([Placement(p, s, m) for p, s, m in rows], configs)


def _request_state(request: RoundRequest) -> Any:
    """The compiled round's cached state of a request (tests and introspection)."""
    return request._state
