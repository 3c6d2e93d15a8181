"""The learner of the one-time router: fits the MLP of aragog.routing.model and chooses its
risk weight (training side: torch is imported only here, and only when training)."""

from __future__ import annotations

import math

import numpy as np
from aragog.routing.model import RouterModel
from aragog.routing.space import Space


def train(
    space: Space,
    embeddings: np.ndarray,
    labels: np.ndarray,
    hidden: int = 64,
    epochs: int = 60,
    seed: int = 0,
    lr: float = 3e-3,
    weight_decay: float = 1e-4,
) -> RouterModel:
    """Fit the MLP on (request embedding, configuration) -> preserves, all pairs of the
    given requests and every configuration of the space (the weight decay is cross-fitted:
    aragog.training.build.WEIGHT_DECAYS)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops: extra threads only spin, worse on a busy machine
    try:
        return _train(torch, space, embeddings, labels, hidden, epochs, seed, lr, weight_decay)
    finally:
        torch.set_num_threads(threads)


def _train(torch, space, embeddings, labels, hidden, epochs, seed, lr, weight_decay) -> RouterModel:
    torch.manual_seed(seed)
    n_req, dim = embeddings.shape
    stages = space.ranks.shape[1]
    n_ranks = int(space.ranks.max()) + 1
    w_x = torch.nn.Linear(dim, hidden)
    w_c = torch.nn.Parameter(torch.randn(stages, n_ranks, hidden) * 0.1)
    w2 = torch.nn.Linear(hidden, 1)
    params = [*w_x.parameters(), w_c, *w2.parameters()]
    opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    x = torch.from_numpy(embeddings.astype(np.float32))
    y = torch.from_numpy(labels.astype(np.float32))
    ranks = torch.from_numpy(space.ranks.astype(np.int64))
    rng = np.random.default_rng(seed)
    batch = 64
    for _ in range(epochs):
        perm = rng.permutation(n_req)
        for start in range(0, n_req, batch):
            ix = torch.from_numpy(perm[start : start + batch])
            cfg = w_c[torch.arange(stages), ranks].sum(1)  # [n, hidden]
            h = torch.relu(w_x(x[ix])[:, None, :] + cfg[None, :, :])
            z = w2(h).squeeze(-1)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(z, y[ix])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return RouterModel(
        w_x=w_x.weight.detach().numpy().T.copy(),
        w_c=w_c.detach().numpy().copy(),
        b1=w_x.bias.detach().numpy().copy(),
        w2=w2.weight.detach().numpy()[0].copy(),
        b2=float(w2.bias.detach().numpy()[0]),
        risk_weight=math.inf,
        meta={},
    )


RISK_WEIGHTS = tuple(float(w) for w in np.geomspace(0.25, 4000.0, 57))
"""Candidate risk weights, from permissive to strict: a lost answer is worth this many times
the largest configuration's cost (steps of ~19%)."""


def chosen_configs(
    model: RouterModel, space: Space, embeddings: np.ndarray, budget: int = 4096
) -> np.ndarray:
    """[len(RISK_WEIGHTS), requests]: the cheapest configuration of F(r) at each risk weight.

    That is `route`'s best trade-off (nothing in F(r) is cheaper: a cheaper member at least
    as safe would have scored better), so each request is scored once, over the prefix of
    the cost order `route` may score, and every weight picks from the same risks: the
    weight fit routes each training request 57 times, and this is what makes that cheap.
    tests/unit/test_routing.py checks it against `route`."""
    lams = np.asarray(RISK_WEIGHTS)[:, None]
    prefix = space.cost_order[:budget]
    prefix = prefix[space.relative_cost[prefix] < 1.0]  # the largest scores 1 unscored
    rel = space.relative_cost[prefix]
    features = model.config_features(space, prefix)
    out = np.full((len(lams), len(embeddings)), space.largest, dtype=np.int64)
    if not len(prefix):
        return out
    rows = np.arange(len(lams))
    for i, e in enumerate(embeddings):
        score = rel + lams * model._risk(model._hidden(e), features)  # [weights, prefix]
        best = score.argmin(1)
        out[:, i] = np.where(score[rows, best] < 1.0, prefix[best], space.largest)
    return out


def best_within_loss(
    space: Space,
    chosen: np.ndarray,
    preserving: np.ndarray,
    largest_correct: np.ndarray,
    max_loss: float,
) -> tuple[int, dict]:
    """Of the rows of `chosen` ([settings, requests]: the configuration each setting runs per
    validation request), the one with the largest GPU-second saving whose accuracy loss is
    at most `max_loss`, and its figures; -1 if none saves anything within it.

    Accuracy is lost where the largest is right and the chosen configuration does not
    answer as it does; where the largest is wrong, a different answer loses nothing."""
    largest_cost = space.gpu_seconds[space.largest]
    rows = np.arange(chosen.shape[1])
    best = (-1, {"loss": 0.0, "saving": 0.0})
    for t in range(len(chosen)):
        loss = float(np.mean(largest_correct & ~preserving[rows, chosen[t]]))
        saving = float(np.mean(largest_cost - space.gpu_seconds[chosen[t]]))
        if loss <= max_loss and saving > best[1]["saving"]:
            best = (t, {"loss": loss, "saving": saving})
    return best


def choose_risk_weight(
    space: Space,
    chosen: np.ndarray,
    preserving: np.ndarray,
    largest_correct: np.ndarray,
    max_loss: float,
) -> tuple[float, dict]:
    """The risk weight with the largest saving within `max_loss` on these validation requests
    (`chosen` from `chosen_configs` by a model that did not train on them), and its figures
    (inf if none qualifies: F(r) is then the largest configuration alone)."""
    t, figures = best_within_loss(space, chosen, preserving, largest_correct, max_loss)
    return (RISK_WEIGHTS[t] if t >= 0 else math.inf), figures
