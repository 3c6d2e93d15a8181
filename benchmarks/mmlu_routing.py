"""Strong/weak routing on REAL outcomes: RouteLLM's GPT-4 and Mixtral results on MMLU.

The outcomes are RouteLLM's measurements of the real models on MMLU's 14,042 prompts
(shipped as aragog/emulation/data/routellm-mmlu.csv.gz); nothing here is emulated but the
pool's latency profile, which only orders the two configurations. The metrics are
RouteLLM's (aragog.training.metrics): APGR, CPT(50%), CPT(80%), and the share of GPT-4 calls
needed for 95% of GPT-4's accuracy.

    python benchmarks/mmlu_routing.py [--splits 1] [--out reports/mmlu_routing.json]

Split: 70% training, 30% held out, stratified by subject, seeded (split s uses seed s;
`--splits N` repeats everything on splits 0..N-1 and reports mean and sd). Every setting is
chosen on the out-of-fold scores of 4 folds of the training split, never on the held-out
split. Routers, each a score per prompt (higher: send to GPT-4):

- random: uniform scores (mean over 20 seeds); oracle: prompts only GPT-4 gets right first,
  those only Mixtral gets right last.
- subject prior: the subject's training-split rate of "Mixtral wrong and GPT-4 right";
  subject gap prior: that rate minus the rate of "Mixtral right and GPT-4 wrong".
- MLP routers that read the prompt, built with the project's learner
  (aragog.training.learn.train) on a one-stage workflow's 2-configuration space on the
  mmlu-recorded pool: input all-MiniLM-L6-v2 (aragog.routing.embedding.Embedder, ONNX,
  first 64 tokens) and the lexical embedding (aragog.routing.lexical.Lexicon, fitted on the
  training split), optionally with the subject one-hot next to them, and optionally a
  second MiniLM embedding of the answer options alone (the lines from `A.` to before
  `Answer:`), which the first embedding's 64 tokens mostly cut off: the serving router
  embeds a request once, so this one would cost it a second embedding. The weak
  configuration's label is "preserves accuracy" (Mixtral right or GPT-4 wrong); the score
  is P(it does not preserve). Variant "gain": a second MLP learns the reverse event
  (Mixtral right and GPT-4 wrong) and the score is the difference, the expected gain of
  calling GPT-4, which is what APGR rewards. Each MLP's weight decay is chosen out of fold;
  the held-out scores come from the average of the 4 fold MLPs (as aragog-routing ships).
- chosen: the best out-of-fold APGR over the MLP variants, each optionally blended
  linearly with its subject prior (shrinkage towards the subject's rate).
- bound: not a router: the subject gap prior computed from the held-out prompts' own
  outcomes, the best any score that only knows the subject can do.

MiniLM embeddings (prompts and options, ~3-5 min each) and lexicons (~4-7 min per split)
are cached under the artifacts cache (ARAGOG_ARTIFACTS_DIR, default ~/.cache/aragog/artifacts);
the 60 MLP fits take 8-20 min per split on 2 busy cores. Results: benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time

import numpy as np
from aragog.common.pool import load_pool
from aragog.common.settings import RouterSettings
from aragog.common.workflow import parse_workflow
from aragog.emulation import recorded
from aragog.routing import artifacts
from aragog.routing.embedding import Embedder
from aragog.routing.lexical import Lexicon
from aragog.routing.model import RouterModel
from aragog.routing.space import Space, build
from aragog.training import build as training_build
from aragog.training import metrics
from aragog.training.learn import train

TRAIN_SHARE = 0.7
FOLDS = 4
RANDOM_SEEDS = 20
WEIGHT_DECAYS = (*training_build.WEIGHT_DECAYS, 1e-2)
"""aragog-routing's candidates and a stronger one (with ~7,400 fold-training prompts)."""
BLENDS = (1.0, 0.75, 0.5, 0.25)
"""Weight of the MLP's score against its subject prior's (1: the MLP alone)."""
MIN_DF = 20
"""The lexicon keeps grams in at least this many training prompts. Its SVD runs on a dense
tf-idf matrix: the project's default (2) keeps ~77k grams of MMLU's ~9.8k training prompts
(6 GB, hours); 20 keeps ~5.5k (~4 min)."""
WORKFLOW = """\
id: mmlu
description: Answer one MMLU question (RouteLLM's prompt ends with "Answer:").
stages:
  - name: answer
    kind: llm
    prompt: "{input}"
    output_tokens: 8
"""


def options(prompt: str) -> str:
    """The answer options of an MMLU prompt: from its last line starting `A.` to before the
    closing `Answer:` line (options may span several lines)."""
    lines = prompt.split("\n")
    starts = [i for i, line in enumerate(lines[:-1]) if line.startswith("A.")]
    return "\n".join(lines[starts[-1] if starts else max(0, len(lines) - 5) : -1])


class Data:
    """The recorded prompts and both models' real outcomes."""

    def __init__(self) -> None:
        recs = recorded.records()
        self.texts = [r.prompt for r in recs]
        self.strong = np.array([r.strong_correct for r in recs])
        self.weak = np.array([r.weak_correct for r in recs])
        self.subjects = sorted({r.subject for r in recs})
        self.subject = np.array([self.subjects.index(r.subject) for r in recs])
        self.options = [options(r.prompt) for r in recs]
        self.gain = self.strong & ~self.weak  # only GPT-4 right: calling it gains
        self.loss = self.weak & ~self.strong  # only Mixtral right: calling GPT-4 loses

    def split(self, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Training and held-out rows: 70/30 within each subject."""
        rng = np.random.default_rng(seed)
        train_mask = np.zeros(len(self.texts), dtype=bool)
        for s in range(len(self.subjects)):
            rows = rng.permutation(np.flatnonzero(self.subject == s))
            train_mask[rows[: int(round(TRAIN_SHARE * len(rows)))]] = True
        return np.flatnonzero(train_mask), np.flatnonzero(~train_mask)

    def summary(self, rows: np.ndarray, score: np.ndarray) -> dict[str, float]:
        c = metrics.curve(self.strong[rows], self.weak[rows], score)
        return {"apgr": metrics.apgr(c), "cpt50": metrics.cpt(c, 0.5),
                "cpt80": metrics.cpt(c, 0.8), "share95": metrics.share_for(c, 0.95 * c.strong)}


def _cached(path: str, make, load, save):
    if os.path.exists(path):
        return load(path)
    value = make()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    save(tmp, value)
    os.replace(tmp, path)
    return value


def _digest(texts: list[str], *extra) -> str:
    return hashlib.sha256("\0".join([*texts, *map(str, extra)]).encode()).hexdigest()[:12]


def lexicon(root: str, texts: list[str]) -> Lexicon:
    """The lexical embedding fitted on `texts` (a split's training prompts), cached."""
    path = os.path.join(root, "lexicons", f"mmlu-recorded-{_digest(texts, MIN_DF)}.npz")

    def save(p: str, lex: Lexicon) -> None:
        with open(p, "wb") as f:
            lex.save(f)

    return _cached(path, lambda: Lexicon.fit(texts, min_df=MIN_DF), Lexicon.load, save)


def one_stage_space() -> Space:
    pool = load_pool("mmlu-recorded")
    return build(parse_workflow(WORKFLOW, pool.names), pool)


class Learner:
    """The project's MLP on the 2-configuration space, trained per fold."""

    def __init__(self, space: Space, x: np.ndarray, weak_preserves: np.ndarray):
        self.space, self.x = space, x
        self.weak_cfg = space.cheapest
        self.labels = np.ones((len(x), space.size), dtype=bool)  # the largest preserves
        self.labels[:, self.weak_cfg] = weak_preserves

    def score(self, model: RouterModel, rows: np.ndarray) -> np.ndarray:
        """P(the weak configuration does not preserve accuracy) per row."""
        weak = np.array([self.weak_cfg])
        return np.array([1.0 - model.probabilities(self.x[i], self.space, weak)[0] for i in rows])

    def fit(self, folds: list[np.ndarray], test: np.ndarray, decay: float, seed: int
            ) -> tuple[np.ndarray, np.ndarray]:
        """Out-of-fold scores (on every training row) and the held-out scores of the fold
        models' average."""
        oof = np.zeros(len(self.x))
        models = []
        for k, fold in enumerate(folds):
            fit = np.concatenate([f for j, f in enumerate(folds) if j != k])
            models.append(train(self.space, self.x[fit], self.labels[fit],
                                weight_decay=decay, seed=seed))
            oof[fold] = self.score(models[-1], fold)
        return oof, self.score(RouterModel.average(models), test)


def subject_rate(data: Data, event: np.ndarray, fit: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Each row's subject's rate of `event` over the rows `fit`."""
    n = len(data.subjects)
    counts = np.bincount(data.subject[fit], minlength=n)
    hits = np.bincount(data.subject[fit], weights=event[fit], minlength=n)
    return (hits / np.maximum(counts, 1))[data.subject[rows]]


def run_split(data: Data, x_text: np.ndarray, x_options: np.ndarray, root: str, seed: int,
              say) -> dict:
    t0 = time.monotonic()
    train_rows, test = data.split(seed)
    folds = np.array_split(np.random.default_rng(seed).permutation(train_rows), FOLDS)
    val = np.concatenate(folds)
    lex = lexicon(root, [data.texts[i] for i in train_rows])
    say(f"split {seed}: lexicon ({len(lex.vocabulary)} grams) in {time.monotonic() - t0:.0f} s")
    text = np.hstack([x_text, lex.embed(data.texts)])
    onehot = np.eye(len(data.subjects), dtype=np.float32)[data.subject]
    space = one_stage_space()
    rows: dict[str, dict] = {}

    def add(name: str, val_score: np.ndarray | None, test_score: np.ndarray, **settings):
        rows[name] = {**data.summary(test, test_score), "settings": settings}
        if val_score is not None:
            rows[name]["val_apgr"] = data.summary(val, val_score[val])["apgr"]

    rng = np.random.default_rng(seed)
    randoms = [data.summary(test, rng.random(len(test))) for _ in range(RANDOM_SEEDS)]
    rows["random"] = {k: float(np.mean([r[k] for r in randoms])) for k in randoms[0]}
    rows["random"]["settings"] = {"seeds": RANDOM_SEEDS}
    add("oracle", None, data.gain[test].astype(float) - data.loss[test])

    priors = {}  # event -> (out-of-fold on training rows, held-out)
    for name, event in (("gain", data.gain), ("loss", data.loss)):
        oof = np.zeros(len(data.texts))
        for k, fold in enumerate(folds):
            fit = np.concatenate([f for j, f in enumerate(folds) if j != k])
            oof[fold] = subject_rate(data, event, fit, fold)
        priors[name] = (oof, subject_rate(data, event, train_rows, test))
    gap_prior = (priors["gain"][0] - priors["loss"][0], priors["gain"][1] - priors["loss"][1])
    add("subject prior", *priors["gain"])
    add("subject gap prior", *gap_prior)
    # not a router: what a subject-level score could do at best (held-out rates known)
    add("bound: subject gap, held-out rates", None,
        subject_rate(data, data.gain, test, test) - subject_rate(data, data.loss, test, test))

    # (features, head, decay) -> (out-of-fold scores, held-out scores)
    heads = {"gain": ~data.gain, "loss": ~data.loss}  # label: the weak configuration preserves
    fitted: dict[tuple[str, str, float], tuple[np.ndarray, np.ndarray]] = {}
    for feats, x in (("text", text), ("text+subject", np.hstack([text, onehot])),
                     ("text+options+subject", np.hstack([text, x_options, onehot]))):
        for head in ("gain",) if feats == "text" else ("gain", "loss"):
            learner = Learner(space, x, heads[head])
            for decay in WEIGHT_DECAYS:
                t1 = time.monotonic()
                fitted[feats, head, decay] = learner.fit(folds, test, decay, seed)
                say(f"split {seed}: MLP {feats} / {head} / decay {decay:g} in "
                    f"{time.monotonic() - t1:.0f} s")

    def best_decay(feats: str, gain_only: bool) -> tuple[float, np.ndarray, np.ndarray]:
        best = None
        for decay in WEIGHT_DECAYS:
            oof, held = fitted[feats, "gain", decay]
            if not gain_only:
                oof, held = oof - fitted[feats, "loss", decay][0], held - fitted[feats, "loss",
                                                                               decay][1]
            a = data.summary(val, oof[val])["apgr"]
            if best is None or a > best[0]:
                best = (a, decay, oof, held)
        assert best is not None
        return best[1:]

    candidates = {}
    for name, feats, gain_only, prior in (
            ("MLP, text", "text", True, priors["gain"]),
            ("MLP, text + subject", "text+subject", True, priors["gain"]),
            ("MLP, text + subject, gain", "text+subject", False, gap_prior),
            ("MLP, text + options + subject, gain", "text+options+subject", False, gap_prior)):
        decay, oof, held = best_decay(feats, gain_only)
        add(name, oof, held, weight_decay=decay)
        for w in BLENDS:
            candidates[name, w] = (w * oof + (1 - w) * prior[0], w * held + (1 - w) * prior[1],
                                   decay)
    (name, w), (oof, held, decay) = max(
        candidates.items(), key=lambda kv: data.summary(val, kv[1][0][val])["apgr"])
    add("chosen", oof, held, router=name, weight_decay=decay, mlp_weight=w)
    say(f"split {seed}: done in {time.monotonic() - t0:.0f} s")
    return {"seed": seed, "train": len(train_rows), "held_out": len(test),
            "weak": float(data.weak[test].mean()), "strong": float(data.strong[test].mean()),
            "lexicon_grams": len(lex.vocabulary), "rows": rows}


def table(results: list[dict]) -> str:
    names = list(results[0]["rows"])
    many = len(results) > 1

    def cell(name: str, key: str, pct: bool) -> str:
        v = np.array([r["rows"][name].get(key, np.nan) for r in results], dtype=float)
        if np.isnan(v).all():
            return ""
        f = (lambda z: f"{100 * z:.1f}%") if pct else (lambda z: f"{z:.3f}")
        return f"{f(v.mean())} ± {f(v.std(ddof=1)).rstrip('%')}" if many else f(v[0])

    head = ("| router | APGR | CPT(50%) | CPT(80%) | GPT-4 calls for 95% of GPT-4 | "
            "validation APGR | settings |")
    lines = [head, "|---|---|---|---|---|---|---|"]
    for name in names:
        settings = results[0]["rows"][name]["settings"] if not many else (
            "; ".join(json.dumps(r["rows"][name]["settings"]) for r in results)
            if name == "chosen" else "")
        if not many:
            settings = ", ".join(f"{k} {v}" for k, v in settings.items())
        lines.append(f"| {name} | {cell(name, 'apgr', False)} | {cell(name, 'cpt50', True)} | "
                     f"{cell(name, 'cpt80', True)} | {cell(name, 'share95', True)} | "
                     f"{cell(name, 'val_apgr', False)} | {settings} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--splits", type=int, default=1, help="splits 0..N-1 (default 1)")
    p.add_argument("--out", default="reports/mmlu_routing.json", help="JSON report")
    args = p.parse_args()
    settings = RouterSettings.from_env()
    root = settings.artifacts_dir or artifacts.default_dir()

    def say(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    data = Data()
    embedder = Embedder.from_settings(settings)
    t0 = time.monotonic()
    x_text = training_build.embeddings(root, embedder, data.texts)  # cached
    x_options = training_build.embeddings(root, embedder, data.options)
    say(f"MiniLM embeddings of {len(data.texts)} prompts and their options in "
        f"{time.monotonic() - t0:.0f} s")
    results = [run_split(data, x_text, x_options, root, s, say) for s in range(args.splits)]
    md = table(results)
    print(md)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    report = {"date": time.strftime("%Y-%m-%d"), "commit": commit, "embedder": embedder.id,
              "prompts": len(data.texts), "train_share": TRAIN_SHARE, "folds": FOLDS,
              "weight_decays": WEIGHT_DECAYS, "blends": BLENDS, "lexicon_min_df": MIN_DF,
              "splits": results, "table": md}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1)
    say(f"wrote {args.out}")


if __name__ == "__main__":
    main()
