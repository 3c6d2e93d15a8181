"""The model pool: each model's latency profile and the capacity the scheduler plans with.

One definition serves the emulated Triton models (how long a batch takes), the scheduler
(capacity = saturation batch x instances, and the throughput-vs-load curve its round
forecasts with), the load-monitor (profiled throughput to compare measurements with) and
the cost model (GPU-seconds per request, from the instances' tensor parallelism).

Shipped pools: aragog/pool/pool.yaml (the default) and aragog/pool/pools/<name>.yaml, which
`load_pool("<name>")` loads by name: the calibrated families (llama3, qwen2.5) and the
recorded pool mmlu-recorded (real outcomes, emulated latency: aragog.emulation.recorded).
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import json
import os
from collections.abc import Mapping
from typing import Any

import yaml


class PoolSpecError(ValueError):
    """The pool file is malformed; the message names the field."""


@dataclasses.dataclass(frozen=True)
class ModelProfile:
    """Latency profile of one model (per instance); see pool.yaml for the formula.

    `tensor_parallel` is the number of GPUs one instance runs on (pool files may omit it: 1).
    """

    name: str
    params_b: float
    instances: int
    saturation_batch: int
    ttft_ms: float
    prefill_ms_per_token: float
    tpot_ms: float
    batch_slowdown: float
    tensor_parallel: int = 1

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

    def gpu_seconds(self, prompt_tokens: int, output_tokens: int,
                    batch: int | None = None) -> float:
        """GPU-seconds (unscaled) one request costs when it shares a batch of `batch` requests
        (default: the saturation batch, where the instance is used most efficiently): the
        batch's latency times the instance's GPUs, split evenly over the batch."""
        b = self.saturation_batch if batch is None else max(1, batch)
        return self.tensor_parallel * self.batch_latency_s(b, prompt_tokens, output_tokens) / b

    def throughput_curve(self, prompt_tokens: int = 256, output_tokens: int = 128) -> list[float]:
        """Requests/second the whole model serves at occupancy 0..capacity (index = occupancy).

        Occupancy spreads evenly over instances (some run one request more than the others);
        the curve rises and flattens at saturation, which is what the scheduler's utilization
        forecast reads.
        """

        def served(batch: int) -> float:  # requests/second of one instance running `batch`
            if batch == 0:
                return 0.0
            return batch / self.batch_latency_s(batch, prompt_tokens, output_tokens)

        curve = [0.0]
        for occ in range(1, self.capacity + 1):
            low, extra = divmod(occ, self.instances)
            curve.append(extra * served(low + 1) + (self.instances - extra) * served(low))
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
        fields = [f.name for f in dataclasses.fields(ModelProfile) if f.name not in OPTIONAL_FIELDS]
        for i, raw in enumerate(data["models"]):
            if not isinstance(raw, Mapping):
                raise PoolSpecError(f"pool model #{i} is not a mapping")
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
                    tensor_parallel=int(raw.get("tensor_parallel", 1)),
                )
            except (TypeError, ValueError) as e:
                raise PoolSpecError(f"pool model #{i}: {e}") from e
            if m.instances < 1 or m.saturation_batch < 1:
                raise PoolSpecError(
                    f"pool model {m.name}: instances and saturation_batch must be >= 1")
            if m.tensor_parallel < 1:
                raise PoolSpecError(f"pool model {m.name}: tensor_parallel must be >= 1")
            models.append(m)
        if len({m.name for m in models}) != len(models):
            raise PoolSpecError("pool model names must be unique")
        return cls(
            family=str(data.get("family", "")),
            time_scale=float(data.get("time_scale", 1.0)),
            models=tuple(models),
        )


OPTIONAL_FIELDS = ("tensor_parallel",)
"""ModelProfile fields a pool file may omit (they take the dataclass default)."""


def shipped_pools() -> list[str]:
    """Names of the pools shipped in aragog/pool/pools (what `load_pool` takes)."""
    root = importlib.resources.files("aragog.pool").joinpath("pools")
    return sorted(e.name[: -len(".yaml")] for e in root.iterdir()
                  if e.name.endswith(".yaml") and e.name != "accuracy.yaml")


def _is_pool_name(path: str) -> bool:
    separators = {"/", os.sep, os.altsep} - {None}
    return not any(sep in path for sep in separators) and not path.endswith((".yaml", ".yml"))


def pool_file(path: str | None = None) -> dict[str, Any]:
    """A pool file's YAML mapping: None means the embedded default (aragog/pool/pool.yaml); a
    bare name without a path separator or .yaml suffix (`"qwen2.5"`, `"llama3"`) means the
    shipped aragog/pool/pools/<name>.yaml; anything else is a file path. Besides the pool
    (`load_pool`), it may list `reserve` models, which only the embedded pool reads."""
    if not path:
        text = importlib.resources.files("aragog.pool").joinpath("pool.yaml").read_text("utf-8")
    elif _is_pool_name(path):
        shipped = shipped_pools()
        if path not in shipped:
            raise PoolSpecError(f"no shipped pool {path!r}; shipped pools: {', '.join(shipped)}")
        resource = importlib.resources.files("aragog.pool").joinpath(f"pools/{path}.yaml")
        text = resource.read_text("utf-8")
    else:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    data = yaml.safe_load(text)
    if not isinstance(data, Mapping):
        raise PoolSpecError("pool file must be a mapping with a `models` list")
    return dict(data)


def load_pool(path: str | None = None) -> PoolSpec:
    """The pool of `path` (pool_file says what it may be)."""
    return PoolSpec.from_mapping(pool_file(path))


def reserve_of(data: Mapping[str, Any]) -> PoolSpec:
    """A pool file's `reserve` (its mapping, from pool_file): models the embedded pool puts
    in Triton's repository without serving them, for an operator to add while it serves."""
    return PoolSpec.from_mapping({"models": data.get("reserve") or []})
