"""RouteLLM's metrics for the router the user path built on the recorded MMLU pool.

    python benchmarks/mmlu_user_path.py --profile DIR [--dir ARTIFACTS]

After `aragog-routing profile` (a one-stage workflow over the mmlu-recorded pool's two
models, grader `choice`, the whole recorded dataset, through Triton) and `aragog-routing
build --profile DIR`: on the profile's held-out split, the served router's score (its
P(the weak configuration does not preserve the answer)) against RouteLLM's APGR and
CPT(50%/80%), next to a random router, the oracle and a per-subject prior fitted on the
train split. Outcomes are REAL (RouteLLM's release; read back through the recorded engines);
only latency is emulated. README walkthrough: "Real outcomes: MMLU".
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np
from aragog.common.pool import PoolSpec
from aragog.common.settings import RouterSettings
from aragog.common.workflow import parse_workflow
from aragog.emulation import recorded
from aragog.routing import artifacts
from aragog.routing.embedding import Embedder
from aragog.training import dataset, metrics


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", required=True)
    ap.add_argument("--dir", default="")
    args = ap.parse_args()
    settings = RouterSettings.from_env()
    root = args.dir or settings.artifacts_dir or artifacts.default_dir()
    with open(os.path.join(args.profile, "profile.json"), encoding="utf-8") as f:
        meta = json.load(f)
    pool = PoolSpec.from_mapping(meta["pool"])
    wf = parse_workflow(meta["workflow_yaml"], pool.names)
    art, why = artifacts.load(root, pool, wf)
    if art is None:
        raise SystemExit(why)
    space = art.space
    if len(wf.llm_stages) != 1 or space.size != 2:
        raise SystemExit("this benchmark reads a one-stage workflow over two models")
    strong_model = space.models(space.largest)[0]
    weak = 1 - space.largest
    weak_model = space.models(weak)[0]
    records = {r.id: r for r in dataset.load(meta["dataset"], meta["split_seed"],
                                             meta["train_share"])}
    prof = art.profile
    test, train = prof.rows("test"), prof.rows("train")

    def outcome(row: int, model: str) -> bool:
        rec = recorded.find(records[prof.item_ids[row]].input)
        assert rec is not None, prof.item_ids[row]
        return rec.correct(model)

    strong = np.array([outcome(i, strong_model) for i in test])
    weak_ok = np.array([outcome(i, weak_model) for i in test])
    embedder = Embedder.from_settings(settings)
    texts = [records[prof.item_ids[i]].input for i in test]
    x = art.features(texts, embedder)
    hidden = [art.router._hidden(e) for e in x]
    feats = art.router.config_features(space, np.array([weak]))
    router_score = np.array([art.router._risk(h, feats)[0] for h in hidden])

    def subject(row: int) -> str:
        return recorded.find(records[prof.item_ids[row]].input).subject

    gain: dict[str, list[bool]] = {}
    for i in train:
        gain.setdefault(subject(i), []).append(outcome(i, strong_model)
                                               and not outcome(i, weak_model))
    prior = np.array([np.mean(gain.get(subject(i), [0.0])) for i in test])
    rng = np.random.default_rng(0)
    rows = {
        "router (the user path's artifacts)": metrics.summary(strong, weak_ok, router_score),
        "per-subject prior (train split)": metrics.summary(strong, weak_ok, prior),
        "random (mean of 20)": {k: float(np.mean([metrics.summary(
            strong, weak_ok, rng.random(len(test)))[k] for _ in range(20)]))
            for k in ("apgr", "cpt50", "cpt80")},
        "oracle": metrics.summary(strong, weak_ok, (strong & ~weak_ok).astype(float)),
    }
    print(f"held-out prompts: {len(test)} (train {len(train)}); strong {strong.mean():.3f}, "
          f"weak {weak_ok.mean():.3f}")
    print("| router | APGR | CPT(50%) | CPT(80%) |\n|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['apgr']:.3f} | {r['cpt50']:.1%} | {r['cpt80']:.1%} |")


if __name__ == "__main__":
    main()
