"""Offline evaluation of the router on the held-out split (EMULATED models' answers).

For every held-out request: F(r) predicted from its text (embedding + MLP + cost-order
search, timed as the router service runs it: one request at a time); its cheapest
configuration is run, as are the largest and the per-workflow configurations. Reported:
accuracy of each, mean |F(r)|, recall and precision of F(r) against the profiled truth,
the oracle's GPU-second saving (cheapest configuration of the true F(r)) and the share of it
the router recovers, and router latency p50/p99.
"""

from __future__ import annotations

import math
import time

import numpy as np
from aragog.emulation.generate import benchmark
from aragog.emulation.run import Runner
from aragog.routing.artifacts import Artifacts
from aragog.routing.embedding import Embedder
from aragog.routing.model import cheapest_of


def evaluate(art: Artifacts, embedder: Embedder, budget: int = 4096) -> dict:
    space = art.space
    items = benchmark(space.workflow.id).split("test")
    rows = art.rows
    cost = space.gpu_seconds
    largest, pw = space.largest, art.per_workflow
    acc = {"router": [], "largest": [], "per_workflow": [], "oracle": []}
    sizes, recall, precision, latency, router_saving, oracle_saving = [], [], [], [], [], []
    for it in items:
        t0 = time.perf_counter()
        x = art.features([it.input], embedder)[0]
        f_hat = art.router.route(x, space, budget=budget)
        latency.append(time.perf_counter() - t0)
        truth = art.profile.preserving[rows[it.input]]
        true_f = np.flatnonzero(truth)
        chosen, oracle = cheapest_of(space, f_hat), cheapest_of(space, true_f)
        run = Runner(space.workflow, it.input)
        for name, c in (
            ("router", chosen),
            ("largest", largest),
            ("per_workflow", pw),
            ("oracle", oracle),
        ):
            acc[name].append(run.answer(space.models(c)) == it.answer)
        hit = truth[f_hat].sum()
        sizes.append(len(f_hat))
        recall.append(hit / len(true_f))
        precision.append(hit / len(f_hat))
        router_saving.append(cost[largest] - cost[chosen])
        oracle_saving.append(cost[largest] - cost[oracle])
    lat_ms = np.array(latency) * 1000
    accuracy = {k: float(np.mean(v)) for k, v in acc.items()}
    return {
        "workflow": space.workflow.id,
        "family": space.pool.family,
        "held_out_requests": len(items),
        "configurations": space.size,
        "accuracy": accuracy,
        "accuracy_gap_to_largest_points": 100 * (accuracy["largest"] - accuracy["router"]),
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
