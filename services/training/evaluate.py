"""Offline evaluation of the router on the held-out split of its profile (any dataset).

For every held-out request: F(r) predicted from its text (embedding + MLP + cost-order
search, timed as the router service runs it: one request at a time) and its cheapest
configuration; the profile says whether that preserves accuracy. Reported: the accuracy
loss against the largest configuration (held-out requests where the largest is right and
the chosen configuration does not preserve: an upper bound, as a configuration may also be
right where the largest is wrong), the same for the per-workflow configuration, mean |F(r)|,
recall and precision of F(r) against the profiled truth, GPU-seconds per request, the share
of the oracle's saving (cheapest configuration of the true F(r)) the router recovers, and
router latency p50/p99.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import numpy as np
from aragog.routing.artifacts import Artifacts
from aragog.routing.embedding import Embedder
from aragog.routing.model import cheapest_of
from aragog.training.dataset import Record


def evaluate(art: Artifacts, records: Sequence[Record], embedder: Embedder,
             budget: int = 4096) -> dict:
    space, prof = art.space, art.profile
    cost = space.gpu_seconds
    largest, pw = space.largest, art.per_workflow
    rows = prof.rows("test")
    if not len(rows):
        raise ValueError("the profile has no held-out (test) requests to evaluate on")
    texts = {r.id: r.input for r in records}
    lost = {"router": [], "per_workflow": []}
    sizes, recall, precision, latency, router_saving, oracle_saving = [], [], [], [], [], []
    for row in rows:
        text = texts[prof.item_ids[row]]
        t0 = time.perf_counter()
        x = art.features([text], embedder)[0]
        f_hat = art.router.route(x, space, budget=budget)
        latency.append(time.perf_counter() - t0)
        truth = prof.preserving[row]
        true_f = np.flatnonzero(truth)
        chosen, oracle = cheapest_of(space, f_hat), cheapest_of(space, true_f)
        right = bool(prof.largest_correct[row])
        lost["router"].append(right and not truth[chosen])
        lost["per_workflow"].append(right and not truth[pw])
        hit = truth[f_hat].sum()
        sizes.append(len(f_hat))
        recall.append(hit / len(true_f))
        precision.append(hit / len(f_hat))
        router_saving.append(cost[largest] - cost[chosen])
        oracle_saving.append(cost[largest] - cost[oracle])
    lat_ms = np.array(latency) * 1000
    return {
        "workflow": space.workflow.id,
        "family": space.pool.family,
        "held_out_requests": len(rows),
        "configurations": space.size,
        "largest_accuracy": float(np.mean(prof.largest_correct[rows])),
        "loss_points": {k: 100 * float(np.mean(v)) for k, v in lost.items()},
        "mean_f_size": float(np.mean(sizes)),
        "recall": float(np.mean(recall)),
        "precision": float(np.mean(precision)),
        "gpu_seconds_per_request": {
            "largest": float(cost[largest]),
            "per_workflow": float(cost[pw]),
            "router": float(cost[largest] - np.mean(router_saving)),
            "oracle": float(cost[largest] - np.mean(oracle_saving)),
        },
        "oracle_saving_recovered": float(
            np.mean(router_saving) / max(np.mean(oracle_saving), 1e-12)
        ),
        "router_latency_ms": {
            "p50": float(np.percentile(lat_ms, 50)),
            "p99": float(np.percentile(lat_ms, 99)),
        },
        "risk_weight": art.router.risk_weight if math.isfinite(art.router.risk_weight) else None,
        "embedder": embedder.id,
    }


def table(reports: list[dict]) -> str:
    head = (
        "| family | workflow | largest correct | loss router (pts) | loss per-wf (pts) | mean F | "
        "recall | precision | oracle saving recovered | p50 ms | p99 ms |\n" + "|---" * 11 + "|"
    )
    lines = [head]
    for r in reports:
        loss = r["loss_points"]
        lines.append(
            f"| {r['family']} | {r['workflow']} | {r['largest_accuracy']:.3f} | "
            f"{loss['router']:.2f} | {loss['per_workflow']:.2f} | {r['mean_f_size']:.1f} | "
            f"{r['recall']:.3f} | {r['precision']:.3f} | {r['oracle_saving_recovered']:.1%} | "
            f"{r['router_latency_ms']['p50']:.1f} | {r['router_latency_ms']['p99']:.1f} |"
        )
    return "\n".join(lines)
