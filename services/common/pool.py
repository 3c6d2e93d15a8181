"""The model pool: each model's latency profile and the capacity the scheduler plans with.

One definition serves the emulated Triton models (how long a batch takes), the scheduler
(capacity = saturation batch x instances, and the throughput-vs-load curve its round
forecasts with) and the load-monitor (profiled throughput to compare measurements with).
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import json
from collections.abc import Mapping
from typing import Any

import yaml


class PoolSpecError(ValueError):
    """The pool file is malformed; the message names the field."""


@dataclasses.dataclass(frozen=True)
class ModelProfile:
    """Latency profile of one model (per instance); see pool.yaml for the formula."""

    name: str
    params_b: float
    instances: int
    saturation_batch: int
    ttft_ms: float
    prefill_ms_per_token: float
    tpot_ms: float
    batch_slowdown: float

    @property
    def capacity(self) -> int:
        """Concurrent stages the model takes before its throughput stops improving."""
        return self.saturation_batch * self.instances

    def batch_latency_s(self, batch: int, prompt_tokens: int, output_tokens: int) -> float:
        """Wall time (unscaled) one instance needs for a batch of `batch` requests."""
        b = max(1, batch)
        s = self.saturation_batch
        prefill = b * prompt_tokens * self.prefill_ms_per_token / 1000.0
        slow = 1.0 + self.batch_slowdown * (min(b, s) - 1)
        decode = output_tokens * self.tpot_ms * slow / 1000.0 * max(1.0, b / s)
        return self.ttft_ms / 1000.0 + prefill + decode

    def throughput_curve(self, prompt_tokens: int = 256, output_tokens: int = 128) -> list[float]:
        """Requests/second the whole model serves at occupancy 0..capacity (index = occupancy).

        Occupancy spreads evenly over instances; the curve rises and flattens at saturation,
        which is what the scheduler's utilization forecast reads.
        """
        curve = [0.0]
        for occ in range(1, self.capacity + 1):
            per_instance = occ / self.instances
            lat = self.batch_latency_s(max(1, round(per_instance)), prompt_tokens, output_tokens)
            curve.append(occ / lat)
        return curve


@dataclasses.dataclass(frozen=True)
class PoolSpec:
    """The pool: models in declaration order (their index is the model id the scheduler uses)."""

    family: str
    time_scale: float
    models: tuple[ModelProfile, ...]

    def model(self, name: str) -> ModelProfile:
        for m in self.models:
            if m.name == name:
                return m
        raise KeyError(name)

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.models]

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> PoolSpec:
        return cls.from_mapping(json.loads(text))

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> PoolSpec:
        if not isinstance(data, Mapping) or "models" not in data:
            raise PoolSpecError("pool file needs a `models` list")
        models = []
        fields = [f.name for f in dataclasses.fields(ModelProfile)]
        for i, raw in enumerate(data["models"]):
            missing = [f for f in fields if f not in raw]
            if missing:
                raise PoolSpecError(f"pool model #{i} lacks {', '.join(missing)}")
            try:
                m = ModelProfile(
                    name=str(raw["name"]),
                    params_b=float(raw["params_b"]),
                    instances=int(raw["instances"]),
                    saturation_batch=int(raw["saturation_batch"]),
                    ttft_ms=float(raw["ttft_ms"]),
                    prefill_ms_per_token=float(raw["prefill_ms_per_token"]),
                    tpot_ms=float(raw["tpot_ms"]),
                    batch_slowdown=float(raw["batch_slowdown"]),
                )
            except (TypeError, ValueError) as e:
                raise PoolSpecError(f"pool model #{i}: {e}") from e
            if m.instances < 1 or m.saturation_batch < 1:
                raise PoolSpecError(f"pool model {m.name}: instances and saturation_batch must be >= 1")
            models.append(m)
        if len({m.name for m in models}) != len(models):
            raise PoolSpecError("pool model names must be unique")
        return cls(
            family=str(data.get("family", "")),
            time_scale=float(data.get("time_scale", 1.0)),
            models=tuple(models),
        )


def load_pool(path: str | None = None) -> PoolSpec:
    """Load a pool file; None means the embedded default (aragog/pool/pool.yaml)."""
    if path:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    else:
        text = importlib.resources.files("aragog.pool").joinpath("pool.yaml").read_text("utf-8")
    return PoolSpec.from_mapping(yaml.safe_load(text))
