"""The embedded pool unloads its reserve models at start-up (aragog.pool.emulated.unload)
and makes sure they stay unloaded: an unload Triton loses while it still loads the model is
asked again. Triton's side is faked here (a lost unload cannot be caused on demand); the
live pool tests run the real one."""

from __future__ import annotations

import pytest
from aragog.common.settings import PoolSettings
from aragog.pool import emulated


class FakeTriton:
    """A repository index that shows `model` LOADING, then READY, and unloaded only after
    `unloads_needed` unload calls while READY (the first ones lost)."""

    def __init__(self, unloads_needed: int):
        self.state, self.polls, self.unloads, self.needed = "LOADING", 0, 0, unloads_needed

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def get_model_repository_index(self, headers=None, as_json=False, client_timeout=None):
        self.polls += 1
        if self.state == "LOADING" and self.polls > 2:
            self.state = "READY"
        models = [{"name": "big", "version": "1", "state": "READY"},
                  {"name": "never-loaded"}]
        if self.state != "UNAVAILABLE":
            models.append({"name": "reserve", "version": "1", "state": self.state})
        return {"models": models}

    def unload_model(self, name, headers=None, client_timeout=None):
        assert name == "reserve" and self.state == "READY", "only a READY reserve model"
        self.unloads += 1
        if self.unloads >= self.needed:
            self.state = "UNAVAILABLE"


@pytest.fixture
def fake(monkeypatch):
    def make(unloads_needed: int) -> FakeTriton:
        triton = FakeTriton(unloads_needed)
        monkeypatch.setattr(emulated.grpcclient, "InferenceServerClient", lambda url: triton)
        monkeypatch.setattr(emulated, "UNLOAD_RETRY_S", 0.0)
        return triton
    return make


def test_a_reserve_model_still_loading_is_unloaded_once_ready_and_asked_again(fake):
    triton = fake(unloads_needed=3)
    emulated.unload(PoolSettings(), ["reserve"], "token")
    assert triton.state == "UNAVAILABLE" and triton.unloads == 3


def test_a_model_that_stays_loaded_fails_the_start(fake, monkeypatch):
    fake(unloads_needed=10**9)
    monkeypatch.setattr(emulated, "UNLOAD_WAIT_S", 0.3)
    with pytest.raises(RuntimeError, match="reserve models not unloaded.*reserve"):
        emulated.unload(PoolSettings(), ["reserve"], "token")
