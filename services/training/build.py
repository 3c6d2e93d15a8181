"""Build routing artifacts from a profile: the per-workflow configuration, the lexicon, the
router (trained by aragog.training.learn) and the manifest (aragog.routing.artifacts).

Two sources of a profile, one build:
- a user's dataset profiled through Triton (`aragog-routing profile --dataset ...`);
- a shipped GENERATED benchmark profiled in-process (`build_benchmark`: the accelerator).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import os
import time
from collections.abc import Callable, Sequence

import numpy as np
from aragog.common.pool import PoolSpec
from aragog.common.workflow import WorkflowDef
from aragog.routing import artifacts, intent, lexical
from aragog.routing.artifacts import Artifacts, Profile, router_input
from aragog.routing.embedding import Embedder
from aragog.routing.model import RouterModel
from aragog.routing.space import Space
from aragog.routing.space import build as build_space
from aragog.training import agentrouter, dataset, flowcompile, learn, routellm
from aragog.training.dataset import Record
from aragog.training.graders import Grader

MAX_LOSS = 0.005
"""Accuracy the risk weight may give up on the validation requests (the target allows 1 point;
the rest is margin: choosing the best of many weights on the same requests is optimistic,
and held-out losses ran up to twice the validation loss). The per-workflow configuration is
held to the same budget."""
WEIGHT_DECAYS = (1e-4, 3e-3)
"""The MLP's weight decay is picked per workflow from these by out-of-fold saving: with ~1,000
training requests for 384 embedding dimensions, the strong one made the chain and
decomposition routers less overconfident (10-21 points more of the oracle's saving at the
same loss), while voting, whose labels are mostly luck, did better with the light one."""
FOLDS = 4
"""The risk weight is fitted on out-of-fold routes over the whole training split (each fold
routed by a router trained on the others): four times the validation requests of a single
held-back quarter, so a loss of half a point is measured on ~7 requests, not ~2."""


def training_digest() -> str:
    """Changes whenever the routers' training settings would (Aragog's and RouteLLM's)."""
    served = "fold-average"  # how train_router makes the router it ships
    return hashlib.sha256(repr((
        MAX_LOSS, FOLDS, WEIGHT_DECAYS, learn.RISK_WEIGHTS, inspect.signature(learn.train),
        served, ("lexicon", lexical.DIM, lexical.MIN_DF),
        ("routellm", routellm.MF_DIM, routellm.EPOCHS, routellm.CLF_L2), "flowcompile proxy 1",
        ("agentrouter", agentrouter.FOLDS, agentrouter.EPOCHS, agentrouter.L2),
        ("intent", intent.EXAMPLES, intent.K, intent.ACCEPT),
    )).encode()).hexdigest()[:16]


def manifest(wf: WorkflowDef, pool: PoolSpec, records: Sequence[Record], grader: Grader,
             embedder_id: str, source: dict) -> dict:
    """What the artifacts are built from (the router checks the first entries at load)."""
    return {
        "format": artifacts.FORMAT,
        "workflow": artifacts.workflow_digest(wf),
        "pool": artifacts.pool_digest(pool, wf),
        "dataset": dataset.digest(list(records)),
        "grader": grader.spec,
        "embedder": embedder_id,
        "training": training_digest(),
        "source": source,
    }


def embeddings(root: str, embedder: Embedder, texts: list[str]) -> np.ndarray:
    """Embeddings of `texts`, cached on disk per embedder and text list."""
    key = hashlib.sha256("\0".join(texts).encode()).hexdigest()[:16]
    path = os.path.join(root, "embeddings", f"{embedder.id}-{key}.npy")
    if os.path.exists(path):
        e = np.load(path)
        if e.shape[0] == len(texts):
            return e
    e = embedder.encode(texts)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp.npy"  # builders of two families may share the cache
    np.save(tmp, e)
    os.replace(tmp, path)
    return e


def per_workflow_config(space: Space, prof: Profile, rows: np.ndarray) -> tuple[int, dict]:
    """The cheapest configuration whose accuracy loss against the largest over `rows` (requests
    where the largest is right and it does not preserve) is within MAX_LOSS: the baseline
    gets the router's accuracy budget."""
    correct = prof.largest_correct[rows]
    order = space.cost_order
    for start in range(0, len(order), 4096):  # columns in slices: spaces may be large
        cols = order[start : start + 4096]
        loss = (correct[:, None] & ~prof.preserving[np.ix_(rows, cols)]).mean(0)
        ok = np.flatnonzero(loss <= MAX_LOSS)
        if len(ok):
            c = int(cols[ok[0]])
            return c, {"loss": float(loss[ok[0]]), "largest_accuracy": float(correct.mean())}
    return space.largest, {"loss": 0.0, "largest_accuracy": float(correct.mean())}


def train_router(space: Space, x: np.ndarray, prof: Profile, train_rows: np.ndarray,
                 seed: int = 0, progress: bool = False) -> tuple[RouterModel, dict]:
    """The router for requests `train_rows` (features `x`): FOLDS routers, each trained on
    all folds but one, their weight decay and risk weight cross-fitted on the routes each
    gives its own held-back fold; it serves their average, with the out-of-fold figures.

    Why the average and not one router retrained on every fold: the weight is fitted to
    the fold routers' risks, and a router trained on a third more requests is more
    confident than they were. Over three training seeds, a retrained router's held-out
    saving moved by up to 14 points and its loss reached 2.17 points; the average's moved
    by up to 7, its loss at most 1.17, for about the same mean saving (benchmarks/README.md,
    "Routing rules"). `progress`: a bar with the time left over the fits, on stderr."""
    from tqdm import tqdm

    bar = tqdm(total=FOLDS * len(WEIGHT_DECAYS), unit="fit", disable=not progress,
               desc=f"train {space.workflow.id}")
    folds = np.array_split(np.random.default_rng(0).permutation(train_rows), FOLDS)
    val = np.concatenate(folds)
    best: tuple[list, float, dict] | None = None  # fold routers, risk weight, figures
    for decay in WEIGHT_DECAYS:
        routers, chosen = [], []
        for k, fold in enumerate(folds):
            fit = np.concatenate([f for j, f in enumerate(folds) if j != k])
            routers.append(learn.train(space, x[fit], prof.preserving[fit],
                                       weight_decay=decay, seed=seed))
            bar.update()
            chosen.append(learn.chosen_configs(routers[-1], space, x[fold]))
        lam, figures = learn.choose_risk_weight(
            space, np.concatenate(chosen, axis=1), prof.preserving[val],
            prof.largest_correct[val], MAX_LOSS,
        )
        if best is None or figures["saving"] > best[2]["saving"]:
            best = (routers, lam, {**figures, "weight_decay": decay})
    bar.close()
    assert best is not None
    routers, lam, figures = best
    router = RouterModel.average(routers)
    router.risk_weight = lam
    return router, figures


def build(root: str, space: Space, records: Sequence[Record], prof: Profile, grader: Grader,
          embedder: Embedder, source: dict, say: Callable[[str], None] = print,
          progress: bool = False) -> Artifacts:
    """Train the router on the profile's train split and write the artifacts atomically
    (each file replaced whole; the summary, which the router reads first, last).
    `progress`: a bar with the time left over the router's fits (a terminal's user)."""
    wf, pool = space.workflow, space.pool
    if [r.id for r in records] != prof.item_ids:
        raise ValueError("the profile was made on other requests than these records")
    t0 = time.monotonic()
    train_rows = prof.rows("train")
    pw, pw_figures = per_workflow_config(space, prof, train_rows)
    texts = [r.input for r in records]
    lexicon = lexical.Lexicon.fit([texts[i] for i in train_rows])
    e = embeddings(root, embedder, texts)
    x = router_input(e, lexicon, texts)
    say(f"{pool.family}/{wf.id}: training the router on {len(train_rows)} requests "
        f"({FOLDS} folds x {len(WEIGHT_DECAYS)} weight decays)")
    router, val_figures = train_router(space, x, prof, train_rows, progress=progress)
    published = routellm.fit(space, prof, x, train_rows)
    front = flowcompile.compile_front(space, prof, train_rows)
    tiers = agentrouter.fit(space, prof, x, texts, train_rows)
    intents = intent.fit(e[train_rows])  # what MoMA's front door knows the workflow by
    lam = router.risk_weight
    summary = {
        "workflow": wf.id,
        "family": pool.family,
        "manifest": manifest(wf, pool, records, grader, embedder.id, source),
        "embedder": embedder.id,
        "lexicon": {"dim": lexicon.dim, "grams": len(lexicon.vocabulary)},
        "configurations": space.size,
        "per_workflow_config": pw,
        "per_workflow_models": space.models(pw),
        **{f"per_workflow_{k}": v for k, v in pw_figures.items()},
        "risk_weight": lam if math.isfinite(lam) else None,
        "flowcompile": {"pareto_set": len(front.configs), "measured": front.measured},
        "intent": {"examples": len(intents.vectors), "threshold": intents.threshold},
        "validation": val_figures,
        "profiling": {
            "requests": len(train_rows),
            "executions_per_request": float(prof.executions[train_rows].mean()),
            "exhaustive_per_request": prof.exhaustive_executions,
        },
    }
    router.meta = {k: summary[k] for k in ("workflow", "family", "embedder", "configurations")}
    d = artifacts.path(root, pool.family, wf.id)
    os.makedirs(d, exist_ok=True)
    summary_path = os.path.join(d, "summary.json")
    if os.path.exists(summary_path):
        os.remove(summary_path)  # a half-replaced set must not load as the old one
    prof.save(os.path.join(d, "profile.npz"))
    for name, obj in (("router.npz", router), ("lexicon.npz", lexicon),
                      (routellm.FILENAME, published), (flowcompile.FILENAME, front),
                      (agentrouter.FILENAME, tiers), (intent.FILENAME, intents)):
        tmp = os.path.join(d, f".{os.getpid()}.{name}")
        obj.save(tmp)
        os.replace(tmp, os.path.join(d, name))
    tmp = f"{summary_path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=1)
    os.replace(tmp, summary_path)
    say(f"{pool.family}/{wf.id}: per-workflow {space.models(pw)}, risk weight {lam:.3g}, "
        f"validation {val_figures}, trained in {time.monotonic() - t0:.1f}s; artifacts in {d}")
    return Artifacts(space, prof, router, lexicon, summary, d)


def benchmark_source(wid: str, family: str) -> dict:
    """What a generated benchmark's profile depends on beyond its requests: the EMULATED
    answer function's spec and calibration."""
    from aragog.emulation import calibration
    from aragog.emulation.specs import SPECS

    emulation = hashlib.sha256(
        (repr(SPECS[wid]) + json.dumps(calibration.fit(wid, family))).encode()).hexdigest()[:16]
    return {"kind": "generated benchmark (EMULATED answers, profiled in-process)",
            "emulation": emulation}


BENCHMARK_GRADER = "agree"
"""The generated benchmarks are graded as the paper defines preserving accuracy."""


def build_benchmark(root: str, family: str, wid: str, embedder: Embedder,
                    say: Callable[[str], None] = print, progress: bool = False) -> Artifacts:
    """Profile a shipped GENERATED benchmark in-process (the accelerator) and build."""
    from aragog import workflows
    from aragog.common.pool import load_pool
    from aragog.training import graders, profiler

    pool = load_pool(family)
    space = build_space(workflows.load(wid, pool.names), pool)
    records = dataset.from_benchmark(wid)
    grader = graders.make(BENCHMARK_GRADER)
    t0 = time.monotonic()
    prof = profiler.profile(space, records, grader)
    train_rows = prof.rows("train")
    say(f"{family}/{wid}: profiled {len(records)} requests in-process in "
        f"{time.monotonic() - t0:.1f}s, {prof.executions[train_rows].mean():.1f} stage "
        f"executions per request (exhaustive {prof.exhaustive_executions})")
    return build(root, space, records, prof, grader, embedder,
                 benchmark_source(wid, family), say, progress)
