"""Intent: how much an input looks like the inputs a workflow was built for (MoMA's front
door reads it to send a request that names no workflow to the right one).

`aragog-routing build` keeps, beside each workflow's router, the embeddings of up to
EXAMPLES of its training inputs (`intent.npz`) and an acceptance threshold. An input's score
for a workflow is the mean cosine similarity of its K nearest examples; the threshold is the
score that ACCEPT of the workflow's own examples reach when each is scored against the
others (leave one out), so a workflow accepts about that share of inputs like the ones it was
built for and the rest of the world mostly falls below it.

Why nearest examples and not a trained classifier: the set of workflows is whatever is
registered now (one may be registered or deprecated at any time), and each workflow's
examples are fitted alone, so a workflow is an agent as soon as its artifacts exist, with no
joint retraining. The embedding is the router's own (MiniLM), computed once per request.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

FILENAME = "intent.npz"
EXAMPLES = 2048
"""Training inputs kept per workflow (evenly spaced over the training split if more). Every
one of the benchmarks' 1,400: with 256, neighbours were farther, thresholds lower, and 13% of
MMLU questions passed for voting's (against none with all 1,400)."""
K = 5
"""Nearest examples averaged into a score."""
ACCEPT = 0.99
"""Share of a workflow's own (left-out) examples its threshold accepts.

EXAMPLES, K and ACCEPT were chosen on the generated benchmarks' first 200 test inputs of each
workflow and 300 MMLU prompts (examples 256 or all, ACCEPT 0.95-0.995, K 1-10): with all
examples every setting sent 94-100% of each workflow's inputs to it and 98-100% of the MMLU
prompts to none; 0.99 and 5 were the best balance. `aragog-eval --moma` measures on other
inputs than these."""


@dataclasses.dataclass(frozen=True)
class Examples:
    """One workflow's intent: unit-norm example embeddings and its acceptance threshold."""

    vectors: np.ndarray  # [n, dim] float32, rows of unit norm
    threshold: float

    def score(self, embedding: np.ndarray) -> float:
        """Mean cosine similarity of the K examples nearest `embedding` (unit norm)."""
        sims = self.vectors @ embedding.astype(np.float32)
        k = min(K, len(sims))
        return float(np.partition(sims, len(sims) - k)[-k:].mean())

    def save(self, path: str) -> None:
        tmp = f"{path}.{os.getpid()}.tmp.npz"
        np.savez_compressed(tmp, vectors=self.vectors.astype(np.float16),
                            threshold=np.float64(self.threshold))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str) -> Examples:
        z = np.load(path)
        return cls(z["vectors"].astype(np.float32), float(z["threshold"]))


def fit(embeddings: np.ndarray) -> Examples:
    """The intent of a workflow whose training inputs embed to `embeddings` (unit-norm rows;
    at least K + 1 of them)."""
    if len(embeddings) < K + 1:
        raise ValueError(f"an intent needs at least {K + 1} example inputs, not {len(embeddings)}")
    keep = np.linspace(0, len(embeddings) - 1, min(EXAMPLES, len(embeddings))).round()
    v = embeddings[np.unique(keep.astype(np.int64))].astype(np.float32)
    v /= np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    sims = v @ v.T
    np.fill_diagonal(sims, -np.inf)  # each example scored against the others
    own = np.sort(sims, axis=1)[:, -K:].mean(1)
    return Examples(v, float(np.quantile(own, 1.0 - ACCEPT)))
