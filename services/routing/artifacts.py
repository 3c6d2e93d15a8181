"""Routing artifacts per (pool family, workflow): the profile, the trained router, a summary.

    {dir}/{family}/{workflow}/profile.npz   which configurations preserve accuracy, per request
    {dir}/{family}/{workflow}/lexicon.npz   the lexical embedding the router reads too
    {dir}/{family}/{workflow}/router.npz    the MLP and its risk weight
    {dir}/{family}/{workflow}/summary.json  per-workflow configuration, training figures, fingerprint
    {dir}/embeddings/{workflow}-{embedder}.npy   embeddings of the benchmark's inputs

`build` makes them (aragog-routing build); services load them read-only. A fingerprint of the
benchmark and its calibration guards against serving a router trained on other data: a
stale artifact is reported as missing.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import inspect
import json
import math
import os
import time
from collections.abc import Callable

import numpy as np
from aragog import workflows
from aragog.emulation import calibration
from aragog.emulation.generate import Item, benchmark
from aragog.emulation.run import Runner
from aragog.emulation.specs import SPECS
from aragog.common.pool import PoolSpec, load_pool
from aragog.routing import model as router_model
from aragog.routing import lexical, profiler
from aragog.routing.embedding import Embedder
from aragog.routing.space import Space
from aragog.routing.space import build as build_space

MAX_LOSS = 0.005
"""Accuracy the risk weight may give up on the validation requests (the target allows 1 point;
the rest is margin: choosing the best of many weights on the same requests is optimistic,
and held-out losses ran up to twice the validation loss)."""
WEIGHT_DECAYS = (1e-4, 3e-3)
"""The MLP's weight decay is picked per workflow from these by out-of-fold saving: with ~1,000
training requests for 384 embedding dimensions, the strong one made the chain and
decomposition routers less overconfident (10-21 points more of the oracle's saving at the
same loss), while voting, whose labels are mostly luck, did better with the light one."""
FOLDS = 4
"""The risk weight is fitted on out-of-fold routes over the whole training split (each fold
routed by a router trained on the others): four times the validation requests of a single
held-back quarter, so a loss of half a point is measured on ~7 requests, not ~2."""


def default_dir() -> str:
    return os.path.join(os.path.expanduser("~"), ".cache", "aragog", "artifacts")


def fingerprint(wid: str, family: str) -> str:
    """Changes whenever the benchmark, its emulation, the calibration or the router's
    training settings would."""
    bench = benchmark(wid)
    h = hashlib.sha256(repr(SPECS[wid]).encode())
    served = "fold-average"  # how train_router makes the router it ships
    h.update(repr((MAX_LOSS, FOLDS, WEIGHT_DECAYS, router_model.RISK_WEIGHTS,
                   inspect.signature(router_model.train), served,
                   ("lexicon", lexical.DIM, lexical.MIN_DF))).encode())
    h.update(json.dumps(calibration.fit(wid, family)).encode())
    for it in bench.items:
        h.update(f"{it.id}\0{it.input}\0{it.answer}\0{it.difficulty:.6f}\0{it.split}".encode())
    return h.hexdigest()[:16]


@dataclasses.dataclass
class Artifacts:
    """What the policies need for one workflow on one pool family."""

    space: Space
    profile: profiler.Profile
    router: router_model.RouterModel
    lexicon: lexical.Lexicon
    summary: dict

    def features(self, texts: list[str], embedder: Embedder) -> np.ndarray:
        """What the router reads of each text."""
        return router_input(embedder.encode(texts), self.lexicon, texts)

    @functools.cached_property
    def rows(self) -> dict[str, int]:
        """Benchmark input text -> row of the profile."""
        by_id = {it.id: it.input for it in benchmark(self.space.workflow.id).items}
        return {by_id[i]: r for r, i in enumerate(self.profile.item_ids)}

    def true_f(self, request_input: str) -> np.ndarray | None:
        """The profiled F(r) of a benchmark input, None for any other input."""
        row = self.rows.get(request_input)
        return None if row is None else np.flatnonzero(self.profile.preserving[row])

    @property
    def per_workflow(self) -> int:
        return int(self.summary["per_workflow_config"])


def _dir(root: str, family: str, wid: str) -> str:
    return os.path.join(root, family, wid)


def load(root: str, pool: PoolSpec, wid: str) -> Artifacts | None:
    """The artifacts for `wid` on `pool`, or None if absent, stale or for another space."""
    d = _dir(root, pool.family, wid)
    try:
        with open(os.path.join(d, "summary.json"), encoding="utf-8") as f:
            summary = json.load(f)
        if wid not in SPECS or summary.get("fingerprint") != fingerprint(wid, pool.family):
            return None
        wf = workflows.load(wid, pool.names)
        space = build_space(wf, pool)
        prof = profiler.Profile.load(os.path.join(d, "profile.npz"))
        router = router_model.RouterModel.load(os.path.join(d, "router.npz"))
        lexicon = lexical.Lexicon.load(os.path.join(d, "lexicon.npz"))
    except (OSError, KeyError, ValueError):
        return None
    if prof.preserving.shape[1] != space.size:
        return None
    return Artifacts(space, prof, router, lexicon, summary)


def router_input(embeddings: np.ndarray, lexicon: lexical.Lexicon, texts: list[str]) -> np.ndarray:
    """The router's input: each text's MiniLM embedding, then its lexical one."""
    return np.hstack([embeddings, lexicon.embed(texts)]).astype(np.float32)


def embeddings(root: str, wid: str, embedder: Embedder, items: list[Item]) -> np.ndarray:
    """Embeddings of the benchmark's inputs, cached per workflow and embedder."""
    texts = hashlib.sha256("\0".join(it.input for it in items).encode()).hexdigest()[:12]
    path = os.path.join(root, "embeddings", f"{wid}-{embedder.id}-{texts}.npy")
    if os.path.exists(path):
        e = np.load(path)
        if e.shape[0] == len(items):
            return e
    e = embedder.encode([it.input for it in items])
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp.npy"  # builders of two families may share the cache
    np.save(tmp, e)
    os.replace(tmp, path)
    return e


def per_workflow_config(space: Space, items: list[Item]) -> tuple[int, dict]:
    """The cheapest configuration whose accuracy over `items` matches the largest's."""
    runners = [Runner(space.workflow, it.input) for it in items]

    def accuracy(c: int) -> float:
        models = space.models(c)
        return float(
            np.mean([r.answer(models) == it.answer for r, it in zip(runners, items, strict=True)])
        )

    target = accuracy(space.largest)
    for c in space.cost_order:
        acc = accuracy(int(c))
        if acc >= target:
            return int(c), {"accuracy": acc, "largest_accuracy": target}
    return space.largest, {"accuracy": target, "largest_accuracy": target}


def train_router(
    space: Space, x: np.ndarray, prof: profiler.Profile, train_rows: np.ndarray, seed: int = 0
) -> tuple[router_model.RouterModel, dict]:
    """The router for requests `train_rows` (features `x`): FOLDS routers, each trained on
    all folds but one, their weight decay and risk weight cross-fitted on the routes each
    gives its own held-back fold; it serves their average, with the out-of-fold figures.

    Why the average and not one router retrained on every fold: the weight is fitted to
    the fold routers' risks, and a router trained on a third more requests is more
    confident than they were. Over three training seeds, a retrained router's held-out
    saving moved by up to 14 points and its loss reached 2.17 points; the average's moved
    by up to 7, its loss at most 1.17, for about the same mean saving (benchmarks/README.md,
    "Routing rules")."""
    folds = np.array_split(np.random.default_rng(0).permutation(train_rows), FOLDS)
    val = np.concatenate(folds)
    best: tuple[list, float, dict] | None = None  # fold routers, risk weight, figures
    for decay in WEIGHT_DECAYS:
        routers, chosen = [], []
        for k, fold in enumerate(folds):
            fit = np.concatenate([f for j, f in enumerate(folds) if j != k])
            routers.append(router_model.train(space, x[fit], prof.preserving[fit],
                                              weight_decay=decay, seed=seed))
            chosen.append(router_model.chosen_configs(routers[-1], space, x[fold]))
        lam, figures = router_model.choose_risk_weight(
            space, np.concatenate(chosen, axis=1), prof.preserving[val],
            prof.largest_correct[val], MAX_LOSS,
        )
        if best is None or figures["saving"] > best[2]["saving"]:
            best = (routers, lam, {**figures, "weight_decay": decay})
    assert best is not None
    routers, lam, figures = best
    router = router_model.RouterModel.average(routers)
    router.risk_weight = lam
    return router, figures


def build(
    root: str, family: str, wid: str, embedder: Embedder, say: Callable[[str], None] = print
) -> Artifacts:
    """Profile the benchmark, train the router, write the artifacts; return them."""
    pool = load_pool(family)
    wf = workflows.load(wid, pool.names)
    space = build_space(wf, pool)
    bench = benchmark(wid)
    items = list(bench.items)
    t0 = time.monotonic()
    prof = profiler.profile(space, items)
    train_rows = np.array([i for i, it in enumerate(items) if it.split == "train"])
    say(
        f"{family}/{wid}: profiled {len(items)} requests in {time.monotonic() - t0:.1f}s, "
        f"{prof.executions[train_rows].mean():.1f} stage executions per request "
        f"(exhaustive {prof.exhaustive_executions})"
    )
    t0 = time.monotonic()
    pw, pw_figures = per_workflow_config(space, [items[i] for i in train_rows])
    texts = [it.input for it in items]
    lexicon = lexical.Lexicon.fit([texts[i] for i in train_rows])
    x = router_input(embeddings(root, wid, embedder, items), lexicon, texts)
    router, val_figures = train_router(space, x, prof, train_rows)
    lam = router.risk_weight
    summary = {
        "workflow": wid,
        "family": family,
        "fingerprint": fingerprint(wid, family),
        "embedder": embedder.id,
        "lexicon": {"dim": lexicon.dim, "grams": len(lexicon.vocabulary)},
        "configurations": space.size,
        "per_workflow_config": pw,
        "per_workflow_models": space.models(pw),
        **{f"per_workflow_{k}": v for k, v in pw_figures.items()},
        "risk_weight": lam if math.isfinite(lam) else None,
        "validation": val_figures,
        "profiling": {
            "requests": len(train_rows),
            "executions_per_request": float(prof.executions[train_rows].mean()),
            "exhaustive_per_request": prof.exhaustive_executions,
        },
    }
    router.meta = {k: summary[k] for k in ("workflow", "family", "embedder", "configurations")}
    d = _dir(root, family, wid)
    os.makedirs(d, exist_ok=True)
    prof.save(os.path.join(d, "profile.npz"))
    router.save(os.path.join(d, "router.npz"))
    lexicon.save(os.path.join(d, "lexicon.npz"))
    with open(os.path.join(d, "summary.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=1)
    say(
        f"{family}/{wid}: per-workflow {space.models(pw)}, risk weight {lam:.3g}, "
        f"validation {val_figures}, trained in {time.monotonic() - t0:.1f}s"
    )
    return Artifacts(space, prof, router, lexicon, summary)
