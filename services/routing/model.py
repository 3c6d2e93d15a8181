"""The learned one-time router: per configuration, "does it preserve accuracy on r?".

Model: an MLP over [embedding(r), configuration] -> P(preserves), where embedding(r) is the
text's MiniLM embedding followed by its lexical one (aragog.routing.artifacts.router_input,
aragog.routing.lexical). Its first layer is linear in the concatenation, so it splits into
E(r) @ W_x (once per request) plus one learned vector per (stage, model size rank) summed
over the configuration's stages: scoring a configuration then costs O(hidden x stages), and
spaces far larger than the training labels' width stay tractable.

Prediction (`route`) follows the paper's search, with two changes to what it accepts: score
the configurations in cost order (up to a work budget), and take as the best the one that
minimises

    relative cost + risk_weight x P(it does not preserve)

(relative cost: GPU-seconds over the largest configuration's; the largest itself scores 1, as
it preserves by definition). F(r) is then the best and every scored configuration at least as
likely to preserve, whatever it costs, with (near-monotonicity) every configuration that uses
models at least as large at every stage of one of them, without scoring those; the largest is
always in it. So the cheapest of F(r) is the best trade-off, and any other member the
scheduler takes is no riskier (by the MLP for the scored members, by near-monotonicity for
the up-sets): which of them is worth its cost under the load of the moment is the
scheduler's call, not the router's (an idle large model costs nothing). Until 2026-11-30
F(r) also left out the safe configurations dearer than the best score, and the router
stopped scoring there; its recall against the profiled F(r) was 0.05-0.91.

Why not the paper's single probability threshold: it prices all savings alike, so a strict
threshold forgoes the large savings of the cheapest configurations to avoid small risks,
and a loose one takes large risks for small savings. Weighing risk against saving spends the
same accuracy budget where it buys the most (out-of-fold and held out, on both pools:
benchmarks/README.md).

The risk weight is chosen on out-of-fold routes of the training split
(aragog.training.build): the largest saving whose accuracy loss (requests where the chosen
cheapest configuration does not preserve accuracy) stays under `max_loss`. The router that
serves is the average of those fold routers (`RouterModel.average`), so the weight is fitted
to the models that apply it.
"""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
from aragog.routing.space import Space


@dataclasses.dataclass
class RouterModel:
    w_x: np.ndarray  # [dim, hidden]
    w_c: np.ndarray  # [stages, ranks, hidden]
    b1: np.ndarray  # [hidden]
    w2: np.ndarray  # [hidden]
    b2: float
    risk_weight: float  # inf: F(r) is the largest configuration alone
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

    def _hidden(self, embedding: np.ndarray) -> np.ndarray:
        """The request's share of the first layer: computed once per request."""
        return (embedding @ self.w_x + self.b1).astype(np.float32)

    def _risk(self, hidden: np.ndarray, features: np.ndarray) -> np.ndarray:
        """P(does not preserve) per configuration (`features` from config_features), in
        float64 as 1 - sigmoid(z) is exact near 1: `route` and `chosen_configs` both score
        through here, so they rank configurations identically."""
        z = np.maximum(hidden[None, :] + features, 0.0) @ self.w2 + self.b2
        return np.exp(-np.logaddexp(0.0, z.astype(np.float64)))

    def route(
        self,
        embedding: np.ndarray,
        space: Space,
        budget: int = 4096,
        chunk: int = 256,
        risk_weight: float | None = None,
    ) -> np.ndarray:
        """F(r), sorted: the best risk-weighted configuration, every scored configuration at
        least as safe (whatever it costs), their up-sets, and the largest."""
        lam = self.risk_weight if risk_weight is None else risk_weight
        largest = space.largest
        if not math.isfinite(lam):
            return np.array([largest])
        prefix = space.cost_order[:budget + 1]
        prefix = prefix[prefix != largest][:budget]  # the largest scores 1 unscored
        if not len(prefix):
            return np.array([largest])
        h = self._hidden(embedding)
        risk = np.concatenate([self._risk(h, self.config_features(space, prefix[i : i + chunk]))
                               for i in range(0, len(prefix), chunk)])
        score = space.relative_cost[prefix] + lam * risk
        b = int(np.argmin(score))
        if score[b] >= 1.0:
            return np.array([largest])
        safe = prefix[risk <= risk[b]]
        accepted = np.zeros(space.size, dtype=bool)
        accepted[largest] = True
        for i in range(0, len(safe), 32):  # their up-sets, in slices: spaces may be large
            low = space.ranks[safe[i : i + 32]]
            accepted |= (space.ranks[:, None, :] >= low[None]).all(2).any(1)
        return np.flatnonzero(accepted)

    @classmethod
    def average(cls, models: list[RouterModel]) -> RouterModel:
        """One MLP whose logit is the mean of `models`' logits: their hidden units side by
        side, the output weights divided by their number (the risk weight is not carried)."""
        return cls(
            w_x=np.concatenate([m.w_x for m in models], axis=1),
            w_c=np.concatenate([m.w_c for m in models], axis=2),
            b1=np.concatenate([m.b1 for m in models]),
            w2=np.concatenate([m.w2 for m in models]) / len(models),
            b2=float(np.mean([m.b2 for m in models])),
            risk_weight=math.inf,
            meta={},
        )

    # persistence --------------------------------------------------------------------
    def save(self, path: str) -> None:
        np.savez_compressed(
            path,
            w_x=self.w_x,
            w_c=self.w_c,
            b1=self.b1,
            w2=self.w2,
            b2=np.float32(self.b2),
            risk_weight=np.float64(self.risk_weight),
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
            float(z["risk_weight"]),
            json.loads(str(z["meta"])),
        )


def cheapest_of(space: Space, configs: np.ndarray) -> int:
    return int(configs[np.argmin(space.gpu_seconds[configs])])
