"""Routing artifacts per (pool family, workflow): what the router serves from, and the
manifest that says what they were built from.

    {dir}/{family}/{workflow}/profile.npz   preserving sets of the profiled requests
    {dir}/{family}/{workflow}/lexicon.npz   the lexical embedding the router reads too
    {dir}/{family}/{workflow}/router.npz    the MLP and its risk weight
    {dir}/{family}/{workflow}/summary.json  manifest, per-workflow configuration, training figures
    {dir}/{family}/{workflow}/routellm.npz  RouteLLM's routers, trained from the same profile
    {dir}/{family}/{workflow}/flowcompile.json  FlowCompile's Pareto set, compiled from it
    {dir}/{family}/{workflow}/agentrouter.npz  AgentRouter's tier classifier, trained from it

`aragog-routing build` (aragog.training) writes them; services load them read-only. The
manifest holds digests of everything the router's answers depend on: the workflow, the
pool's candidate models, the dataset, the grader, the embedder and the training settings.
Loading checks what a serving router can see (the registered workflow and pool, the format)
and reports the first mismatch as a reason a person can act on; it never regenerates data or
imports the emulation or the training side to check.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
from collections.abc import Callable
from typing import Any

import numpy as np
from aragog.common.pool import PoolSpec
from aragog.common.workflow import WorkflowDef
from aragog.routing import lexical
from aragog.routing import model as router_model
from aragog.routing.embedding import Embedder
from aragog.routing.space import Space
from aragog.routing.space import build as build_space

FORMAT = 2
"""Version of the artifacts' layout; artifacts of another format are rebuilt, not read."""


def default_dir() -> str:
    return os.path.join(os.path.expanduser("~"), ".cache", "aragog", "artifacts")


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def workflow_digest(wf: WorkflowDef) -> str:
    """Changes with anything of the workflow that routing depends on (its canonical YAML:
    stages, prompts, candidates in order, output lengths)."""
    return _digest(wf.to_yaml())


def pool_digest(pool: PoolSpec, wf: WorkflowDef) -> str:
    """Changes with the candidate models' profiles, which set the configurations' costs.
    Instance counts are left out: scaling a model out does not change what F(r) holds."""
    names = sorted({m for s in wf.llm_stages for m in s.candidates})
    profiles = [{k: v for k, v in dataclasses.asdict(pool.model(n)).items() if k != "instances"}
                for n in names]
    return _digest(json.dumps({"family": pool.family, "models": profiles}, sort_keys=True))


def input_digest(text: str) -> str:
    """How a profile names a request's input without storing it."""
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


@dataclasses.dataclass
class Profile:
    """Which configurations preserve accuracy on each profiled request of a dataset.

    `preserving[r, c]`: configuration c's answer on request r is graded as good as the largest
    configuration's; `largest_correct[r]`: the largest configuration's answer is correct
    (True where the grader has no labels); `executions`, `tokens`, `gpu_seconds`: what
    profiling request r spent (tokens and GPU-seconds estimated from the pool's profiles)."""

    item_ids: list[str]
    inputs: list[str]  # input_digest of each request's input
    splits: list[str]  # "train" or "test"
    preserving: np.ndarray  # [items, n] bool
    largest_correct: np.ndarray  # [items] bool
    executions: np.ndarray  # [items] stage executions spent
    exhaustive_executions: int  # per request, without the profiler's savings
    tokens: np.ndarray  # [items]
    gpu_seconds: np.ndarray  # [items]

    def rows(self, split: str) -> np.ndarray:
        return np.array([i for i, s in enumerate(self.splits) if s == split], dtype=np.int64)

    def save(self, path: str) -> None:
        tmp = f"{path}.{os.getpid()}.tmp.npz"
        np.savez_compressed(
            tmp,
            item_ids=np.array(self.item_ids),
            inputs=np.array(self.inputs),
            splits=np.array(self.splits),
            preserving=np.packbits(self.preserving, 1),
            n=self.preserving.shape[1],
            largest_correct=self.largest_correct,
            executions=self.executions,
            exhaustive=self.exhaustive_executions,
            tokens=self.tokens,
            gpu_seconds=self.gpu_seconds,
        )
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str) -> Profile:
        z = np.load(path)
        n = int(z["n"])
        return cls(
            [str(x) for x in z["item_ids"]],
            [str(x) for x in z["inputs"]],
            [str(x) for x in z["splits"]],
            np.unpackbits(z["preserving"], 1, count=n).astype(bool),
            z["largest_correct"],
            z["executions"],
            int(z["exhaustive"]),
            z["tokens"],
            z["gpu_seconds"],
        )


@dataclasses.dataclass
class Artifacts:
    """What the policies need for one workflow on one pool."""

    space: Space
    profile: Profile
    router: router_model.RouterModel
    lexicon: lexical.Lexicon
    summary: dict
    directory: str = ""
    _companions: dict = dataclasses.field(default_factory=dict, repr=False, compare=False)

    def companion(self, filename: str, load: Callable[[str], Any]) -> Any | None:
        """A file the build wrote beside the router for another policy (a published
        router's weights), read once by `load(path)`; None if this build has none."""
        if filename not in self._companions:
            p = os.path.join(self.directory, filename)
            self._companions[filename] = load(p) if os.path.exists(p) else None
        return self._companions[filename]

    def features(self, texts: list[str], embedder: Embedder) -> np.ndarray:
        """What the router reads of each text."""
        return router_input(embedder.encode(texts), self.lexicon, texts)

    @functools.cached_property
    def rows(self) -> dict[str, int]:
        """Input digest -> row of the profile."""
        return {d: r for r, d in enumerate(self.profile.inputs)}

    def true_f(self, request_input: str) -> np.ndarray | None:
        """The profiled F(r) of a profiled input, None for any other input."""
        row = self.rows.get(input_digest(request_input))
        return None if row is None else np.flatnonzero(self.profile.preserving[row])

    @property
    def per_workflow(self) -> int:
        return int(self.summary["per_workflow_config"])


def path(root: str, family: str, wid: str) -> str:
    """Where the artifacts of workflow `wid` on pool family `family` live."""
    return os.path.join(root, family or "default", wid)


def load(root: str, pool: PoolSpec, wf: WorkflowDef) -> tuple[Artifacts | None, str]:
    """The artifacts for the registered workflow `wf` on `pool`, or None and why not."""
    d = path(root, pool.family, wf.id)
    try:
        with open(os.path.join(d, "summary.json"), encoding="utf-8") as f:
            summary = json.load(f)
    except FileNotFoundError:
        return None, f"no routing artifacts in {d}"
    except (OSError, ValueError) as e:
        return None, f"unreadable routing artifacts in {d}: {e}"
    manifest = summary.get("manifest") or {}
    expected = {"format": FORMAT, "workflow": workflow_digest(wf), "pool": pool_digest(pool, wf)}
    what = {"format": "artifact format", "workflow": "workflow definition",
            "pool": "pool's candidate models"}
    for key, want in expected.items():
        if manifest.get(key) != want:
            return None, (f"routing artifacts in {d} are stale: the {what[key]} changed since "
                          "they were built")
    try:
        space = build_space(wf, pool)
        prof = Profile.load(os.path.join(d, "profile.npz"))
        router = router_model.RouterModel.load(os.path.join(d, "router.npz"))
        lexicon = lexical.Lexicon.load(os.path.join(d, "lexicon.npz"))
    except (OSError, KeyError, ValueError) as e:
        return None, f"unreadable routing artifacts in {d}: {e}"
    if prof.preserving.shape[1] != space.size:
        return None, f"routing artifacts in {d} cover {prof.preserving.shape[1]} configurations, " \
                     f"the workflow has {space.size}"
    return Artifacts(space, prof, router, lexicon, summary, d), ""


def router_input(embeddings: np.ndarray, lexicon: lexical.Lexicon, texts: list[str]) -> np.ndarray:
    """The router's input: each text's MiniLM embedding, then its lexical one."""
    return np.hstack([embeddings, lexicon.embed(texts)]).astype(np.float32)
