"""The shipped, calibrated model pools (aragog/pool/pools) and the profile schema they use."""

import dataclasses
import importlib.resources
import json

import pytest
import yaml

from aragog.common.pool import ModelProfile, PoolSpec, PoolSpecError, load_pool, shipped_pools

FAMILIES = {
    "qwen2.5": ["qwen2.5-7b", "qwen2.5-14b", "qwen2.5-32b"],
    "llama3": ["llama3-3b", "llama3-8b", "llama3-70b"],
}
"""Calibrated families: published accuracies in accuracy.yaml drive the generated benchmarks."""
RECORDED = {"mmlu-recorded": ["mixtral-8x7b", "gpt-4-1106"]}
"""Recorded pools: their outcomes come from real recordings (aragog.emulation.recorded), so
accuracy.yaml does not calibrate them; their latency profiles are checked like the others."""
POOLS = FAMILIES | RECORDED
BENCHMARKS = {"humaneval", "mbpp", "gsm8k", "math", "mmlu", "mmlu_pro", "mmlu_redux", "bird",
              "spider"}


def profile(**overrides) -> dict:
    base = {"name": "m", "params_b": 8, "instances": 1, "saturation_batch": 8, "ttft_ms": 20,
            "prefill_ms_per_token": 0.05, "tpot_ms": 8, "batch_slowdown": 0.03}
    return base | overrides


def test_every_shipped_pool_is_a_calibrated_family_or_recorded():
    assert set(shipped_pools()) == set(POOLS)


@pytest.mark.parametrize(("family", "names"), POOLS.items())
def test_shipped_pools_load_by_name(family, names):
    pool = load_pool(family)
    assert pool.family == family and pool.names == names
    assert family in shipped_pools()
    assert 0 < pool.time_scale <= 1
    for m in pool.models:
        assert 1 <= m.instances <= 2 and 1 <= m.saturation_batch <= 32
        assert m.tensor_parallel >= 1
    assert PoolSpec.from_json(pool.to_json()) == pool


def test_deployments_are_what_h100_serving_uses():
    tp = {m.name: m.tensor_parallel for f in FAMILIES for m in load_pool(f).models}
    assert tp["llama3-70b"] == 4 and tp["qwen2.5-32b"] in (1, 2)
    assert tp["llama3-3b"] == tp["llama3-8b"] == tp["qwen2.5-7b"] == tp["qwen2.5-14b"] == 1


def test_unknown_pool_name_lists_the_shipped_ones():
    with pytest.raises(PoolSpecError, match="llama3.*qwen2.5"):
        load_pool("mistral")


def test_pool_files_load_by_path_and_tensor_parallel_defaults_to_one(tmp_path):
    path = tmp_path / "custom.yaml"
    path.write_text(yaml.safe_dump({"family": "x", "models": [profile()]}))
    pool = load_pool(str(path))
    assert pool.model("m").tensor_parallel == 1
    # pool JSON stored before the field existed still loads
    old = json.loads(pool.to_json())
    del old["models"][0]["tensor_parallel"]
    assert PoolSpec.from_json(json.dumps(old)).model("m").tensor_parallel == 1


@pytest.mark.parametrize("bad", [0, -2])
def test_tensor_parallel_must_be_positive(bad):
    with pytest.raises(PoolSpecError, match="tensor_parallel"):
        PoolSpec.from_mapping({"models": [profile(tensor_parallel=bad)]})


def test_gpu_seconds_is_the_instance_gpus_share_of_a_batch():
    m = ModelProfile(**profile(tensor_parallel=4))
    s = m.saturation_batch
    assert m.gpu_seconds(256, 128) == pytest.approx(4 * m.batch_latency_s(s, 256, 128) / s)
    assert m.gpu_seconds(256, 128, batch=1) == pytest.approx(4 * m.batch_latency_s(1, 256, 128))
    # batching amortises the GPUs: a full batch is cheaper per request than a lone request
    assert m.gpu_seconds(256, 128) < m.gpu_seconds(256, 128, batch=1)
    assert dataclasses.replace(m, tensor_parallel=1).gpu_seconds(256, 128) == pytest.approx(
        m.gpu_seconds(256, 128) / 4)


@pytest.mark.parametrize("family", POOLS)
def test_larger_models_are_slower_and_cost_more(family):
    models = sorted(load_pool(family).models, key=lambda m: m.params_b)
    lat = [m.batch_latency_s(1, 200, 100) for m in models]
    assert lat == sorted(lat) and len(set(lat)) == len(lat), "latency grows with params at batch 1"
    cost = [m.gpu_seconds(256, 128) for m in models]
    assert all(c > 0 for c in cost)
    assert cost == sorted(cost) and len(set(cost)) == len(cost), \
        "GPU-seconds per request at the saturation batch grow with params"


@pytest.mark.parametrize("family", POOLS)
def test_throughput_curves_rise_and_flatten(family):
    for m in load_pool(family).models:
        curve = m.throughput_curve()
        assert len(curve) == m.capacity + 1 and curve[0] == 0
        gains = [b - a for a, b in zip(curve, curve[1:], strict=False)]
        assert all(g > 0 for g in gains), f"{m.name}: throughput rises up to saturation"
        flattening = all(a >= b - 1e-12 for a, b in zip(gains, gains[1:], strict=False))
        assert flattening, f"{m.name}: and flattens towards saturation"


def test_throughput_curve_spreads_occupancy_over_instances():
    one = ModelProfile(**profile(instances=1))
    two = dataclasses.replace(one, instances=2)
    c1, c2 = one.throughput_curve(), two.throughput_curve()
    assert c2[2] == pytest.approx(2 * c1[1])  # one request on each instance
    assert c2[3] == pytest.approx(c1[2] + c1[1])  # two on one, one on the other
    assert c2[-1] == pytest.approx(2 * c1[-1])


def test_published_accuracies_cover_the_shipped_models():
    data = yaml.safe_load(
        importlib.resources.files("aragog.pool").joinpath("pools/accuracy.yaml").read_text("utf-8"))
    models = data["models"]
    assert set(models) == {n for names in FAMILIES.values() for n in names}
    for name, scores in models.items():
        assert set(scores) == BENCHMARKS, name
        for bench, v in scores.items():
            assert v is None or 0 < v <= 100, (name, bench)
        assert sum(v is not None for v in scores.values()) >= 4, name
    assert data["sources"] and all(s["url"].startswith("https://") for s in data["sources"])
