"""The router's lexical embedding: scikit-learn's tf-idf, computed without it, projected."""

from __future__ import annotations

import numpy as np
import pytest
from aragog.emulation.generate import benchmark
from aragog.routing.lexical import Lexicon


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return [it.input for it in benchmark("text-to-sql").items[:400]]


def test_tfidf_is_scikit_learns(texts):
    from sklearn.feature_extraction.text import TfidfVectorizer

    ref = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True).fit(texts[:300])
    lex = Lexicon.fit(texts[:300])
    assert list(lex.vocabulary) == list(ref.get_feature_names_out())
    np.testing.assert_allclose(lex.tfidf(texts[300:]), ref.transform(texts[300:]).toarray(),
                               atol=1e-12)


def test_embedding_is_the_top_singular_directions(texts):
    lex = Lexicon.fit(texts[:300], dim=16)
    z = lex.embed(texts)
    assert z.shape == (400, 16) and z.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1.0, atol=1e-5)
    # the projection keeps most of what the training prompts' tf-idf vary in
    x = lex.tfidf(texts[:300])
    kept = np.linalg.norm(x @ lex.components.T) ** 2 / np.linalg.norm(x) ** 2
    assert kept > 0.2, kept
    np.testing.assert_allclose(lex.components @ lex.components.T, np.eye(16), atol=1e-9)


def test_unknown_words_embed_to_zero_and_saved_equals_fitted(texts, tmp_path):
    lex = Lexicon.fit(texts[:300])
    assert not lex.embed(["zzqx qqzz"]).any()
    lex.save(str(tmp_path / "lexicon.npz"))
    again = Lexicon.load(str(tmp_path / "lexicon.npz"))
    assert again.vocabulary == lex.vocabulary
    np.testing.assert_allclose(again.embed(texts), lex.embed(texts), atol=1e-6)


def test_too_few_prompts_to_learn_a_vocabulary():
    with pytest.raises(ValueError, match="no word appears"):
        Lexicon.fit(["only one prompt here"])


def test_a_large_vocabulary_fits_through_the_sparse_svd_to_the_same_subspace(monkeypatch):
    """Past DENSE_CELLS the projection comes from a sparse truncated SVD; it spans the same
    top directions as the dense one (up to sign and rotation within ties)."""
    import numpy as np
    from aragog.routing import lexical

    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(400)]
    texts = [" ".join(rng.choice(words, size=30)) for _ in range(300)]
    dense = lexical.Lexicon.fit(texts, dim=8)
    monkeypatch.setattr(lexical, "DENSE_CELLS", 0)
    sparse = lexical.Lexicon.fit(texts, dim=8)
    assert sparse.components.shape == dense.components.shape
    overlap = np.linalg.svd(dense.components @ sparse.components.T, compute_uv=False)
    assert overlap.min() > 0.99  # the same 8-dimensional subspace
