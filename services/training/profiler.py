"""The profiler: which configurations preserve accuracy on each request of a dataset.

A configuration c *preserves accuracy* on request r when the grader scores its answer at
least as well as the most expensive configuration's (aragog.training.graders; with `agree`,
when it answers as that one does: the paper's definition). Measuring that exhaustively costs
|configs| x |LLM stages| stage executions per request. Two savings:

1. A configuration tree: a stage's output depends only on its own and its ancestors'
   models (aragog.common.workflow.stage_ancestry), so configurations sharing those share
   the execution; a runner caches outputs by (stage, those models).
2. Near-monotonicity: a configuration whose models are all at least as large as a
   preserving one almost always preserves too, and one below a non-preserving one does not.
   `search` runs the largest configuration, then the cheapest (on most requests it
   preserves, and then so does everything); then, while some configurations are undecided,
   the one that decides most per stage execution it still costs (min(#undecided above it,
   #undecided below it) / uncached stages; the cheaper on ties), and infers its up-set (if
   it preserves) or its down-set (if not).

Inference is wrong where accuracy is not monotonic; `verify` measures how often.

Two ways to run stages, one search:
- **through the serving path** (`profile_through_triton`): every stage is a `tritonclient`
  call to the pool's Triton, the executors' own model client, with bounded concurrency, a
  progress bar and a checkpoint file that an interrupted run resumes from;
- **in-process** (`profile`), the ACCELERATOR for the generated benchmarks only: the
  EMULATED answer function called directly (aragog.emulation.run). A test checks both give
  the same preserving sets on the embedded pool.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
from collections.abc import Callable, Generator, Sequence

import numpy as np
from aragog.common.workflow import WorkflowDef, stage_ancestry
from aragog.executor.model_client import ModelCallError, ModelClient
from aragog.routing.artifacts import Profile, input_digest
from aragog.routing.space import PROMPT_TOKENS, Space
from aragog.training.dataset import Record
from aragog.training.graders import Grader

STAGE_ATTEMPTS = 3


class ProfileError(RuntimeError):
    """Profiling could not finish; the message says what to fix (finished requests are kept
    in the checkpoint, so re-running resumes)."""


@dataclasses.dataclass
class RequestProfile:
    preserving: np.ndarray  # [n] bool
    largest_correct: bool
    executions: int
    tokens: int = 0
    gpu_seconds: float = 0.0


def search(space: Space, cost: Callable[[int], int]) -> Generator[int, bool, np.ndarray]:
    """Yields the configurations to run, in order, and is sent whether each preserves;
    returns the preserving bitmap. `cost(c)`: stage executions c still needs. The largest
    preserves by definition and is not yielded (the caller runs it as the reference)."""
    n = space.size
    state = np.zeros(n, dtype=np.int8)  # 0 undecided, 1 preserves, -1 does not
    state[space.largest] = 1
    # Most requests are easy: if the cheapest configuration preserves, everything does.
    if space.cheapest == space.largest or (yield space.cheapest):
        return np.ones(n, dtype=bool)
    dom = space.dominates  # dom[i, j]: i >= j
    state[dom[space.cheapest, :]] = -1
    cheap_first = np.argsort(np.argsort(space.flops, kind="stable"))
    while True:
        undecided = state == 0
        if not undecided.any():
            return state == 1
        u = undecided.astype(np.int32)
        above = dom.T @ u  # undecided configurations at or above each c
        below = dom @ u  # ... at or below each c
        # information per stage execution: what the answer decides over what it costs now
        cand = np.flatnonzero(undecided)
        work = np.array([max(1, cost(int(c))) for c in cand])
        score = np.minimum(above[cand], below[cand]) / work - cheap_first[cand] / (n * n)
        c = int(cand[np.argmax(score)])
        if (yield c):
            state[dom[:, c] & undecided] = 1
        else:
            state[dom[c, :] & undecided] = -1


def _spent(space: Space, executed: Sequence[tuple[str, str, str]]) -> tuple[int, float]:
    """Tokens and GPU-seconds of the stage executions (model, stage, prompt), estimated from
    the pool's profiles: prompt words plus the stage's output budget, at saturation batch."""
    wf, pool = space.workflow, space.pool
    tokens, gpu = 0, 0.0
    for model, stage, prompt in executed:
        out = wf.stage(stage).output_tokens
        words = len(prompt.split())
        tokens += words + out
        gpu += pool.model(model).gpu_seconds(words or PROMPT_TOKENS, out)
    return tokens, gpu


def profile_request(space: Space, runner, grader: Grader, expected: str | None,
                    exhaustive: bool = False) -> RequestProfile:
    """Profile one request with a synchronous runner (`answer(models)`, `missing(models)`,
    `executed`): the in-process path."""
    reference = runner.answer(space.models(space.largest))

    def preserves(c: int) -> bool:
        return grader.preserves(runner.answer(space.models(c)), reference, expected)

    if exhaustive:
        keep = np.array([preserves(c) for c in range(space.size)])
    else:
        steps = search(space, lambda c: runner.missing(space.models(c)))
        try:
            c = next(steps)
            while True:
                c = steps.send(preserves(c))
        except StopIteration as done:
            keep = done.value
    tokens, gpu = _spent(space, runner.executed)
    return RequestProfile(keep, grader.largest_correct(reference, expected),
                          len(runner.executed), tokens, gpu)


async def profile_request_async(space: Space, runner: TritonRunner, grader: Grader,
                                expected: str | None) -> RequestProfile:
    """`profile_request` with stages run through Triton."""
    reference = await runner.answer(space.models(space.largest))
    steps = search(space, lambda c: runner.missing(space.models(c)))
    try:
        c = next(steps)
        while True:
            answer = await runner.answer(space.models(c))
            c = steps.send(grader.preserves(answer, reference, expected))
    except StopIteration as done:
        keep = done.value
    tokens, gpu = _spent(space, runner.executed)
    return RequestProfile(keep, grader.largest_correct(reference, expected),
                          len(runner.executed), tokens, gpu)


class TritonRunner:
    """Runs configurations of one request through Triton, as the executor runs stages: the
    same prompts (StageDef.render), the same model client. Outputs are cached by (stage, its
    ancestors' models); stages of one depth run concurrently."""

    def __init__(self, wf: WorkflowDef, request_input: str, client: ModelClient,
                 timeout_s: float, request_id: str = ""):
        self.wf = wf
        self.input = request_input
        self.client = client
        self.timeout_s = timeout_s
        self.request_id = request_id
        self.cache: dict[tuple[str, tuple[str, ...]], asyncio.Future] = {}
        self.executed: list[tuple[str, str, str]] = []
        self._ancestry = stage_ancestry(wf)
        self._llm = {s.name: i for i, s in enumerate(wf.llm_stages)}
        depths = wf.depths()
        self._levels = [[s for s in wf.stages if depths[s.name] == d]
                        for d in range(max(depths.values()) + 1)]

    def _key(self, stage: str, models: Sequence[str]) -> tuple[str, tuple[str, ...]]:
        return stage, tuple(models[i] for i in self._ancestry[stage])

    def missing(self, models: Sequence[str]) -> int:
        return sum(self._key(st, models) not in self.cache for st in self._ancestry)

    async def answer(self, models: Sequence[str]) -> str:
        outputs: dict[str, str] = {}
        for level in self._levels:
            results = await asyncio.gather(*(self._stage(st, models, outputs) for st in level))
            outputs.update((st.name, out) for st, out in zip(level, results, strict=True))
        return outputs[self.wf.sink.name]

    async def _stage(self, st, models: Sequence[str], outputs: dict[str, str]) -> str:
        prompt = st.render(self.input, outputs)
        if st.kind != "llm":
            return prompt
        key = self._key(st.name, models)
        fut = self.cache.get(key)
        if fut is None:
            model = models[self._llm[st.name]]
            fut = self.cache[key] = asyncio.ensure_future(self._call(model, st, prompt))
        return await fut

    async def _call(self, model: str, st, prompt: str) -> str:
        for attempt in range(1, STAGE_ATTEMPTS + 1):
            try:
                out = await self.client.generate(model, st.name, prompt, st.output_tokens,
                                                 self.timeout_s, self.request_id)
                self.executed.append((model, st.name, prompt))
                return out
            except ModelCallError:
                if attempt == STAGE_ATTEMPTS:
                    raise
                await asyncio.sleep(0.2 * 2**attempt)
        raise AssertionError("unreachable")


def assemble(space: Space, records: Sequence[Record], done: dict[str, RequestProfile]) -> Profile:
    """The Profile of `records` (in their order) from per-request results."""
    results = [done[r.id] for r in records]
    return Profile(
        [r.id for r in records],
        [input_digest(r.input) for r in records],
        [r.split for r in records],
        np.array([x.preserving for x in results], dtype=bool).reshape(len(records), space.size),
        np.array([x.largest_correct for x in results], dtype=bool),
        np.array([x.executions for x in results], dtype=np.int32),
        space.size * len(space.workflow.llm_stages),
        np.array([x.tokens for x in results], dtype=np.int64),
        np.array([x.gpu_seconds for x in results], dtype=np.float64),
    )


def profile(space: Space, records: Sequence[Record], grader: Grader) -> Profile:
    """Profile a GENERATED benchmark in-process (the accelerator: the EMULATED answer
    function, no Triton)."""
    from aragog.emulation.run import Runner

    done = {r.id: profile_request(space, Runner(space.workflow, r.input), grader, r.expected)
            for r in records}
    return assemble(space, records, done)


def verify(space: Space, records: Sequence[Record], grader: Grader) -> dict[str, float]:
    """Accelerated against exhaustive profiling of `records` in-process: label agreement and
    the executions each needed (the exhaustive run still shares prefixes, so it is reported
    both with and without that saving)."""
    from aragog.emulation.run import Runner

    def run(r: Record, exhaustive: bool) -> RequestProfile:
        return profile_request(space, Runner(space.workflow, r.input), grader, r.expected,
                               exhaustive)

    fast = [run(r, False) for r in records]
    full = [run(r, True) for r in records]
    pairs = list(zip(fast, full, strict=True))
    return {
        "requests": len(records),
        "label_agreement": float(np.mean([(f.preserving == e.preserving).mean() for f, e in pairs])),
        "preserving_missed": sum(int((e.preserving & ~f.preserving).sum()) for f, e in pairs),
        "preserving_wrongly_inferred": sum(int((f.preserving & ~e.preserving).sum())
                                           for f, e in pairs),
        "executions_accelerated": float(np.mean([f.executions for f in fast])),
        "executions_tree_only": float(np.mean([e.executions for e in full])),
        "executions_exhaustive": space.size * len(space.workflow.llm_stages),
    }


class Checkpoint:
    """Finished requests, one JSON line each, after a header line naming what is profiled.

    Appended and flushed as each request finishes, so a run killed at any point resumes from
    what is on disk; a torn last line (killed mid-write) is ignored. A checkpoint made for
    another workflow, pool, dataset or grader is refused rather than mixed in."""

    def __init__(self, path: str, header: dict, n: int):
        self.path = path
        self.header = header
        self.n = n
        self.done: dict[str, RequestProfile] = {}
        if os.path.exists(path):
            self._read()
        else:
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            with open(path, "w", encoding="utf-8") as f:
                f.write(json.dumps({"header": header}) + "\n")

    def _read(self) -> None:
        with open(self.path, encoding="utf-8") as f:
            lines = f.read().split("\n")
        try:
            header = json.loads(lines[0])["header"]
        except (ValueError, KeyError, TypeError, IndexError):
            raise ProfileError(f"{self.path} is not a profile checkpoint; move it away") from None
        if header != self.header:
            changed = sorted(k for k in set(header) | set(self.header)
                             if header.get(k) != self.header.get(k))
            raise ProfileError(
                f"checkpoint {self.path} was made with another {', '.join(changed)}; delete it "
                "to start over, or profile into another --out directory")
        for line in lines[1:]:
            try:
                x = json.loads(line)
                keep = np.zeros(self.n, dtype=bool)
                keep[x["preserving"]] = True
                self.done[x["id"]] = RequestProfile(keep, x["largest_correct"], x["executions"],
                                                    x["tokens"], x["gpu_seconds"])
            except (ValueError, KeyError, TypeError, IndexError):
                continue  # a torn last line

    def add(self, f, rid: str, rp: RequestProfile) -> None:
        f.write(json.dumps({
            "id": rid, "preserving": np.flatnonzero(rp.preserving).tolist(),
            "largest_correct": bool(rp.largest_correct), "executions": rp.executions,
            "tokens": rp.tokens, "gpu_seconds": rp.gpu_seconds,
        }) + "\n")
        f.flush()
        self.done[rid] = rp


async def profile_through_triton(
    space: Space, records: Sequence[Record], grader: Grader, triton_url: str,
    checkpoint: Checkpoint, concurrency: int = 8, timeout_s: float = 120.0,
    progress: bool = True,
) -> Profile:
    """Profile `records` by running their stages on the Triton at `triton_url`, `concurrency`
    requests at a time, resuming from `checkpoint`. Raises ProfileError if some request
    could not be profiled (the others stay in the checkpoint)."""
    from tqdm import tqdm

    client = ModelClient(triton_url)
    try:
        if not await client.ready():
            raise ProfileError(f"Triton at {triton_url} is not ready; start it (aragog-stack up) "
                               "or point --triton at a running one")
        missing = [m for m in {m for s in space.workflow.llm_stages for m in s.candidates}
                   if not await client.model_ready(m)]
        if missing:
            raise ProfileError(f"Triton at {triton_url} does not serve models {sorted(missing)} "
                               "that the workflow's stages may use; load them or fix the pool file")
        todo = [r for r in records if r.id not in checkpoint.done]
        sem = asyncio.Semaphore(max(1, concurrency))
        bar = tqdm(total=len(records), initial=len(records) - len(todo), unit="req",
                   desc=f"profile {space.workflow.id}", disable=not progress, smoothing=0.05)
        errors: list[str] = []
        with open(checkpoint.path, "a", encoding="utf-8") as f:

            async def one(r: Record) -> None:
                async with sem:
                    runner = TritonRunner(space.workflow, r.input, client, timeout_s,
                                          f"profile-{r.id}"[:64])
                    try:
                        rp = await profile_request_async(space, runner, grader, r.expected)
                    except ModelCallError as e:
                        errors.append(f"{r.id}: {e}")
                        return
                checkpoint.add(f, r.id, rp)
                bar.update()

            await asyncio.gather(*(one(r) for r in todo))
        bar.close()
    finally:
        await client.close()
    if errors:
        raise ProfileError(
            f"{len(errors)} of {len(records)} requests failed after {STAGE_ATTEMPTS} attempts per "
            f"stage (first: {errors[0][:200]}); the others are checkpointed in {checkpoint.path}: "
            "run the same command again to retry the failed ones")
    return assemble(space, records, checkpoint.done)
