"""EMULATED answers of the pool's models (no weights on these machines).

A pure, deterministic function of (model, stage, prompt) so tests and the executor can predict
every answer exactly. A later issue replaces it with answers drawn from a shipped benchmark;
keep the signature.
"""

from __future__ import annotations

import hashlib

PREVIEW_WORDS = 6


def answer(model: str, stage: str, prompt: str) -> str:
    """`[model/stage] <digest> <first words of the prompt>`; the digest is 8 hex chars of the
    prompt's SHA-256, so equal prompts give equal answers and different ones almost never do."""
    digest = hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:8]
    preview = " ".join(prompt.split()[:PREVIEW_WORDS])
    return f"[{model}/{stage}] {digest} {preview}".rstrip()
