import warnings

import pytest

from aragog.common.pool import PoolSpec, PoolSpecError, load_pool
from aragog.common.settings import ExecutorSettings, SchedulerSettings, SettingsError, settings_table


def test_settings_read_typed_values_from_the_environment():
    s = SchedulerSettings.from_env({"ARAGOG_BEAM_WIDTH": "8", "ARAGOG_LEASE_TTL_S": "2.5",
                                    "ARAGOG_REDIS_URL": "redis://x:1/0", "OTHER": "1"})
    assert (s.beam_width, s.lease_ttl_s, s.redis_url) == (8, 2.5, "redis://x:1/0")
    assert SchedulerSettings.from_env(s.to_env()) == s


def test_bad_setting_names_the_variable():
    with pytest.raises(SettingsError, match="ARAGOG_STAGE_RETRIES='many'"):
        ExecutorSettings.from_env({"ARAGOG_STAGE_RETRIES": "many"})


def test_settings_table_documents_every_variable():
    table = settings_table()
    for var in ("ARAGOG_REDIS_URL", "ARAGOG_BEAM_WIDTH", "ARAGOG_TRITON_URL", "ARAGOG_MAX_INPUT_BYTES"):
        assert f"`{var}`" in table


def test_default_pool_profiles():
    pool = load_pool()
    assert pool.names == ["llama3-3b", "llama3-8b", "llama3-70b"]
    assert pool == load_pool("llama3")  # the embedded default is the Llama-3 pool
    # bigger models are slower per token at batch 1
    lat = [m.batch_latency_s(1, 200, 100) for m in pool.models]
    assert lat == sorted(lat)
    for m in pool.models:
        curve = m.throughput_curve()
        assert len(curve) == m.capacity + 1 and curve[0] == 0
        gains = [b - a for a, b in zip(curve, curve[1:], strict=False)]
        assert all(g > 0 for g in gains), "throughput rises up to saturation"
        assert gains[-1] < gains[0], "and flattens towards it"
        # past saturation a batch takes proportionally longer: no more throughput
        s = m.saturation_batch
        assert m.batch_latency_s(2 * s, 0, 100) == pytest.approx(
            2 * m.batch_latency_s(s, 0, 100) - m.ttft_ms / 1000)
    assert PoolSpec.from_json(pool.to_json()) == pool


def test_pool_file_errors_name_the_field():
    with pytest.raises(PoolSpecError, match="lacks"):
        PoolSpec.from_mapping({"models": [{"name": "x"}]})


def test_readme_settings_table_is_current():
    import pathlib

    readme = pathlib.Path(__file__).resolve().parents[2] / "README.md"
    assert settings_table() in readme.read_text(), "regenerate: python -m aragog.common.settings"


@pytest.mark.parametrize("env, message", [
    ({"ARAGOG_STAGE_RETRIES": "0"}, "ARAGOG_STAGE_RETRIES=0: must be at least 1"),
    ({"ARAGOG_STAGE_TIMEOUT_S": "-1"}, "ARAGOG_STAGE_TIMEOUT_S=-1.0: must be more than 0"),
    ({"ARAGOG_LOG_LEVEL": "loud"}, "must be one of debug, info, warning, error"),
    ({"ARAGOG_METRICS_PORT": "70000"}, "must be at most 65535"),
])
def test_out_of_range_settings_name_the_variable(env, message):
    with pytest.raises(SettingsError, match=None) as e:
        ExecutorSettings.from_env(env)
    assert message in str(e.value)


def test_a_misspelled_variable_is_warned_about():
    from aragog.common.settings import UnknownSettingWarning

    with pytest.warns(UnknownSettingWarning, match="ARAGOG_STAGE_RETRIESS"):
        ExecutorSettings.from_env({"ARAGOG_STAGE_RETRIESS": "2"})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # another service's variable is not unknown
        ExecutorSettings.from_env({"ARAGOG_DEFAULT_POLICY": "largest"})


def test_a_service_with_a_bad_setting_stops_with_one_line():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "aragog.executor"], capture_output=True, text=True,
                         env={"ARAGOG_STAGE_RETRIES": "0", "PATH": "/usr/bin:/bin"}, timeout=60)
    assert out.returncode == 1
    assert out.stderr.strip() == "aragog-executor: ARAGOG_STAGE_RETRIES=0: must be at least 1"
