"""The learned one-time router: per configuration, "does it preserve accuracy on r?".

Model: an MLP over [embedding(r), configuration] -> P(preserves). Its first layer is linear
in the concatenation, so it splits into E(r) @ W_x (once per request) plus one learned
vector per (stage, model size rank) summed over the configuration's stages: scoring a
configuration then costs O(hidden x stages), and spaces far larger than the training
labels' width stay tractable.

Prediction (`route`) follows the paper: visit configurations in cost order; accept one whose
probability reaches the threshold, and with it (near-monotonicity) every configuration
that uses models at least as large at every stage, without scoring them; stop when the
work budget (configurations scored) is spent or, if `early_stop` > 0, once that many have
been accepted. F(r) = the accepted configurations plus the largest one, always: whatever
the classifier says, the accuracy reference stays viable.

The threshold is chosen on out-of-fold routes of the training split (aragog.routing.artifacts):
the largest saving whose accuracy loss (requests where the chosen cheapest configuration
does not preserve accuracy) stays under `max_loss`.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
from aragog.routing.space import Space


@dataclasses.dataclass
class RouterModel:
    w_x: np.ndarray  # [dim, hidden]
    w_c: np.ndarray  # [stages, ranks, hidden]
    b1: np.ndarray  # [hidden]
    w2: np.ndarray  # [hidden]
    b2: float
    threshold: float
    meta: dict  # workflow, family, embedding id, space size, training figures

    # scoring ------------------------------------------------------------------------
    def config_features(self, space: Space, configs: np.ndarray) -> np.ndarray:
        """[len(configs), hidden]: the configurations' summed stage-rank vectors."""
        ranks = space.ranks[configs]
        out = np.zeros((len(configs), self.w_c.shape[2]), dtype=np.float32)
        for s in range(ranks.shape[1]):
            out += self.w_c[s, ranks[:, s]]
        return out

    def probabilities(self, embedding: np.ndarray, space: Space, configs: np.ndarray) -> np.ndarray:
        h = embedding @ self.w_x + self.b1
        z = np.maximum(h[None, :] + self.config_features(space, configs), 0.0) @ self.w2 + self.b2
        return 1.0 / (1.0 + np.exp(-z))

    def route(
        self,
        embedding: np.ndarray,
        space: Space,
        budget: int = 4096,
        early_stop: int = 0,
        chunk: int = 256,
        threshold: float | None = None,
    ) -> np.ndarray:
        """F(r): sorted configuration indices predicted to preserve accuracy."""
        tau = self.threshold if threshold is None else threshold
        accepted = np.zeros(space.size, dtype=bool)
        accepted[space.largest] = True
        order = space.cost_order
        h = (embedding @ self.w_x + self.b1).astype(np.float32)
        scored = found = 0
        pos = 0
        while pos < len(order) and scored < budget:
            batch = order[pos : pos + chunk]
            pos += len(batch)
            batch = batch[~accepted[batch]][: budget - scored]  # already accepted: skip
            if not len(batch):
                continue
            scored += len(batch)
            z = np.maximum(h[None, :] + self.config_features(space, batch), 0.0) @ self.w2 + self.b2
            passing = batch[z >= _logit(tau)]
            if not early_stop:  # no count to keep: add all their up-sets at once
                for i in range(0, len(passing), 32):
                    low = space.ranks[passing[i : i + 32]]
                    accepted |= (space.ranks[:, None, :] >= low[None]).all(2).any(1)
                continue
            for c in passing:
                if accepted[c]:
                    continue
                accepted |= (space.ranks >= space.ranks[c]).all(1)  # its up-set
                found += 1
                if found >= early_stop:
                    return np.flatnonzero(accepted)
        return np.flatnonzero(accepted)

    # persistence --------------------------------------------------------------------
    def save(self, path: str) -> None:
        np.savez_compressed(
            path,
            w_x=self.w_x,
            w_c=self.w_c,
            b1=self.b1,
            w2=self.w2,
            b2=np.float32(self.b2),
            threshold=np.float64(self.threshold),
            meta=np.array(json.dumps(self.meta)),
        )

    @classmethod
    def load(cls, path: str) -> RouterModel:
        z = np.load(path)
        return cls(
            z["w_x"],
            z["w_c"],
            z["b1"],
            z["w2"],
            float(z["b2"]),
            float(z["threshold"]),
            json.loads(str(z["meta"])),
        )


def _logit(p: float) -> float:
    p = min(max(p, 1e-9), 1 - 1e-9)
    return float(np.log(p / (1 - p)))


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
    aragog.routing.artifacts.WEIGHT_DECAYS)."""
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
        threshold=0.5,
        meta={},
    )


def cheapest_of(space: Space, configs: np.ndarray) -> int:
    return int(configs[np.argmin(space.flops[configs])])


THRESHOLDS = (0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.88, 0.9, 0.92, 0.94, 0.95, 0.96, 0.97, 0.975,
              0.98, 0.985, 0.99, 0.993, 0.995, 0.997, 0.998, 0.999, 0.9995, 0.9998, 0.9999)
"""Candidate thresholds, from permissive to strict."""


def chosen_configs(
    model: RouterModel, space: Space, embeddings: np.ndarray, budget: int = 4096
) -> np.ndarray:
    """[len(THRESHOLDS), requests]: the cheapest configuration of F(r) at each threshold."""
    out = np.empty((len(THRESHOLDS), len(embeddings)), dtype=np.int64)
    for t, tau in enumerate(THRESHOLDS):
        for i, e in enumerate(embeddings):
            out[t, i] = cheapest_of(space, model.route(e, space, budget=budget, threshold=tau))
    return out


def choose_threshold(
    space: Space,
    chosen: np.ndarray,
    preserving: np.ndarray,
    largest_correct: np.ndarray,
    max_loss: float,
) -> tuple[float, dict]:
    """The threshold with the largest GPU-second saving whose accuracy loss on these
    validation requests (`chosen` from `chosen_configs` by a model that did not train on
    them) is at most `max_loss`; the figures at that threshold.

    Accuracy is lost where the largest configuration is right and the chosen one does not
    answer as it does; where the largest is wrong, a different answer loses nothing."""
    largest_cost = space.gpu_seconds[space.largest]
    rows = np.arange(chosen.shape[1])
    best = (1.0, {"loss": 0.0, "saving": 0.0})  # 1.0 accepts nothing but the largest
    for t, tau in enumerate(THRESHOLDS):
        loss = float(np.mean(largest_correct & ~preserving[rows, chosen[t]]))
        saving = float(np.mean(largest_cost - space.gpu_seconds[chosen[t]]))
        if loss <= max_loss and saving > best[1]["saving"]:
            best = (tau, {"loss": loss, "saving": saving})
    return best
