"""Each model's skill on a reference benchmark: the logit of its published accuracy.

Published figures live in aragog/pool/pools/accuracy.yaml (with their sources). A model
that is not listed (a custom pool's) gets a generic skill from the size its name gives
(`...-8b`), so any pool can be emulated, just without published calibration.
"""

from __future__ import annotations

import functools
import importlib.resources
import math
import re

import yaml

GENERIC = "generic"
SIZE_RE = re.compile(r"(\d+(?:\.\d+)?)b\b", re.IGNORECASE)


@functools.cache
def published() -> dict[str, dict[str, float]]:
    """model -> benchmark -> accuracy in percent."""
    path = importlib.resources.files("aragog.pool").joinpath("pools/accuracy.yaml")
    data = yaml.safe_load(path.read_text("utf-8")) if path.is_file() else {}
    models = data.get("models", data)
    return {
        m: {b: float(v) for b, v in scores.items() if v is not None}
        for m, scores in models.items()
        if m != "sources" and isinstance(scores, dict)
    }


@functools.cache
def families() -> dict[str, str]:
    """model -> family, from the shipped pool files."""
    out: dict[str, str] = {}
    root = importlib.resources.files("aragog.pool").joinpath("pools")
    for entry in root.iterdir():
        if entry.name.endswith(".yaml") and entry.name != "accuracy.yaml":
            data = yaml.safe_load(entry.read_text("utf-8"))
            for m in data.get("models", []):
                out[m["name"]] = str(data.get("family", entry.name[:-5]))
    return out


def family(model: str) -> str:
    return families().get(model, GENERIC)


def logit(p: float) -> float:
    p = min(max(p, 1e-4), 1 - 1e-4)
    return math.log(p / (1 - p))


def _generic_accuracy(model: str) -> float:
    m = SIZE_RE.search(model)
    size = float(m.group(1)) if m else 8.0
    return 0.9 - 0.45 * math.exp(-size / 20.0)


def accuracy(model: str, reference: str) -> float:
    """Published accuracy (0..1) of `model` on `reference`; falls back to the mean over the
    benchmarks listed for it, then to the generic size curve."""
    scores = published().get(model)
    if scores:
        if reference in scores:
            return scores[reference] / 100.0
        return sum(scores.values()) / len(scores) / 100.0
    return _generic_accuracy(model)


def skill_gap(model: str, reference: str) -> float:
    """Skill above the smallest model of the same family (0 for the smallest)."""
    fam = family(model)
    peers = [m for m, f in families().items() if f == fam] if fam != GENERIC else []
    floor = min(
        (logit(accuracy(m, reference)) for m in peers), default=logit(_generic_accuracy("1b"))
    )
    return logit(accuracy(model, reference)) - floor
