"""Benchmark input texts: deterministic, well formed, short, varied, and carrying real but noisy
signal of the latent difficulty (what the learned router must read from the text alone).

The signal check embeds the texts with MiniLM the way the router does (int8 linear layers,
128 tokens) and fits a ridge regression: it must predict difficulty well (the router needs
it) and still far from perfectly (mislabelled surfaces and per-feature noise). The token check
counts MiniLM tokens, which the router's latency budget pays for.
"""

from __future__ import annotations

import numpy as np
import pytest
from aragog.emulation import texts
from aragog.emulation.texts import DOMAINS, render, render_with_levels
from scipy.stats import spearmanr

N, TRAIN, SEED = 900, 600, 20240611


def _draw(domain: str, seed: int = SEED) -> tuple[np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    ds = rng.random(N)
    return ds, [render(domain, rng, float(d)) for d in ds]


@pytest.fixture(scope="module")
def corpora() -> dict[str, tuple[np.ndarray, list[str]]]:
    return {domain: _draw(domain) for domain in DOMAINS}


@pytest.fixture(scope="module")
def embedder():
    from aragog.routing.embedding import Embedder

    return Embedder()  # as the router embeds (int8 MiniLM, 128 tokens)


@pytest.mark.parametrize("domain", DOMAINS)
def test_deterministic_for_the_rng_state(domain, corpora):
    assert _draw(domain)[1] == corpora[domain][1]
    assert _draw(domain, SEED + 1)[1] != corpora[domain][1]


@pytest.mark.parametrize("domain", DOMAINS)
def test_one_ascii_line_of_bounded_length(domain, corpora):
    for text in corpora[domain][1]:
        assert "\n" not in text and "\r" not in text, text
        assert 40 <= len(text) <= 210, (len(text), text)
        assert text.isascii() and text.isprintable(), text
        assert text == text.strip() and "  " not in text, text
    rng = np.random.default_rng(0)
    for d in (-0.5, 0.0, 1.0, 1.5):  # out-of-range difficulties are clipped
        assert 40 <= len(render(domain, rng, d)) <= 210


@pytest.mark.parametrize("domain", DOMAINS)
def test_short_in_minilm_tokens(domain, corpora, embedder):
    # the router pays ~0.18 ms per token of MiniLM within a 15 ms p99 budget
    n = np.array([len(embedder._tok.encode(t).ids) for t in corpora[domain][1]])  # [CLS]..[SEP]
    assert n.max() <= 60, (n.max(), corpora[domain][1][int(n.argmax())])
    assert n.mean() <= 40, n.mean()


@pytest.mark.parametrize("domain", DOMAINS)
def test_varied(domain, corpora):
    texts = corpora[domain][1]
    assert len(set(texts)) >= 0.98 * N
    openings = {" ".join(t.split()[:2]) for t in texts}
    assert len(openings) >= 10, openings  # not one template


@pytest.mark.parametrize("domain", DOMAINS)
def test_length_follows_difficulty(domain, corpora):
    ds, texts = corpora[domain]
    rho = spearmanr([len(t) for t in texts], ds)[0]
    assert rho > 0.05, rho  # harder requests tend to say more, though vocabulary carries most


@pytest.mark.parametrize("domain", DOMAINS)
def test_embedding_predicts_difficulty_noisily(domain, corpora, embedder):
    from sklearn.linear_model import Ridge

    ds, texts = corpora[domain]
    x = embedder.encode(texts)
    pred = Ridge(alpha=1.0).fit(x[:TRAIN], ds[:TRAIN]).predict(x[TRAIN:])
    rho = spearmanr(pred, ds[TRAIN:])[0]
    print(f"{domain}: Spearman(ridge on MiniLM, d) = {rho:.3f}")
    assert 0.85 <= rho <= 0.95, rho


@pytest.mark.parametrize("domain", DOMAINS)
def test_levels_are_all_the_text_tells_of_difficulty(domain, corpora, monkeypatch):
    # the same text as render, with one level per feature drawn around the difficulty
    rng = np.random.default_rng(SEED)
    ds = rng.random(N)
    drawn = [render_with_levels(domain, rng, float(d)) for d in ds]
    assert [t for t, _ in drawn] == corpora[domain][1]
    assert all(len(lv) >= 2 for _, lv in drawn)
    means = [np.mean(lv) for _, lv in drawn]
    assert spearmanr(means, ds)[0] > 0.8
    # with the levels cut from the difficulty, every difficulty writes the same text: the
    # text depends on it only through them (what routing_ceiling.py --levels relies on)
    monkeypatch.setattr(texts, "_level", lambda rng, s, sd: 0.5 + sd * rng.normal())
    for seed in range(40):
        assert len({render(domain, np.random.default_rng(seed), d) for d in (0.0, 0.4, 1.0)}) == 1


def test_unknown_domain():
    with pytest.raises(ValueError, match="unknown domain"):
        render("poetry", np.random.default_rng(0), 0.5)
