"""The simulator: the stack's decisions on simulated time, with no sleeping and no network.

Same code where it matters:
- **the scheduling round** is aragog.scheduler.placement (Entry, CompiledWorkflow, Round,
  apply_stage_role), the module the scheduler service runs, over the same Cython kernel;
  capacity, FIFO order by arrival and the cost-first passes are the service's;
- **F(r)** comes from the policies the router builds (`aragog.policies.make`) with the
  router's routing artifacts, and a policy's stage role runs before each stage waits;
- **the pool** is the EMULATED pool as aragog.pool.emulated binds it: per model,
  `instances x batches_per_instance` Triton slots behind a dynamic batcher (batches of up to
  `saturation_batch` calls, closed `queue_delay_s` after the first), each batch on the least
  loaded engine running aragog.emulation.engine's continuous batching; answers come from
  the same answer function, from prompts rendered as the executor renders them.

What it leaves out, so where it may differ from the live stack: the time the live stack
spends around each model call, which a ControlPath stands for (nothing by default): the
control path per stage (an executor's AcquireStage, the group commit, recording the stage),
the release of the lease, the call's way to Triton and back, Triton's own hop to the
pool's handler and back (the batch holding its slot), and the scheduler's round loop
(a round waits for its loop's turn, and its group commit keeps the next one apart). Each
part is drawn around its mean, seeded, the calls of one request that move together
(placed by one round, answered by one batch) drawn alike in part: whether two calls reach
Triton's batcher close enough to share a batch decides how long the shorter one holds its
slot. Also left out: the router's placeholder F(r) while it routes (F(r) is ready at
admission here), the admission queue bounds, failures and retries. A policy's admission
costs simulated time zero, whatever it costs in real time.
"""

from __future__ import annotations

import argparse
import dataclasses
import heapq
import itertools
import math
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
from aragog import policies
from aragog.common.pool import PoolSpec
from aragog.common.settings import PoolSettings, SchedulerSettings
from aragog.common.workflow import StageDef, WorkflowDef
from aragog.emulation.answer import answer
from aragog.emulation.engine import ContinuousBatching, prompt_tokens
from aragog.loadgen.client import RequestRecord, StageRecord, normalize_answer
from aragog.routing.space import PROMPT_TOKENS
from aragog.scheduler.placement import CompiledWorkflow, Entry, Round, apply_stage_role
from aragog.sim import oracle  # registers the `oracle` policy, which only the simulator runs
from aragog.v1 import common_pb2


class RememberedRouting:
    """The router's routing context, each (artifacts, input) routed once: a simulated day
    sends the same held-out inputs again and again, and F(r) is a function of the input
    alone, so the router's answer is computed by its own code once and then remembered
    (a live router embeds every request; the simulated time does not count it anyway)."""

    def __init__(self, routing: Any):
        self._routing = routing
        self._seen: dict[tuple[int, str], np.ndarray] = {}

    def __getattr__(self, name: str) -> Any:  # artifacts(), unavailable(), embedder, ...
        return getattr(self._routing, name)

    def route(self, art: Any, request_input: str) -> np.ndarray:
        key = (id(art), request_input)
        if key not in self._seen:
            self._seen[key] = self._routing.route(art, request_input)
        return self._seen[key]


@dataclasses.dataclass(frozen=True)
class Arrival:
    """One request to send: at `offset` seconds (simulated), of `workflow`, with `input`."""

    offset: float
    workflow: str
    input: str
    expected: str | None = None
    item: int = -1  # its held-out item (the report's gap to largest matches on it)


@dataclasses.dataclass
class _Request:
    index: int
    arrival: Arrival
    entry: Entry
    record: RequestRecord
    outputs: dict[str, str] = dataclasses.field(default_factory=dict)
    started: set[str] = dataclasses.field(default_factory=set)
    timed_out: bool = False


@dataclasses.dataclass
class _Call:
    """One LLM stage placed on a model: from its lease to its answer."""

    request: _Request
    stage: StageDef
    model: int
    prompt: str
    queued_at: float  # when it started to wait for a placement
    placed_at: float
    sent_at: float = 0.0  # when the executor sent it
    reached_at: float = 0.0  # when it reached Triton's queue
    moment: float = 0.0  # the draw its round, then its batch, shares (ControlPath.together)


@dataclasses.dataclass
class BatcherStats:
    """One model's calls as Triton's statistics API counts them (its inference and batch
    statistics), so that a simulated pool and a live one are read alike: how long calls
    waited at the batcher, and how many batches of each size ran and for how long."""

    calls: int = 0
    queue_s: float = 0.0  # summed over calls: reaching the queue to their batch's start
    batches: dict[int, int] = dataclasses.field(default_factory=dict)  # by batch size
    compute_s: dict[int, float] = dataclasses.field(default_factory=dict)  # summed, by size

    def add_batch(self, size: int, compute_s: float) -> None:
        self.batches[size] = self.batches.get(size, 0) + 1
        self.compute_s[size] = self.compute_s.get(size, 0.0) + compute_s

    def plus(self, other: BatcherStats) -> BatcherStats:
        """This and `other` counted together."""
        return self._combined(other, 1)

    def minus(self, earlier: BatcherStats) -> BatcherStats:
        """What was counted since `earlier` (a reading of the same counters)."""
        return self._combined(earlier, -1)

    def _combined(self, other: BatcherStats, sign: int) -> BatcherStats:
        sizes = sorted(set(self.batches) | set(other.batches))
        return BatcherStats(
            self.calls + sign * other.calls, self.queue_s + sign * other.queue_s,
            {k: self.batches.get(k, 0) + sign * other.batches.get(k, 0) for k in sizes},
            {k: self.compute_s.get(k, 0.0) + sign * other.compute_s.get(k, 0.0) for k in sizes})


class _Model:
    """One pool model as the emulated pool serves it: Triton slots and the dynamic batcher in
    front of `instances` engines."""

    def __init__(self, index: int, profile: Any, scale: float, slots: int, delay_s: float):
        self.index = index
        self.profile = profile
        self.engines = [ContinuousBatching(profile, scale) for _ in range(profile.instances)]
        self.free_slots = slots
        self.delay_s = delay_s
        self.queue: deque[_Call] = deque()
        self.batch_due: float | None = None  # when the batcher's next close is scheduled
        # decoding: batch id -> (its calls, when it left the batcher and took its slot)
        self.running: dict[int, tuple[list[_Call], float]] = {}
        self.ids = itertools.count()
        self.stats = BatcherStats()


@dataclasses.dataclass
class Result:
    """A simulated run: one record per arrival (the load generator's records), and each
    model's leases held over time (every change: (time, leases per model))."""

    records: list[RequestRecord]
    occupancy: list[tuple[float, dict[str, int]]]
    rounds: int
    events: int
    batchers: dict[str, BatcherStats] = dataclasses.field(default_factory=dict)  # by model


@dataclasses.dataclass(frozen=True)
class ControlPath:
    """What the live stack spends around each model call that the pool's latency model does
    not (all 0 by default: the decisions alone). Why each part is placed where it is:
    whether the lease is held during it decides how long a model's capacity stays taken.

    - `stage_s`: per stage on its request's critical path, `before` of it between the
      placement and the model call (live: the group commit, the grant, the executor's
      start; lease held) and the rest between the answer and the stages it unblocks asking
      for a model (the executor records the stage, then asks);
    - `release_s`: from the answer to the lease's release at the scheduler (lease held; the
      unblocked stages ask no sooner, as the executor waits for its ReleaseStage);
    - `call_s`: the model call's way outside Triton's model (lease held): `call_before` of
      it from the executor to Triton's queue, the rest from the answers leaving Triton to
      the executor;
    - `hop_s`: Triton's own way around the pool's handler (live: the Python backend's stub
      and pytriton's proxy), the batch holding its Triton slot all along: `hop_before` of
      it between the batch leaving the batcher and the engine's start, the rest between
      the engine's end and the answers leaving Triton;
    - `jitter`: each part is uniform in its mean x [1 - jitter, 1 + jitter], but the call's
      way, which `call_jitter` spreads;
    - `together`: the correlation of a part's draws between one request's calls that move
      together (placed by one round: the part before the call; answered by one batch: the
      release and the rest): its executor runs its parallel stages side by side, so live
      they stay close; other requests' calls are drawn on their own. 0: each on its own;
    - `batch_late_s`: how much later than its queue delay the pool's dynamic batcher closes a
      batch, as the calls' senders see it (live, a host's wake-ups are late): a call sent up
      to `queue delay + batch_late_s` after another still meets it;
    - `round_s`: the scheduler's round with its group commit (one Redis transaction): no
      round starts sooner after the last one, and the stages that free or ask meanwhile are
      placed together by the next;
    - `round_wait_s`: a change (a lease freed, a stage asking) waits this long for the
      scheduler's loop to run its round (live: the event loop's turn, the RPC's way in), so
      changes closer together than that are placed by one round.
    """

    stage_s: float = 0.0
    before: float = 0.5
    release_s: float = 0.0
    call_s: float = 0.0
    call_before: float = 0.5
    hop_s: float = 0.0
    hop_before: float = 0.5
    jitter: float = 0.5
    call_jitter: float = 0.5
    together: float = 0.0
    batch_late_s: float = 0.0
    round_s: float = 0.0
    round_wait_s: float = 0.0

    def __post_init__(self) -> None:
        times = (self.stage_s, self.release_s, self.call_s, self.hop_s, self.batch_late_s,
                 self.round_s, self.round_wait_s)
        if min(times) < 0:
            raise ValueError("the control path, the release, the call's way, Triton's hop, "
                             "the batcher's lateness and the round take >= 0 s (got "
                             + ", ".join(f"{t:g}" for t in times) + ")")
        shares = (self.jitter, self.call_jitter, self.before, self.call_before,
                  self.hop_before, self.together)
        if not all(0 <= v <= 1 for v in shares):
            raise ValueError("the jitters, the shares before the call, the batcher and the "
                             "engine, and the correlation of calls together are within "
                             "[0, 1] (got " + ", ".join(f"{v:g}" for v in shares) + ")")

    def add_arguments(self, ap: argparse.ArgumentParser) -> None:
        """The command-line settings of a ControlPath, with this one's values as defaults."""
        ap.add_argument("--control-ms", type=float, default=self.stage_s * 1000.0,
                        help="control-path time per stage on a request's critical path "
                             "(acquire, commit, record): --control-before of it before each "
                             "model call, the rest before the stages its answer unblocks ask "
                             "for a model")
        ap.add_argument("--control-before", type=float, default=self.before,
                        help="the share of --control-ms between placement and the model call")
        ap.add_argument("--release-ms", type=float, default=self.release_s * 1000.0,
                        help="from a model's answer to its lease's release at the scheduler")
        ap.add_argument("--call-way-ms", type=float, default=self.call_s * 1000.0,
                        help="a model call's way outside Triton: executor to Triton's "
                             "queue, and the answers from Triton back (the lease is held)")
        ap.add_argument("--call-way-before", type=float, default=self.call_before,
                        help="the share of --call-way-ms before the call reaches the batcher")
        ap.add_argument("--hop-ms", type=float, default=self.hop_s * 1000.0,
                        help="Triton's own way around the pool's handler, per batch (its "
                             "Triton slot held): --hop-before of it before the engine starts, "
                             "the rest after it ends")
        ap.add_argument("--hop-before", type=float, default=self.hop_before,
                        help="the share of --hop-ms before the engine starts")
        ap.add_argument("--control-jitter", type=float, default=self.jitter,
                        help="each part drawn within +- this share of its mean (0: all alike)")
        ap.add_argument("--call-way-jitter", type=float, default=self.call_jitter,
                        help="the call's way drawn within +- this share of its mean")
        ap.add_argument("--control-together", type=float, default=self.together,
                        help="correlation of the parts' draws between one request's calls "
                             "placed by one round or answered by one batch (0: each on its own)")
        ap.add_argument("--batch-late-ms", type=float, default=self.batch_late_s * 1000.0,
                        help="how much later than its queue delay the batcher closes a batch, "
                             "as the calls' senders see it")
        ap.add_argument("--round-ms", type=float, default=self.round_s * 1000.0,
                        help="the scheduler's round with its group commit: the least time "
                             "between two rounds")
        ap.add_argument("--round-wait-ms", type=float, default=self.round_wait_s * 1000.0,
                        help="how long a change waits for the scheduler's round: changes "
                             "closer together are placed by one round")

    @classmethod
    def from_arguments(cls, a: argparse.Namespace) -> ControlPath:
        """The ControlPath add_arguments' settings give; ValueError if they are out of range."""
        return cls(stage_s=a.control_ms / 1000.0, before=a.control_before,
                   release_s=a.release_ms / 1000.0, call_s=a.call_way_ms / 1000.0,
                   call_before=a.call_way_before, hop_s=a.hop_ms / 1000.0,
                   hop_before=a.hop_before, jitter=a.control_jitter,
                   call_jitter=a.call_way_jitter,
                   together=a.control_together, batch_late_s=a.batch_late_ms / 1000.0,
                   round_s=a.round_ms / 1000.0, round_wait_s=a.round_wait_ms / 1000.0)


def _nothing() -> None:
    """An event that only wakes the loop (the scheduler's round comes due)."""


class Simulator:
    def __init__(self, pool: PoolSpec, workflows: Iterable[WorkflowDef], *, routing: Any = None,
                 scheduler: SchedulerSettings | None = None,
                 pool_settings: PoolSettings | None = None, time_scale: float | None = None,
                 control: ControlPath = ControlPath(), timeout_s: float = 120.0,
                 occupancy_timeline: bool = True, jitter_seed: int = 0):
        """`routing`: an aragog.routing.context.Routing for the policies that need artifacts;
        `scheduler`, `pool_settings`: the services' settings simulated (placement, beam
        width; Triton slots and batcher delay), their defaults unless given; `time_scale`:
        the pool's own unless given (0 too, as the emulated pool reads it); `timeout_s`:
        how long a client waits for its request (the load generator's default): a request
        not ended by then is recorded as a timeout, and runs on. `control`: what the live
        stack spends around each call (ControlPath). Why its parts are drawn, measured on
        voting near saturation (llama3, largest; benchmarks/README.md, "Simulator"): calls
        that reach a model's batcher within its 2 ms wait share a batch, which runs to its
        longest call; with one fixed delay every such pair meets, and voting's 16-token
        aggregator, paired with the next request's 128-token voter, holds its slot as long
        as a voter. How often calls meet there decides whether a run settles into that
        paired pace, live as simulated."""
        scheduler = scheduler or SchedulerSettings()
        pool_settings = pool_settings or PoolSettings()
        self.pool = pool
        self.workflows = {wf.id: wf for wf in workflows}
        self.compiled = {wid: CompiledWorkflow.build(wf, pool) for wid, wf in self.workflows.items()}
        self.routing = None if routing is None else RememberedRouting(routing)
        self.round = Round(pool, cost_first=scheduler.placement == "cost-first",
                           beam_width=scheduler.beam_width)
        self.scale = time_scale or pool_settings.time_scale or pool.time_scale
        if not self.scale > 0 or not timeout_s > 0:
            raise ValueError(f"time scale must be > 0 (got {self.scale}) and timeout_s > 0 "
                             f"(got {timeout_s})")
        self.timeout_s = timeout_s
        self.batches_per_instance = pool_settings.batches_per_instance
        self.queue_delay_s = pool_settings.max_queue_delay_us / 1e6
        self.control = control
        self.capacity = np.array([m.capacity for m in pool.models], dtype=np.int32)
        self.keep_timeline = occupancy_timeline
        self.jitter_seed = jitter_seed

    # a run ---------------------------------------------------------------------------
    def run(self, arrivals: Iterable[Arrival], policy: str,
            on_record: Callable[[RequestRecord], None] | None = None) -> Result:
        """Serve `arrivals` (sorted by offset) under `policy` until every request ended.
        `on_record`: called with each record as its request ends (then records are not
        kept in the result: a long run streams them). Arrivals are drawn from the iterable
        one at a time, as the previous one arrives, so what the run holds is the requests in
        flight and their events, not the whole workload."""
        self._policy = policies.make(policy)
        self._policy_name = policy
        self._heap: list[tuple[float, int, Callable[..., None], tuple]] = []
        self._seq = itertools.count()
        self._jitter = np.random.default_rng(self.jitter_seed)
        self._now = 0.0
        self._queue: dict[str, Entry] = {}  # requests with a stage waiting, by id
        self._requests: dict[str, _Request] = {}
        self._occupancy = np.zeros(len(self.pool.models), dtype=np.int32)
        closes = self.queue_delay_s + self.control.batch_late_s  # the batcher, as seen
        self._models = [_Model(i, m, self.scale, m.instances * self.batches_per_instance,
                               closes) for i, m in enumerate(self.pool.models)]
        self._engine_version = [[0] * len(m.engines) for m in self._models]
        self._records: list[RequestRecord] = []
        self._on_record = on_record
        self._timeline: list[tuple[float, dict[str, int]]] = []
        self._dirty = False
        self._changed_at: float | None = None  # the first change the next round places
        self._committed_at = -math.inf  # when the last round's commit ends
        self._woken_at: float | None = None
        rounds = events = 0
        self._arrivals = enumerate(arrivals)
        self._last_offset = -math.inf
        # the oracle's knowledge of arrivals to come (sim/oracle.py): those within its
        # horizon (`_soon`, their first stages' models counted in `_reserve`), then the next
        # one beyond it (`_later`); other policies see one arrival at a time
        self._horizon = float(getattr(self._policy, "horizon_s", 0.0))
        self._soon: deque[tuple[int, Arrival, list[int]]] = deque()
        self._later: deque[tuple[int, Arrival]] = deque()
        self._reserve = np.zeros(len(self.pool.models), dtype=np.int32)
        self._next_arrival()
        while self._heap:
            t, _, fn, args = heapq.heappop(self._heap)
            self._now = t
            fn(*args)
            events += 1
            if self._dirty and (not self._heap or self._heap[0][0] > t):
                rounds += self._round_when_due(t)
        if self._requests:  # nothing left to happen, yet requests wait: a simulator bug
            raise RuntimeError(f"{len(self._requests)} requests never ended, e.g. "
                               f"{next(iter(self._requests))}")
        return Result(self._records, self._timeline, rounds, events,
                      {m.profile.name: m.stats for m in self._models})

    def _round_when_due(self, t: float) -> int:
        """Run the scheduler's round once its loop gets to the changes (ControlPath.round_wait_s
        after the first) and the last round's commit has ended (round_s after it); until
        then, wake up at that time. Returns the rounds run (0 or 1)."""
        c = self.control
        if self._changed_at is None:
            self._changed_at = t
        due = max(self._committed_at, self._changed_at + c.round_wait_s)
        if t < due:
            if self._woken_at != due:
                self._woken_at = due
                self._at(due, _nothing)  # the loop looks again then
            return 0
        self._dirty, self._changed_at = False, None
        self._committed_at = t + c.round_s
        return self._round()

    def _at(self, t: float, fn: Callable[..., None], *args: Any) -> None:
        heapq.heappush(self._heap, (t, next(self._seq), fn, args))

    def _after(self, delay: float, fn: Callable[..., None], *args: Any) -> None:
        """`fn(*args)` `delay` from now; at once, not as a later event, when it is 0."""
        if delay:
            self._at(self._now + delay, fn, *args)
        else:
            fn(*args)

    def _draw(self) -> tuple[int, Arrival] | None:
        nxt = next(self._arrivals, None)
        if nxt is not None:
            i, a = nxt
            if a.offset < self._last_offset:
                raise ValueError(f"arrival {i} at {a.offset} s comes before its predecessor "
                                 f"({self._last_offset} s): sort arrivals by offset")
            self._last_offset = a.offset
        return nxt

    def _next_arrival(self) -> None:
        """Schedule the next arrival (for the oracle: the head of what it knows is coming)."""
        if not self._horizon:
            nxt = self._draw()
            if nxt is not None:
                self._at(nxt[1].offset, self._arrive, *nxt)
            return
        self._look_ahead()
        head = self._soon[0] if self._soon else self._later[0] if self._later else None
        if head is not None:
            self._at(head[1].offset, self._arrive, head[0], head[1])

    def _look_ahead(self) -> None:
        """Know every arrival up to now + horizon (and one beyond it), and reserve their
        first stages' models at their cheapest."""
        edge = self._now + self._horizon
        while True:
            if not self._later:
                nxt = self._draw()
                if nxt is None:
                    return
                self._later.append(nxt)
            i, a = self._later[0]
            if a.offset > edge:
                return
            self._later.popleft()
            models = self._first_models(a)
            self._soon.append((i, a, models))
            for m in models:
                self._reserve[m] += 1

    def _first_models(self, a: Arrival) -> list[int]:
        wf = self.workflows.get(a.workflow)
        if wf is None:
            return []
        try:
            f_r = self._policy.admit(wf, self.pool, a.input, self.routing, None)
        except policies.PolicyError:
            return []
        cw = self.compiled[wf.id]
        return oracle.first_stage_models(cw, cw.every if f_r is None else np.asarray(f_r, np.int64))

    def _arrived(self, index: int) -> None:
        """The oracle's head arrival is here: no longer to come."""
        if self._soon and self._soon[0][0] == index:
            for m in self._soon.popleft()[2]:
                self._reserve[m] -= 1
        elif self._later and self._later[0][0] == index:
            self._later.popleft()

    def idle_latency(self, workflow: str, request_input: str) -> float:
        """The largest configuration's latency on an idle pool (the SLO's unit)."""
        rec = self.run([Arrival(0.0, workflow, request_input)], "largest").records[0]
        if rec.status != "ok":
            raise ValueError(f"{workflow}: the largest configuration did not run: {rec.error}")
        return rec.latency_s

    # requests --------------------------------------------------------------------------
    def _arrive(self, index: int, a: Arrival) -> None:
        if self._horizon:
            self._arrived(index)
        self._next_arrival()
        rid = f"sim-{index}"
        rec = RequestRecord(rid, a.workflow, self._policy_name, a.offset, a.offset, 0.0, 0.0,
                            "error", expected=a.expected, index=index)
        wf = self.workflows.get(a.workflow)
        if wf is None:
            rec.error = f"workflow {a.workflow!r} is not in the simulation"
            return self._end(rec)
        cw = self.compiled[wf.id]
        try:
            load = self._load() if self._policy.wants_load else None
            f_r = self._policy.admit(wf, self.pool, a.input, self.routing, load)
            state = (self._policy.stage_state(wf, self.pool, a.input, self.routing)
                     if self._policy.decides_stages else b"")
        except (policies.PolicyError, policies.ArtifactsUnavailable) as e:
            rec.status, rec.grpc_code, rec.error = "rejected", "FAILED_PRECONDITION", str(e)
            return self._end(rec)
        admitted = cw.every if f_r is None else np.asarray(f_r, dtype=np.int64)
        if not len(admitted):
            rec.status, rec.error = "rejected", "empty F(r)"
            return self._end(rec)
        rec.admitted_configurations = len(admitted)
        entry = self.round.entry(cw, rid, admitted, arrival=a.offset,
                                 policy=self._policy if self._policy.decides_stages else None,
                                 stage_state=state)
        req = _Request(index, a, entry, rec)
        self._requests[rid] = req
        # by id, not the request: a request that ended is freed now, not at its deadline
        self._at(a.offset + self.timeout_s, self._deadline, rid)
        self._progress(req)

    def _progress(self, req: _Request) -> None:
        """Start every stage whose inputs are ready (tool stages finish at once, as the
        executor runs them), or end the request at its sink."""
        wf = req.entry.workflow
        moved = True
        while moved:
            moved = False
            for st in wf.stages:
                if st.name in req.started or not all(d in req.outputs for d in st.depends_on):
                    continue
                req.started.add(st.name)
                if st.kind == "tool":
                    req.outputs[st.name] = st.render(req.arrival.input, req.outputs)
                    req.record.stages.append(StageRecord(st.name, "", 0.0, 0.0, 0.0, "sim"))
                    moved = True
                else:
                    self._wait(req, st)
        # once: with a control path, two answers may each schedule this after the sink's
        if wf.sink.name in req.outputs and self._requests.pop(req.entry.request_id, None):
            if req.timed_out:
                return  # its client has gone; the record says so already
            rec = req.record
            rec.status, rec.answer = "ok", req.outputs[wf.sink.name]
            if rec.expected is not None:
                rec.correct = normalize_answer(rec.answer) == normalize_answer(rec.expected)
            self._end(rec)

    def _deadline(self, rid: str) -> None:
        """The client stops waiting (the load generator's timeout); the request runs on, as
        it does live unless it cancels on disconnect."""
        req = self._requests.get(rid)
        if req is not None and not req.timed_out:
            req.timed_out = True
            req.record.status, req.record.error = "timeout", "deadline exceeded"
            self._end(req.record)

    def _wait(self, req: _Request, st: StageDef) -> None:
        """The LLM stage waits in the meta-queue (as an executor's AcquireStage)."""
        entry = req.entry
        index = entry.workflow.llm_index(st.name)
        if entry.policy is not None and index not in entry.chosen:
            apply_stage_role(entry, index, self.pool, self._occupancy, self.capacity)
        entry.waiters[index] = (req, st, self._now)
        entry.round_request.ready.append(index)
        self._queue[entry.request_id] = entry
        self._dirty = True

    def _end(self, rec: RequestRecord) -> None:
        rec.completed_at = self._now
        rec.latency_s = self._now - rec.arrival
        rec.gpu_seconds = sum(s.gpu_seconds for s in rec.stages)
        if rec.expected is not None and rec.correct is None:
            rec.correct = False
        if self._on_record is not None:
            self._on_record(rec)
        else:
            self._records.append(rec)

    # the scheduler ---------------------------------------------------------------------
    def _round(self) -> int:
        c = self.control
        entries = [e for e in self._queue.values() if e.waiters]
        free = np.maximum(self.capacity - self._occupancy, 0).astype(np.int32)
        if not entries or not (free > 0).any():
            return 0
        if self._horizon:
            self._look_ahead()
        moments: dict[int, float] = {}  # per request: its parallel stages go together
        for pl in self.round.run(entries, free, self._occupancy,
                                 self._reserve if self._horizon else None):
            entry = pl.entry
            req, st, queued_at = entry.waiters.pop(pl.stage)
            if not entry.waiters:
                del self._queue[entry.request_id]
            self._occupancy[pl.model] += 1
            call = _Call(req, st, pl.model, st.render(req.arrival.input, req.outputs),
                         queued_at, self._now, moment=self._moment_of(moments, req))
            before = self._drawn(c.stage_s * c.before, c.jitter, call.moment)
            self._at(self._now + before, self._send, call)
        self._note_occupancy()
        return 1

    def _moment(self) -> float:
        """The draw the calls of one round, or of one batch, share (ControlPath.together)."""
        c = self.control
        return 2.0 * self._jitter.random() - 1.0 if c.together and c.jitter else 0.0

    def _moment_of(self, moments: dict[int, float], req: _Request) -> float:
        """The moment `req` shares between its calls of one round or one batch."""
        if req.index not in moments:
            moments[req.index] = self._moment()
        return moments[req.index]

    def _drawn(self, mean: float, jitter: float, moment: float | None = None) -> float:
        """A part of the control path whose mean is `mean`, drawn within +-`jitter`; with a
        `moment`, correlated by ControlPath.together with the other calls' of that moment."""
        if not mean or not jitter:
            return mean
        u = 2.0 * self._jitter.random() - 1.0
        c = self.control
        if moment is not None and c.together:
            u = math.sqrt(c.together) * moment + math.sqrt(1.0 - c.together) * u
        return max(0.0, mean * (1.0 + jitter * u))

    def _load(self) -> dict[str, common_pb2.ModelLoad]:
        """The load snapshot a load-aware policy reads (leases held; in the live stack it is
        up to one load-monitor interval old)."""
        return {m.name: common_pb2.ModelLoad(
            model=m.name, leased=int(self._occupancy[i]), in_flight=int(self._occupancy[i]),
            capacity=m.capacity, utilization=float(self._occupancy[i]) / m.capacity,
            triton_pending=float(len(self._models[i].queue)))
            for i, m in enumerate(self.pool.models)}

    def _note_occupancy(self) -> None:
        if self.keep_timeline:
            self._timeline.append((self._now, dict(zip(self.pool.names,
                                                       self._occupancy.tolist(), strict=True))))

    # the pool --------------------------------------------------------------------------
    def _send(self, call: _Call) -> None:
        """The executor sends the model call; it reaches Triton's queue its way there later."""
        call.sent_at = self._now
        c = self.control
        self._after(self._drawn(c.call_s * c.call_before, c.call_jitter), self._submit, call)

    def _submit(self, call: _Call) -> None:
        """The model call reaches Triton: queue it for the model's dynamic batcher."""
        m = self._models[call.model]
        call.reached_at = self._now
        m.queue.append(call)
        self._batch(m)

    def _batch(self, m: _Model) -> None:
        """Triton's dynamic batcher: while a slot is free, a batch of up to saturation_batch
        queued calls goes as soon as it is full, or once its oldest call has waited the
        queue delay; else the batcher looks again then."""
        full = m.profile.saturation_batch
        while m.free_slots and m.queue:
            due = m.queue[0].reached_at + m.delay_s
            if len(m.queue) < full and due > self._now:
                if m.batch_due is None or m.batch_due > due:
                    m.batch_due = due
                    self._at(due, self._batch_due, m)
                return
            self._dispatch(m, [m.queue.popleft() for _ in range(min(len(m.queue), full))])

    def _batch_due(self, m: _Model) -> None:
        if m.batch_due is not None and m.batch_due <= self._now:
            m.batch_due = None
        self._batch(m)

    def _dispatch(self, m: _Model, batch: list[_Call]) -> None:
        """A slot takes the batch: after Triton's hop to the handler, it runs on the model's
        least loaded engine, prefill then decode."""
        m.free_slots -= 1
        m.stats.calls += len(batch)
        m.stats.queue_s += sum(self._now - call.reached_at for call in batch)
        hop = self._drawn(self.control.hop_s * self.control.hop_before, self.control.jitter)
        e = min(range(len(m.engines)), key=lambda k: m.engines[k].load)
        engine = m.engines[e]
        engine.load += len(batch)
        tokens = max(prompt_tokens(call.prompt) for call in batch)
        out = max(call.stage.output_tokens for call in batch)
        self._at(self._now + hop + engine.prefill_s(len(batch), tokens), self._decode, m, e,
                 batch, out, self._now)

    def _decode(self, m: _Model, e: int, batch: list[_Call], out: int, taken: float) -> None:
        """Prefill done: the batch joins its engine's running batch."""
        key = next(m.ids)
        m.running[key] = (batch, taken)
        m.engines[e].join(key, len(batch), out, self._now)
        self._wake_engine(m, e)

    def _wake_engine(self, m: _Model, e: int) -> None:
        """(Re)schedule the engine's next finish: any join or leave changes everyone's pace."""
        self._engine_version[m.index][e] += 1
        left = m.engines[e].next_finish_s()
        if left is not None:
            self._at(self._now + left, self._engine_due, m, e, self._engine_version[m.index][e])

    def _engine_due(self, m: _Model, e: int, version: int) -> None:
        if version != self._engine_version[m.index][e]:
            return  # the engine's pace changed since: a later event stands
        engine = m.engines[e]
        engine.advance(self._now)
        c = self.control
        for key in engine.finished():
            engine.leave(key, self._now)
            batch, taken = m.running.pop(key)
            engine.load -= len(batch)
            hop = self._drawn(c.hop_s * (1.0 - c.hop_before), c.jitter)
            if hop:  # Triton's hop back holds the slot; the answers leave at its end
                self._after(hop, self._slot_freed, m, len(batch), taken)
            else:
                self._slot_freed(m, len(batch), taken, look=False)
            moments: dict[int, float] = {}  # per request: its answers go on together
            for call in batch:
                call.moment = self._moment_of(moments, call.request)
                way = self._drawn(c.call_s * (1.0 - c.call_before), c.call_jitter)
                self._after(hop + way, self._answered, call)
        self._wake_engine(m, e)
        self._batch(m)

    def _slot_freed(self, m: _Model, size: int, taken: float, look: bool = True) -> None:
        """A batch's Triton slot is free again; `look`: the batcher looks at its queue now."""
        m.free_slots += 1
        m.stats.add_batch(size, self._now - taken)
        if look:
            self._batch(m)

    def _release(self, model: int) -> None:
        self._occupancy[model] -= 1
        self._note_occupancy()
        self._dirty = True

    def _answered(self, call: _Call) -> None:
        """The model answered: release the lease, record the stage, move the request on."""
        c = self.control
        release = self._drawn(c.release_s, c.jitter, call.moment)
        self._after(release, self._release, call.model)
        req = call.request
        model = self.pool.models[call.model]
        req.outputs[call.stage.name] = answer(model.name, call.stage.name, call.prompt)
        rec = StageRecord(call.stage.name, model.name, (call.placed_at - call.queued_at) * 1000,
                          (self._now - call.placed_at) * 1000, 0.0, "sim",
                          started_at=call.placed_at, finished_at=self._now,
                          gpu_seconds=model.gpu_seconds(PROMPT_TOKENS, call.stage.output_tokens),
                          call_started_at=call.sent_at, call_ended_at=self._now,
                          placed_at=call.placed_at)
        req.record.stages.append(rec)
        # the rest of the control path: the stages it unblocks ask later, and never before
        # the release has reached the scheduler (live, the executor waits for ReleaseStage)
        rest = self._drawn(c.stage_s * (1.0 - c.before), c.jitter, call.moment)
        self._after(max(rest, release), self._progress, req)
