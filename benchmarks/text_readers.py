"""How well linear text readers recover a request's difficulty, and what more data buys them.

The router's gap on voting (benchmarks/README.md, "What the text allows") is a reading
gap: its feature levels tell the difficulty at R^2 0.96, and routing on a reading needs
about 0.95 to recover 95% of what the levels do. This measures what a ridge regression
on the router's own lexical features (aragog.routing.lexical: tf-idf of words and pairs;
or its LSA projection) reads, fitted on the true difficulties of the training split (more
than any router has), and scored on the held-out split:

- `shipped`: the training split's 1,400 texts, as the router is trained;
- `labelled N`: N training texts drawn from the same EMULATED generator (texts.render at
  difficulties drawn from the training split's), as if the workflow had N profiled
  requests;
- `unlabelled N`: the LSA projection fitted on the training texts plus N more texts with
  no difficulty (a user's request log; unprofiled), the ridge on the training split.

    python benchmarks/text_readers.py [--workflow voting] [--sizes 4000,10000]
"""

from __future__ import annotations

import argparse

import numpy as np
from aragog.emulation import texts
from aragog.emulation.generate import benchmark
from aragog.routing import lexical

ALPHAS = (0.1, 0.3, 1.0, 3.0)
LSA_DIM = 256


def r2(pred: np.ndarray, y: np.ndarray) -> float:
    return float(1 - np.sum((pred - y) ** 2) / np.sum((y - y.mean()) ** 2))


def best_ridge(x_fit, y_fit, x_test, y_test) -> tuple[float, float]:
    """The held-out R^2 of the best alpha (an optimistic choice: an upper bound) and it."""
    from sklearn.linear_model import Ridge

    return max((r2(Ridge(alpha=a).fit(x_fit, y_fit).predict(x_test), y_test), a)
               for a in ALPHAS)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workflow", default="voting")
    ap.add_argument("--sizes", default="4000,10000")
    a = ap.parse_args()
    from scipy.sparse import csr_matrix

    bench = benchmark(a.workflow)
    train = [it for it in bench.items if it.split == "train"]
    test = [it for it in bench.items if it.split == "test"]
    y_train = np.array([it.difficulty for it in train])
    y_test = np.array([it.difficulty for it in test])
    rng = np.random.default_rng(7)
    sizes = [int(n) for n in a.sizes.split(",")]

    def tfidf_r2(fit_texts: list[str], y: np.ndarray) -> tuple[float, float]:
        lex = lexical.Lexicon.fit(fit_texts, dim=1)  # the vocabulary and idf; no projection
        return best_ridge(csr_matrix(lex.tfidf(fit_texts)), y,
                          csr_matrix(lex.tfidf([it.input for it in test])), y_test)

    print(f"{a.workflow}: R^2 of the difficulty read from the text, held-out split "
          f"({len(test)} requests)")
    score, alpha = tfidf_r2([it.input for it in train], y_train)
    print(f"  shipped ({len(train)} profiled texts), tf-idf ridge: {score:.3f} (alpha {alpha:g})")
    for n in sizes:
        y = rng.choice(y_train, n)
        drawn = [texts.render(bench.spec.domain, rng, float(d)) for d in y]
        score, alpha = tfidf_r2(drawn, y)
        print(f"  labelled {n} (EMULATED texts), tf-idf ridge: {score:.3f} (alpha {alpha:g})")
    extra = [texts.render(bench.spec.domain, rng, float(d))
             for d in rng.choice(y_train, max(sizes))]
    for n in [0, *sizes]:
        lex = lexical.Lexicon.fit([it.input for it in train] + extra[:n], dim=LSA_DIM)
        score, alpha = best_ridge(lex.embed([it.input for it in train]), y_train,
                                  lex.embed([it.input for it in test]), y_test)
        print(f"  unlabelled {n} more, LSA {LSA_DIM} ridge: {score:.3f} (alpha {alpha:g})")


if __name__ == "__main__":
    main()
