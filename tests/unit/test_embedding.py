"""The router's embedder: MiniLM exported to ONNX (int8) must embed as the original model does."""

from __future__ import annotations

import os

import numpy as np
import pytest
from aragog.routing.embedding import MAX_TOKENS, Embedder, exported, model_path

TEXTS = [
    "List the names of customers who live in Oslo.",
    "For each region, rank suppliers by the rolling median of late deliveries.",
    "Write a function that reverses the words of a sentence.",
    "What is the capital of France?",
]


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("embedders"))


@pytest.fixture(scope="module")
def int8(cache) -> Embedder:
    return Embedder(int8=True, cache_dir=cache)


def _reference(texts: list[str]) -> np.ndarray:
    """The model as sentence-transformers runs it (torch, fp32)."""
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(model_path("all-MiniLM-L6-v2"), device="cpu")
    return st.encode(texts, normalize_embeddings=True)


def test_onnx_embeddings_match_sentence_transformers(cache, int8):
    ref = _reference(TEXTS)
    fp32 = Embedder(int8=False, cache_dir=cache).encode(TEXTS)
    q = int8.encode(TEXTS)
    assert fp32.shape == q.shape == (len(TEXTS), 384)
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-4)
    assert np.min((fp32 * ref).sum(1)) > 0.999  # the export is the same function
    assert np.min((q * ref).sum(1)) > 0.95  # int8 weights: close, not exact
    # and it still tells texts apart as the original does
    assert np.argmax(q[0] @ q[1:].T) == np.argmax(ref[0] @ ref[1:].T)


def test_a_text_embeds_the_same_whatever_it_is_encoded_with(int8):
    """Training embeds the benchmark in bulk, serving one request at a time: both must see
    the same vectors (int8 activations are scaled per forward, so no padded batches)."""
    bulk = int8.encode(TEXTS[::-1])[::-1]
    single = np.stack([int8.encode([t])[0] for t in TEXTS])
    np.testing.assert_array_equal(bulk, single)


def test_a_recent_text_is_looked_up_not_embedded_again(int8):
    """The router embeds a request's input twice (front door, then the policy): the second
    call returns the same vector without a forward, and a caller cannot alter the kept one."""
    from aragog.routing import embedding

    text = "How many orders shipped in May from the Oslo warehouse?"
    first = int8.encode([text])
    runs = []
    real = int8._session.run
    int8._session = type("Counting", (), {"run": lambda self, *a: runs.append(1) or real(*a)})()
    try:
        again = int8.encode([text])
        first[0, 0] = 99.0  # the caller's copy, not the kept vector
        np.testing.assert_array_equal(int8.encode([text])[0, 1:], again[0, 1:])
        assert int8.encode([text])[0, 0] != 99.0 and runs == []
        for k in range(embedding.RECENT):  # pushed out by newer texts: embedded again
            int8.encode([f"filler {k}"])
        int8.encode([text])
        assert len(runs) == embedding.RECENT + 1
    finally:
        int8._session = type("Real", (), {"run": lambda self, *a: real(*a)})()


def test_inputs_are_cut_at_max_tokens(int8):
    long = " ".join(["supplier"] * 500)
    assert int8.tokens(long) == MAX_TOKENS
    head = " ".join(["supplier"] * (MAX_TOKENS - 2))  # [CLS] and [SEP] make MAX_TOKENS
    np.testing.assert_allclose(int8.encode([long]), int8.encode([head]), atol=1e-5)


def test_the_export_is_made_once_and_reused(cache, int8):
    path = exported(model_path("all-MiniLM-L6-v2"), True, cache)
    mtime = os.path.getmtime(path)
    again = Embedder(int8=True, cache_dir=cache)
    assert exported(model_path("all-MiniLM-L6-v2"), True, cache) == path
    assert os.path.getmtime(path) == mtime
    assert [f for f in os.listdir(cache) if f.endswith(".tmp")] == []
    np.testing.assert_array_equal(again.encode(TEXTS), int8.encode(TEXTS))
    assert again.id == int8.id and "onnx-int8" in again.id
