"""The simulator checked against the live stack: the same arrivals served both ways.

    python -m aragog.sim.validate --workflow self-refine --policy largest --rate 2 --duration 30
    python -m aragog.sim.validate --pool qwen2.5 --capacity-scale 0.0625 --time-scale 0.15 \
        --workflow voting --policy largest --rate 9      # the evaluation's scale, overloaded

starts the stack (embedded EMULATED pool, its own Redis), sends each workflow's held-out
requests open-loop at Poisson arrivals (aragog.loadgen.runner), replays the same arrivals
in the simulator, and prints both sides' throughput, p50/p95 latency and share of stages per
model, with the simulator's relative difference, and how the calls met at the models'
batchers, and per stage the wait for a lease and the call. Where they differ the live stack
holds what the simulator leaves out (core.py's docstring): the time spent around each model
call above all (AcquireStage, the group commit, the release, the call's way through
Triton), which a ControlPath stands for (by default as measured on the live stack here:
MEASURED below; `--control-ms`, `--control-before`, `--release-ms`, `--call-way-ms`).
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from aragog.common.pool import PoolSpec, load_pool
from aragog.loadgen import report
from aragog.loadgen.arrivals import poisson
from aragog.sim.core import Arrival, BatcherStats, ControlPath, Simulator
from aragog.workflows import BENCHMARKED

FIGURES = ("throughput", "latency_p50_s", "latency_p95_s")
# What the live stack spends around each model call, as measured on it (2-core host, 2
# executors, warm; benchmarks/README.md, "Simulator"). Each part is read from the live
# stack's own timings (StageResult), the ones how_calls_meet prints, never from the figures
# the validation compares:
# - qwen2.5 task-decomposition at 60% load (2026-12-01): placement to model call p50 3.2 ms;
#   answer to the next stage's placement p50 5.7 ms; a call p50 8-10 ms longer than the
#   model's time (through Triton and the pool's handler, the lease held);
# - near saturation, llama3 and qwen2.5 voting (six runs, 2026-12-02): one batch's answers
#   0.33-0.42 ms apart at their executors (p50); sends placed by one round 0.36-0.53 ms
#   apart when of one request, 0.77-1.18 ms when of two on two executors (p50; one
#   request's control paths correlated 0.75, two requests' drawn on their own: two requests
#   on one executor shared batches no more often than on two); rounds at least 0.8-1.1 ms
#   apart (p1: a round and its commit); an answer to the next placement on its model
#   1.8-2.1 ms (p50: release and the round's wait); after a shared batch, the next two
#   placements by one round 49-55% of the time (the round's wait, 0.6 ms);
# - the call's way, from Triton's own per-request trace (llama3 voting near saturation, two
#   runs, 2026-12-02; benchmarks/README.md, "Where a call waits in Triton"): executor to
#   Triton's queue p50 1.26-1.40 ms, Triton's response to the executor 0.68-0.72 ms
#   (call_s 2 ms, 0.65 of it before; drawn within +-90%, which puts one batch's answers
#   0.39-0.44 ms apart as live); Triton's own hop, the batch holding its slot: its start to
#   the pool's handler 2.35 ms, the handler's end to the response 3.24 ms (p50; hop_s 5.6
#   ms, 0.42 of it before). Its batcher is on time (batch_late_s 0): two calls reaching the
#   queue under 2 ms apart shared a batch 70 times of 70, 2-2.5 ms apart 2 of 5, 2.5-10 ms
#   apart 0 of 25 (Triton's delay is 2 ms; the senders see a later batcher, 2.8-4.0 ms,
#   because their way to the queue varies).
MEASURED = ControlPath(stage_s=0.009, before=0.35, release_s=0.0016, call_s=0.002,
                       call_before=0.65, hop_s=0.0056, hop_before=0.42, call_jitter=0.9,
                       together=0.75, batch_late_s=0.0, round_s=0.001, round_wait_s=0.0006)
WARM_S = 5.0  # of arrivals served and dropped before a policy's runs (warm_up)
WARM_SEED = 1_000_003  # not a seed the runs use


def compare(router_addr: str, pool: PoolSpec, workflow: str, policy: str,
            offsets: Sequence[float], routing: Any = None,
            control: ControlPath | None = None, timeout_s: float = 120.0,
            root_certificates: bytes | None = None, scheduler_addr: str = "",
            repeats: int = 1, sim_repeats: int = 1, triton_url: str = "") -> dict[str, Any]:
    """Serve arrivals at `offsets` of `workflow`'s held-out requests live (through the router
    at `router_addr`, with the workflow registered) and simulated; both summaries and the
    simulator's relative difference per figure. With `scheduler_addr` (a plaintext one), the
    host's CPU is sampled while the live side runs (`live_cpu`: busy share p50, p95): a live
    stack that used the whole host was limited by it, which the simulator does not model.

    `repeats`: the live side serves the same arrivals that many times; its figures are then
    their means, and `live_each` holds each run's: how far the live stack is from itself,
    which bounds how close the simulator can be to it. `sim_repeats`: the simulator plays
    them that many times, each with its own draws of the control path (jitter seeds 0, 1,
    ...; `sim_each`): near saturation whether calls settle into sharing batches is a matter
    of timing luck, live as simulated, so one run of either side is one draw.

    With `triton_url` (the live pool's Triton, plaintext), its statistics are read before
    and after each live run (`batchers`: per model, Triton's own count of batches by size,
    the calls' wait at its batcher and the batches' compute time, against the same figures
    of the simulated pool): which of the two sides batches differently, and where."""
    from aragog import workflows as shipped
    from aragog.emulation.generate import benchmark
    from aragog.loadgen.evaluate import Sampler
    from aragog.loadgen.runner import run_schedule

    held = benchmark(workflow).split("test")
    items = [held[i % len(held)] for i in range(len(offsets))]
    sampler = Sampler(scheduler_addr) if scheduler_addr else None
    if sampler:
        sampler.start()
    live_runs, live_batchers = [], []
    try:
        for _ in range(repeats):
            before = triton_batchers(triton_url) if triton_url else {}
            live_runs.append(run_schedule(router_addr, list(offsets),
                                          [(workflow, it.input, it.answer) for it in items],
                                          policy=policy, timeout_s=timeout_s,
                                          root_certificates=root_certificates))
            if triton_url:
                live_batchers.append(since(triton_batchers(triton_url), before))
    finally:
        if sampler:
            sampler.stop()
    wf = shipped.load(workflow, pool.names)
    arrivals = [Arrival(float(t), workflow, it.input, it.answer, i % len(held))
                for i, (t, it) in enumerate(zip(offsets, items, strict=True))]
    simulated = [Simulator(pool, [wf], routing=routing, control=control or ControlPath(),
                           occupancy_timeline=False, jitter_seed=j).run(arrivals, policy)
                 for j in range(sim_repeats)]
    sim_runs = [result.records for result in simulated]
    duration = max(offsets) if len(offsets) else 0.0
    rate = len(offsets) / duration if duration else 0.0
    settings = report.Settings()
    out: dict[str, Any] = {"workflow": workflow, "policy": policy, "requests": len(offsets)}

    def summary(records: list[Any]) -> dict[str, Any]:
        return report.summarize(report.Run(pool.family, workflow, policy, "poisson", rate,
                                           duration, records), settings)

    for side, runs in (("live", live_runs), ("sim", sim_runs)):
        each = [summary(records) for records in runs]
        out[f"{side}_each"] = {k: [e[k] for e in each] for k in FIGURES}
        out[f"{side}_ok"] = [e["by_status"].get("ok", 0) for e in each]
        out[side] = {**each[0], **{k: _mean(out[f"{side}_each"][k]) for k in FIGURES}}
    for name, per_run in (("shared", shared_batches), ("meet", how_calls_meet),
                          ("placement_to_call_ms", placement_to_call_ms),
                          ("stage_ms", stage_ms)):
        out[name] = {side: _mean_of(per_run(records) for records in runs)
                     for side, runs in (("live", live_runs), ("sim", sim_runs))}
    if live_batchers:
        out["batchers"] = {"live": batcher_figures(live_batchers),
                           "sim": batcher_figures([r.batchers for r in simulated])}
    out["difference"] = {k: _relative(out["sim"][k], out["live"][k]) for k in FIGURES}
    if sampler and sampler.cpu:
        busy = [v for _, v in sampler.cpu]
        out["live_cpu"] = {"p50": float(np.percentile(busy, 50)),
                           "p95": float(np.percentile(busy, 95))}
    return out


def warm_up(router_addr: str, workflow: str, policy: str, rate: float, duration_s: float,
            root_certificates: bytes | None = None) -> None:
    """Serve `duration_s` of Poisson arrivals at `rate` and drop them: the first requests
    after a start pay one-off costs the simulator does not model (connections, the router
    loading a workflow's artifacts, each Triton slot's first call). Unwarmed, the first ten
    requests of a qwen2.5 task-decomposition run took 0.77 s longer than simulated, against
    0.03 s for the next ten, and their backlog delayed those after them."""
    from aragog.emulation.generate import benchmark
    from aragog.loadgen.runner import run_schedule

    held = benchmark(workflow).split("test")
    offsets = poisson(rate, duration_s, seed=WARM_SEED).tolist()
    run_schedule(router_addr, offsets, [(workflow, held[-1 - i % len(held)].input, None)
                                        for i in range(len(offsets))],
                 policy=policy, root_certificates=root_certificates)


def triton_batchers(url: str, settle_s: float = 0.2, tries: int = 10
                    ) -> dict[str, BatcherStats]:
    """Per model, what a Triton's statistics API has counted since the model was loaded
    (every version summed; the emulated pool asks no access token for it): calls, their
    time at the batcher, batches by size and their compute time. Two readings apart give a
    run's (`since`). Read again `settle_s` later until two readings agree: Triton's Python
    backend counts a batch after its answers have left, so a reading just after the last
    answer may miss it."""
    import time

    import tritonclient.grpc as grpcclient

    with grpcclient.InferenceServerClient(url) as client:
        last = batchers_of(client.get_inference_statistics(as_json=True))
        for _ in range(tries):
            time.sleep(settle_s)
            now = batchers_of(client.get_inference_statistics(as_json=True))
            if now == last:
                break
            last = now
        return last


def batchers_of(stats: dict[str, Any]) -> dict[str, BatcherStats]:
    """triton_batchers' figures from a statistics response (ModelStatisticsResponse as JSON)."""
    out: dict[str, BatcherStats] = {}
    for m in stats.get("model_stats", []):
        inference = m.get("inference_stats", {})
        b = out.setdefault(m["name"], BatcherStats())
        b.calls += int(inference.get("success", {}).get("count", 0))
        b.queue_s += int(inference.get("queue", {}).get("ns", 0)) / 1e9
        for by_size in m.get("batch_stats", []):
            ns = sum(int(by_size.get(part, {}).get("ns", 0))
                     for part in ("compute_input", "compute_infer", "compute_output"))
            size = int(by_size["batch_size"])
            count = int(by_size.get("compute_infer", {}).get("count", 0))
            b.batches[size] = b.batches.get(size, 0) + count
            b.compute_s[size] = b.compute_s.get(size, 0.0) + ns / 1e9
    return out


def since(after: dict[str, BatcherStats], before: dict[str, BatcherStats]
          ) -> dict[str, BatcherStats]:
    """What Triton counted between two readings, per model that served a call meanwhile. A
    model loaded again in between counts from 0 again: then its later reading alone."""
    out = {}
    for name, a in after.items():
        b = before.get(name, BatcherStats())
        d = a if a.calls < b.calls else a.minus(b)
        if d.calls > 0:
            out[name] = d
    return out


def batcher_figures(runs: Sequence[dict[str, BatcherStats]]) -> dict[str, dict[str, Any]]:
    """Per model, over runs: calls per run, the share of calls that ran in a batch of two or
    more, the mean wait of a call at the batcher, and the mean compute time of a batch by
    its size (ms; Triton's own figures live, the same read off the simulated pool)."""
    total: dict[str, BatcherStats] = {}
    for run in runs:
        for name, b in run.items():
            total[name] = total.get(name, BatcherStats()).plus(b)
    return {name: {"calls": t.calls / len(runs),
                   "shared": sum(k * n for k, n in t.batches.items() if k > 1) / t.calls,
                   "queue_ms": t.queue_s / t.calls * 1e3,
                   "compute_ms": {k: t.compute_s[k] / n * 1e3
                                  for k, n in t.batches.items() if n > 0}}
            for name, t in sorted(total.items()) if t.calls > 0}


def _timed_calls(records: Sequence[Any]) -> Iterator[Any]:
    """The stages whose model call was timed (an older executor's records, and tool stages,
    carry 0)."""
    return (st for rec in records for st in rec.stages if st.model and st.call_ended_at)


ANSWERED_TOGETHER_S = 0.0015  # one batch's answers reach their executors ~0.4 ms apart (p50)
SENT_TOGETHER_S = 0.008  # a batch closes a few ms after its first call reaches the batcher
MEET_BINS_MS = (0.0, 1.0, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0, 6.0)
NEXT_PLACEMENT_S = 0.020  # an answer's lease placed again within this: a stage was waiting


def _by_model(records: Sequence[Any]) -> dict[str, list[Any]]:
    """The timed model calls, per model."""
    by_model: dict[str, list[Any]] = {}
    for st in _timed_calls(records):
        by_model.setdefault(st.model, []).append(st)
    return by_model


def batches(records: Sequence[Any]) -> list[list[Any]]:
    """The model calls grouped by the batch they ran in, as read from the executors' timings
    alone: calls on one model answered within ANSWERED_TOGETHER_S of each other and sent
    within SENT_TOGETHER_S (calls that ran side by side in separate batches end together
    only if they also started together, and then they would have shared one)."""
    out: list[list[Any]] = []
    for calls in _by_model(records).values():
        calls = sorted(calls, key=lambda st: st.call_ended_at)
        current = [calls[0]]
        for st in calls[1:]:
            if (st.call_ended_at - current[-1].call_ended_at <= ANSWERED_TOGETHER_S
                    and abs(st.call_started_at - current[0].call_started_at) < SENT_TOGETHER_S):
                current.append(st)
            else:
                out.append(current)
                current = [st]
        out.append(current)
    return out


def shared_batches(records: Sequence[Any]) -> dict[str, float]:
    """Per stage, the share of its model calls that shared a batch with another call: such
    a batch runs to its longest call, so a short call paired with a long one holds its
    slot as long as the long one."""
    shared: dict[str, list[bool]] = {}
    for batch in batches(records):
        for st in batch:
            shared.setdefault(st.stage, []).append(len(batch) > 1)
    return {stage: sum(v) / len(v) for stage, v in sorted(shared.items())}


def how_calls_meet(records: Sequence[Any]) -> dict[str, float]:
    """The timings that decide whether calls share a batch, each one number a run gives
    (what ControlPath's parts are measured from; NaN where a run has none):

    - `answers_apart_ms`: the answers of one batch, p50 of their spread at the executors
      (the call's way back, call by call: `call_jitter`);
    - `sent_apart_ms`: calls placed on one model in one round, p50 of the gaps between
      their sends (how closely calls placed together go: `together`);
    - `meet_ms`: the gap between two consecutive sends on a model at which they share a
      batch half the time (the batcher's delay as the senders see it: `batch_late_s`);
    - `rounds_apart_ms`: p1 of the gaps between two rounds that placed something (a round
      and its group commit, `round_s`; where rounds are sparse, an upper bound);
    - `placed_together`: after a shared batch, the share whose next two placements on its
      model came from one round (changes that close together wait for one round:
      `round_wait_s`);
    - `freed_to_placed_ms`: from an answer to the next placement on its model, p50 of those
      within NEXT_PLACEMENT_S (the lease's release and the round's wait: `release_s`,
      `round_wait_s`)."""
    found = batches(records)
    batch_of = {id(st): i for i, b in enumerate(found) for st in b}
    spread = [(max(st.call_ended_at for st in b) - min(st.call_ended_at for st in b)) * 1e3
              for b in found if len(b) > 1]
    by_model = _by_model(records)
    rounds: dict[tuple[str, float], list[float]] = {}
    for calls in by_model.values():
        for st in calls:
            rounds.setdefault((st.model, st.placed_at), []).append(st.call_started_at)
    sent = [(b - a) * 1e3 for times in rounds.values()
            for a, b in itertools.pairwise(sorted(times))]
    edges = np.array(MEET_BINS_MS)
    met, seen = np.zeros(len(edges) - 1), np.zeros(len(edges) - 1)
    for calls in by_model.values():
        calls.sort(key=lambda st: st.call_started_at)
        for a, b in itertools.pairwise(calls):
            k = int(np.searchsorted(edges, (b.call_started_at - a.call_started_at) * 1e3,
                                    side="right")) - 1
            if 0 <= k < len(seen):
                seen[k] += 1
                met[k] += batch_of[id(a)] == batch_of[id(b)]
    placed = np.unique([st.placed_at for calls in by_model.values() for st in calls])
    placed_on = {m: np.sort([st.placed_at for st in calls]) for m, calls in by_model.items()}
    freed = []
    for model, calls in by_model.items():
        at = placed_on[model]
        for st in calls:  # the answer's next placement on its model
            j = int(np.searchsorted(at, st.call_ended_at))
            if j < len(at) and at[j] - st.call_ended_at < NEXT_PLACEMENT_S:
                freed.append((at[j] - st.call_ended_at) * 1e3)
    together = []
    for b in found:  # a shared batch's next two placements on its model
        if len(b) > 1:
            at = placed_on[b[0].model]
            j = int(np.searchsorted(at, min(st.call_ended_at for st in b)))
            if j + 1 < len(at):
                together.append(at[j] == at[j + 1])
    return {"answers_apart_ms": _p50(spread), "sent_apart_ms": _p50(sent),
            "meet_ms": _half_point(edges, met, seen),
            "rounds_apart_ms": (float(np.percentile(np.diff(placed) * 1e3, 1))
                                if len(placed) > 2 else math.nan),
            "placed_together": float(np.mean(together)) if together else math.nan,
            "freed_to_placed_ms": _p50(freed)}


def _p50(values: list[float]) -> float:
    return float(np.median(values)) if values else math.nan


def _half_point(edges: np.ndarray, met: np.ndarray, seen: np.ndarray) -> float:
    """Where the share met/seen, read per bin (at the bins' middles), first falls to 1/2
    (linear between two bins); NaN if it never does where seen."""
    mids = (edges[:-1] + edges[1:]) / 2
    share = [(m, met[k] / seen[k]) for k, m in enumerate(mids) if seen[k]]
    for (m0, s0), (m1, s1) in itertools.pairwise(share):
        if s0 >= 0.5 > s1:
            return float(m0 + (s0 - 0.5) / (s0 - s1) * (m1 - m0))
    return math.nan


def placement_to_call_ms(records: Sequence[Any]) -> dict[str, float]:
    """p5/p50/p95 of the time from a stage's placement to its model call (live: the group
    commit, the grant, the executor's start; what `--control-before` stands for). Live, the
    scheduler's clock against the executor's: one host here; across hosts, their skew too."""
    ms = [(st.call_started_at - st.placed_at) * 1000.0 for st in _timed_calls(records)]
    if not ms:
        return {}
    return dict(zip(("p5", "p50", "p95"), np.percentile(ms, [5, 50, 95]).tolist(), strict=True))


def stage_ms(records: Sequence[Any]) -> dict[str, dict[str, float]]:
    """Per stage, the means of its wait for a lease (asked to placed) and of its model call
    (sent to answered), in ms: where on the critical path the two sides part. Means, since
    they add up along a path where p50s do not."""
    parts: dict[str, list[tuple[float, float]]] = {}
    for st in _timed_calls(records):
        parts.setdefault(st.stage, []).append(
            (st.schedule_ms, (st.call_ended_at - st.call_started_at) * 1000.0))
    return {stage: {"lease_wait": float(np.mean([w for w, _ in v])),
                    "call": float(np.mean([c for _, c in v]))}
            for stage, v in sorted(parts.items())}


def _mean_of(dicts: Iterator[dict[str, Any]]) -> dict[str, Any]:
    """Key by key, the mean of each run's figures (of nested dicts' too; NaN left out):
    each run is read on its own, as two runs' times may overlap (simulated ones do)."""
    runs = list(dicts)
    out: dict[str, Any] = {}
    for key in dict.fromkeys(k for d in runs for k in d):
        values = [d[key] for d in runs if key in d]
        if isinstance(values[0], dict):
            out[key] = _mean_of(iter(values))
        else:
            kept = [v for v in values if not math.isnan(v)]
            out[key] = float(np.mean(kept)) if kept else math.nan
    return out


def _mean(values: list[float | None]) -> float | None:
    return None if any(v is None for v in values) else float(np.mean(values))


def _relative(sim: float | None, live: float | None) -> float | None:
    return None if sim is None or not live else sim / live - 1.0


def render(result: dict[str, Any]) -> str:
    live, sim = result["live"], result["sim"]
    ok = result.get("live_ok") or [live["by_status"]["ok"]]
    lines = [f"{result['workflow']} / {result['policy']}: {result['requests']} requests; "
             f"ok live {'/'.join(map(str, ok))}, simulated {sim['by_status']['ok']}"]
    for k in FIGURES:
        d = result["difference"][k]
        lines.append(f"  {k:>14}: live {_f(live[k])}{_runs(result, 'live', k)}, simulated "
                     f"{_f(sim[k])}{_runs(result, 'sim', k)}"
                     + ("" if d is None else f" ({d:+.1%})"))
    models = sorted(set(live["model_shares"]) | set(sim["model_shares"]))
    lines.append("  stages per model: " + ", ".join(
        f"{m} live {live['model_shares'].get(m, 0):.0%} / sim {sim['model_shares'].get(m, 0):.0%}"
        for m in models))
    shared = result.get("shared", {})
    if shared.get("live") or shared.get("sim"):
        lines.append("  calls that shared a batch: " + ", ".join(
            f"{st} live {shared['live'].get(st, 0):.0%} / sim {shared['sim'].get(st, 0):.0%}"
            for st in sorted(set(shared["live"]) | set(shared["sim"]))))
    meet = result.get("meet", {})
    if meet.get("live") and meet.get("sim"):
        lines.append("  how calls meet, ms live / sim: " + "; ".join(
            f"{label} {_ms(meet['live'][key])} / {_ms(meet['sim'][key])}"
            for key, label in (("answers_apart_ms", "one batch's answers apart p50"),
                               ("sent_apart_ms", "one round's sends apart p50"),
                               ("meet_ms", "sent apart, share a batch half the time"),
                               ("rounds_apart_ms", "rounds apart p1"),
                               ("freed_to_placed_ms", "answer to next placement p50"))))
        lines.append(f"  after a shared batch, next two placed by one round: live "
                     f"{_share(meet['live']['placed_together'])} / sim "
                     f"{_share(meet['sim']['placed_together'])}")
    batchers = result.get("batchers", {})
    none = {"calls": 0.0, "shared": math.nan, "queue_ms": math.nan, "compute_ms": {}}
    for model in sorted(set(batchers.get("live", {})) | set(batchers.get("sim", {}))):
        live_b = batchers["live"].get(model, none)
        sim_b = batchers["sim"].get(model, none)
        sizes = sorted(set(live_b["compute_ms"]) | set(sim_b["compute_ms"]))
        lines.append(f"  Triton's statistics, {model}, live / sim: calls {live_b['calls']:.0f}"
                     f" / {sim_b['calls']:.0f}, in shared batches {_share(live_b['shared'])} / "
                     f"{_share(sim_b['shared'])}; wait at the batcher "
                     f"{_ms(live_b['queue_ms'])} / {_ms(sim_b['queue_ms'])} ms; a batch's "
                     "compute, ms: " + ", ".join(
                         f"of {k} {_ms(live_b['compute_ms'].get(k, math.nan))} / "
                         f"{_ms(sim_b['compute_ms'].get(k, math.nan))}" for k in sizes))
    to_call = result.get("placement_to_call_ms", {})
    if to_call.get("live"):
        lines.append("  placement to model call, ms p5/p50/p95: " + ", ".join(
            f"{side} " + "/".join(f"{v:.1f}" for v in to_call[side].values())
            for side in ("live", "sim") if to_call.get(side)))
    per_stage = result.get("stage_ms", {})
    if per_stage.get("live") and per_stage.get("sim"):
        lines.append("  per stage, mean ms live / sim: " + "; ".join(
            f"{st} lease wait {v['lease_wait']:.0f} / {per_stage['sim'][st]['lease_wait']:.0f},"
            f" call {v['call']:.0f} / {per_stage['sim'][st]['call']:.0f}"
            for st, v in per_stage["live"].items() if st in per_stage["sim"]))
    if "live_cpu" in result:
        cpu = result["live_cpu"]
        lines.append(f"  host CPU busy during the live run: p50 {cpu['p50']:.0%}, p95 "
                     f"{cpu['p95']:.0%}" + (" (the host, not the pool, may limit the live side)"
                                            if cpu["p50"] >= 0.9 else ""))
    return "\n".join(lines)


def render_seeds(runs: dict[int, dict[str, Any]]) -> str:
    """Over seeds: each figure's simulated/live ratio, paired by seed (geometric mean, 95%
    interval), and how many seeds fall within 10%."""
    first = next(iter(runs.values()))
    lines = [f"{first['workflow']} / {first['policy']}, {len(runs)} seeds, simulated / live:"]
    for k in FIGURES:
        r = report.ratio_ci({s: x["sim"][k] for s, x in runs.items()},
                            {s: x["live"][k] for s, x in runs.items()})
        if r["ratio"] is None:
            continue
        ci = "" if r["ci"] is None else f" [{r['ci'][0]:.3f}, {r['ci'][1]:.3f}]"
        near = sum(abs(v - 1.0) <= 0.10 for v in r["by_seed"].values())
        lines.append(f"  {k:>14}: {r['ratio']:.3f}{ci}, within 10% on {near} of {r['n']} seeds"
                     + _live_spread([x.get("live_each", {}).get(k, []) for x in runs.values()]))
    return "\n".join(lines)


def _runs(result: dict[str, Any], side: str, k: str) -> str:
    runs = result.get(f"{side}_each", {}).get(k, [])
    return ("" if len(runs) < 2 or None in runs else
            f" (mean of {len(runs)} runs: {min(runs):.3f} to {max(runs):.3f})")


def _ms(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:.2f}"


def _share(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:.0%}"


def _live_spread(per_seed: list[list[float | None]]) -> str:
    """The live stack against itself: per seed, its repeated runs' highest over lowest."""
    ratios = [max(v) / min(v) for v in per_seed if len(v) > 1 and None not in v and min(v) > 0]
    return "" if not ratios else ("; live's own runs apart by x" + ", x".join(
        f"{r:.2f}" for r in ratios) + " (highest / lowest, per seed)")


def _f(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m aragog.sim.validate",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--pool", default="", help="a shipped pool or a pool file (default: the "
                    "embedded llama3); the stack's Triton serves it, the simulator plays it")
    ap.add_argument("--capacity-scale", type=float, default=1.0,
                    help="saturation batches x this, as aragog-eval's --capacity-scale")
    ap.add_argument("--time-scale", type=float, default=0.0,
                    help="every latency x this (0: the pool's own), as aragog-eval's")
    ap.add_argument("--workflow", action="append", choices=BENCHMARKED)
    ap.add_argument("--policy", action="append")
    ap.add_argument("--rate", type=float, default=2.0)
    ap.add_argument("--duration", type=float, default=30.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=1,
                    help="serve each seed's arrivals this many times live: the live figures "
                    "are their means, and the spread shows how far the live stack is from "
                    "itself")
    ap.add_argument("--sim-repeats", type=int, default=4,
                    help="play each seed's arrivals this many times in the simulator, each "
                    "with its own draws of the control path: the simulated figures are their "
                    "means")
    ap.add_argument("--seeds", type=int, default=1,
                    help="arrival seeds --seed, --seed+1, ...: each served both ways; with 2 "
                    "or more, the sim/live ratios' geometric means with 95%% intervals")
    MEASURED.add_arguments(ap)
    a = ap.parse_args(argv)
    if not (a.rate > 0 and a.duration > 0 and min(a.seeds, a.repeats, a.sim_repeats) >= 1):
        ap.error("--rate, --duration, --seeds, --repeats and --sim-repeats must be positive")
    try:  # before the live side runs, not after
        control = ControlPath.from_arguments(a)
    except ValueError as e:
        ap.error(str(e))
    from aragog.stack import Stack, shipped_workflow

    import dataclasses
    import tempfile

    from aragog.loadgen.evaluate import scaled_pool_file

    tmp = tempfile.mkdtemp(prefix="aragog-validate-")
    pool_file = a.pool
    if a.capacity_scale != 1.0:
        pool_file = scaled_pool_file(a.pool or "llama3", a.capacity_scale, tmp)
    pool = load_pool(pool_file or None)
    if a.time_scale:
        pool = dataclasses.replace(pool, time_scale=a.time_scale)
    with Stack(executors=2, time_scale=a.time_scale,
               extra_env={"ARAGOG_POOL_FILE": pool_file} if pool_file else None) as stack:
        for wid in a.workflow or ["self-refine"]:
            stack.register(shipped_workflow(wid))
            for pol in a.policy or ["largest", "cheapest"]:
                warm_up(stack.router_addr, wid, pol, a.rate, WARM_S)
                runs = {}
                for seed in range(a.seed, a.seed + a.seeds):
                    runs[seed] = compare(stack.router_addr, pool, wid, pol,
                                         poisson(a.rate, a.duration, seed).tolist(),
                                         control=control, repeats=a.repeats,
                                         sim_repeats=a.sim_repeats,
                                         scheduler_addr=stack.scheduler_addr,
                                         triton_url=stack.triton_url)
                    print(f"seed {seed}: " + render(runs[seed]), flush=True)
                if len(runs) > 1:
                    print(render_seeds(runs), flush=True)


if __name__ == "__main__":
    sys.exit(main())
