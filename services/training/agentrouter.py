"""Training AgentRouter's tier classifier (aragog.policies.agentrouter) from a profile."""

from __future__ import annotations

import numpy as np
from aragog.policies.agentrouter import (
    FILENAME,
    TIERS,
    AgentRouterModel,
    stage_features,
    tier_of_rank,
)
from aragog.policies.routellm import REQUEST
from aragog.routing.artifacts import Profile
from aragog.routing.space import Space
from aragog.training.routellm import fit_clf, unit_configs

__all__ = ["FILENAME", "fit", "needed_tiers"]
FOLDS = 4
EPOCHS = 400
L2 = 1e-3


def needed_tiers(space: Space, prof: Profile, rows: np.ndarray) -> np.ndarray:
    """[rows, LLM stages]: the lowest tier whose model, every other stage on its largest,
    preserves the answer (the largest always does)."""
    top = space.ranks.max(0)
    out = np.zeros((len(rows), len(top)), dtype=np.int64)
    for s in range(len(top)):
        need = np.full(len(rows), int(top[s]))
        for q in range(int(top[s]) - 1, -1, -1):  # from the largest down: the lowest that holds
            want = top.copy()
            want[s] = q
            c = int(np.flatnonzero((space.ranks == want).all(1))[0])
            need = np.where(prof.preserving[rows, c], q, need)
        out[:, s] = [tier_of_rank(int(q), int(top[s]) + 1) for q in need]
    return out


def fit(space: Space, prof: Profile, x: np.ndarray, texts: list[str], train_rows: np.ndarray,
        seed: int = 0) -> AgentRouterModel:
    """The difficulty regression on all of `train_rows`; the tier classifier on their stages,
    with each request's difficulty predicted out of fold (as serving will see it)."""
    import torch

    weak_loses = (~prof.preserving[:, unit_configs(space)[REQUEST]]).astype(np.float32)
    diff_model = fit_clf(x[train_rows], weak_loses[train_rows], seed)
    difficulty = np.zeros(len(texts), dtype=np.float32)
    folds = np.array_split(np.random.default_rng(seed).permutation(train_rows), FOLDS)
    for k, fold in enumerate(folds):
        rest = np.concatenate([f for j, f in enumerate(folds) if j != k])
        m = fit_clf(x[rest], weak_loses[rest], seed)
        difficulty[fold] = 1 / (1 + np.exp(-(x[fold] @ m["w"] + m["b"])))
    wf = space.workflow
    feats = np.concatenate([stage_features(wf, texts[r], float(difficulty[r])) for r in train_rows])
    labels = needed_tiers(space, prof, train_rows).reshape(-1)
    mean, scale = feats.mean(0), feats.std(0) + 1e-6

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(seed)
        z = torch.from_numpy((feats - mean) / scale)
        y = torch.from_numpy(labels)
        lin = torch.nn.Linear(z.shape[1], len(TIERS))
        opt = torch.optim.Adam(lin.parameters(), lr=3e-2)
        for _ in range(EPOCHS):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(lin(z), y) + L2 * (lin.weight ** 2).sum()
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    return AgentRouterModel(diff_model["w"], float(diff_model["b"]), mean.astype(np.float32),
                            scale.astype(np.float32), lin.weight.detach().numpy().T.copy(),
                            lin.bias.detach().numpy().copy())
