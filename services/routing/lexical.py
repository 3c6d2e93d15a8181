"""A lexical embedding of a workflow's prompts, which the router reads next to MiniLM's.

Tf-idf over the words and word pairs of the workflow's training prompts, projected onto
their top singular directions (latent semantic analysis) and normalised. Why: MiniLM's
mean-pooled sentence embedding blurs the few words that show how hard a request is (a
specialist term, one more constraint) among the words every prompt of the workflow shares;
weighting words by how rare they are across the workflow's own prompts keeps them. Fitted on
the training split only, when the router is trained, and stored with it.

The tf-idf follows scikit-learn's `TfidfVectorizer(ngram_range=(1, 2), min_df=2,
sublinear_tf=True)` (a test checks it against that), but is computed here, with numpy,
so serving needs neither scikit-learn nor a pickle.
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from collections.abc import Sequence

import numpy as np

DIM = 96
"""Singular directions kept. On the EMULATED benchmarks 96 recovered more of the oracle's
saving than 32 on four of six (pool, workflow) pairs tried (a one-off comparison)."""
MIN_DF = 2
"""A word or pair must appear in this many training prompts to count."""
DENSE_CELLS = 50_000_000
"""Up to this many prompts x grams the projection comes from an exact dense SVD (the shipped
benchmarks: ~1,400 x ~20,000); past it from a sparse truncated one."""
_TOKEN = re.compile(r"(?u)\b\w\w+\b")


def grams(text: str) -> Counter:
    """Counts of the text's lower-cased words (two characters or more) and adjacent pairs."""
    words = _TOKEN.findall(text.lower())
    return Counter(words + [f"{a} {b}" for a, b in zip(words, words[1:], strict=False)])


@dataclasses.dataclass
class Lexicon:
    vocabulary: dict[str, int]  # gram -> column
    idf: np.ndarray  # [grams]
    components: np.ndarray  # [DIM, grams]: the projection

    @classmethod
    def fit(cls, texts: Sequence[str], dim: int = DIM, min_df: int = MIN_DF) -> Lexicon:
        counts = [grams(t) for t in texts]
        df = Counter(g for c in counts for g in c)
        kept = sorted(g for g, n in df.items() if n >= min_df)
        if not kept:
            raise ValueError(f"no word appears in {min_df} of the {len(texts)} training prompts")
        vocabulary = {g: j for j, g in enumerate(kept)}
        n = len(texts)
        idf = np.log((1.0 + n) / (1.0 + np.array([df[g] for g in kept]))) + 1.0
        lex = cls(vocabulary, idf, np.zeros((0, len(kept))))
        if n * len(kept) <= DENSE_CELLS:
            _, _, vt = np.linalg.svd(lex.tfidf(texts, counts), full_matrices=False)
            lex.components = vt[:dim]
        else:
            lex.components = lex._sparse_components(counts, dim)
        return lex

    def _sparse_components(self, counts: Sequence[Counter], dim: int) -> np.ndarray:
        """The top `dim` right singular vectors of the sparse tf-idf matrix (ARPACK, fixed
        start vector, signs fixed so the largest entry is positive): a user's dataset of
        10,000 prompts has ~100,000 grams, whose dense matrix would need ~8 GB."""
        from scipy.sparse import csr_matrix
        from scipy.sparse.linalg import svds

        rows, cols, vals = [], [], []
        for i, c in enumerate(counts):
            j, v = self._weights(c)
            rows.extend([i] * len(j))
            cols.extend(j.tolist())
            vals.extend(v.tolist())
        x = csr_matrix((vals, (rows, cols)), shape=(len(counts), len(self.vocabulary)))
        k = min(dim, min(x.shape) - 1)
        _, sv, vt = svds(x, k=k, v0=np.full(min(x.shape), 1.0 / np.sqrt(min(x.shape))))
        vt = vt[np.argsort(-sv)]
        signs = np.sign(vt[np.arange(len(vt)), np.abs(vt).argmax(1)])
        return vt * np.where(signs == 0, 1.0, signs)[:, None]

    @property
    def dim(self) -> int:
        return int(self.components.shape[0])

    def _weights(self, counts: Counter) -> tuple[np.ndarray, np.ndarray]:
        """A text's known grams (columns) and their (1 + log count) x idf, unit norm."""
        known = [(j, k) for g, k in counts.items() if (j := self.vocabulary.get(g)) is not None]
        cols = np.array([j for j, _ in known], dtype=int)
        vals = (1.0 + np.log(np.array([k for _, k in known], dtype=float))) * self.idf[cols]
        norm = np.linalg.norm(vals)
        return cols, vals / norm if norm > 0 else vals

    def tfidf(self, texts: Sequence[str], counts: Sequence[Counter] | None = None) -> np.ndarray:
        """[len(texts), grams]: each text's (1 + log count) x idf over the vocabulary, unit norm."""
        out = np.zeros((len(texts), len(self.vocabulary)))
        for i, c in enumerate(counts if counts is not None else map(grams, texts)):
            cols, vals = self._weights(c)
            out[i, cols] = vals
        return out

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """[len(texts), dim] float32, unit norm (zero for a text with no known word). Only the
        text's own columns of the projection are read: this runs per request."""
        z = np.zeros((len(texts), self.dim))
        for i, text in enumerate(texts):
            cols, vals = self._weights(grams(text))
            z[i] = self.components[:, cols] @ vals
        norms = np.linalg.norm(z, axis=1, keepdims=True)
        return (z / np.where(norms > 0, norms, 1.0)).astype(np.float32)

    def save(self, path: str) -> None:
        grams_ = sorted(self.vocabulary, key=self.vocabulary.__getitem__)
        np.savez_compressed(path, grams=np.array(grams_, dtype=str), idf=self.idf,
                            components=self.components.astype(np.float32))

    @classmethod
    def load(cls, path: str) -> Lexicon:
        with np.load(path, allow_pickle=False) as z:
            vocabulary = {str(g): j for j, g in enumerate(z["grams"])}
            return cls(vocabulary, z["idf"], z["components"].astype(np.float64))
