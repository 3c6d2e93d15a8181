"""The pool as it changes while it serves: models drained and unloaded, loaded, added.

A model's deployment state (Redis `{ns}:pool:state`; every change in `{ns}:pool:changes`):

    serving  --UnloadModel-->  draining  --its last lease released-->  unloaded
    unloaded, failed  --LoadModel-->  loading  --the model server has it-->  serving
    (new)  --AddModel-->  loading  --the model server has it-->  serving
    draining  --LoadModel-->  serving  (the drain is called off)
    loading  --the model server refused-->  failed  (LoadModel tries again)

Only serving models take new stages: the others are in `unplaceable`, which every queue
entry's C(r) leaves out (placement.Unplaceable). A stage placed before a drain keeps its
lease to the end, and the model server unloads the model only once no lease is left on it,
so a drain fails no request. The model server is told through a ModelControl.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Protocol

import numpy as np
import structlog
import tritonclient.grpc.aio as triton
from aragog.common.bounds import clip
from aragog.common.pool import ModelProfile, PoolSpec
from aragog.common.settings import SchedulerSettings
from aragog.common.store import Store
from aragog.scheduler.placement import Unplaceable
from tritonclient.utils import InferenceServerException

log = structlog.get_logger("scheduler")

SERVING, DRAINING, UNLOADED = "serving", "draining", "unloaded"
LOADING, FAILED = "loading", "failed"
CONTROL_MODEL = "aragog-pool-control"  # the embedded pool's door (aragog.pool.emulated)
DRAIN_POLL_S = 0.05
MAX_BY = 100  # characters of who asked, as recorded


class ModelControlError(Exception):
    """The model server did not load or unload a model; the message says why."""


class ModelControl(Protocol):
    async def unload(self, name: str) -> None: ...

    async def load(self, profile: ModelProfile, added: bool) -> None:
        """Return once the model server serves `profile` (`added`: new to the pool)."""


class OperatorControl:
    """`none`: Triton is the operator's. The scheduler only stops and starts placing."""

    async def unload(self, name: str) -> None:
        return None

    async def load(self, profile: ModelProfile, added: bool) -> None:
        return None


class EmbeddedPoolControl:
    """`embedded`: the embedded pool (aragog-pool) loads, unloads and adds its models when
    its control model is asked, with its access token."""

    def __init__(self, url: str, token: str, timeout_s: float):
        self.url, self.token, self.timeout_s = url, token, timeout_s

    async def _call(self, action: str, name: str, profile: str = "") -> None:
        inputs = []
        for key, value in (("token", self.token), ("action", action), ("model", name),
                           ("profile", profile)):
            tensor = triton.InferInput(key, [1, 1], "BYTES")
            tensor.set_data_from_numpy(np.array([[value.encode()]], dtype=np.object_))
            inputs.append(tensor)
        client = triton.InferenceServerClient(self.url)
        try:
            result = await client.infer(CONTROL_MODEL, inputs, client_timeout=self.timeout_s)
        except InferenceServerException as e:
            raise ModelControlError(f"the embedded pool's control model: {e.message()}") from e
        finally:
            await client.close()
        status = result.as_numpy("status").reshape(-1)[0].decode()
        if status != "ok":
            raise ModelControlError(f"the embedded pool: {status}")

    async def unload(self, name: str) -> None:
        await self._call("unload", name)

    async def load(self, profile: ModelProfile, added: bool) -> None:
        if added:
            await self._call("add", profile.name, json.dumps(profile_mapping(profile)))
        else:
            await self._call("load", profile.name)


def profile_mapping(profile: ModelProfile) -> dict[str, object]:
    """`profile` as one entry of a pool file."""
    import dataclasses

    return dataclasses.asdict(profile)


def make_control(settings: SchedulerSettings) -> ModelControl:
    if settings.model_control == "embedded":
        if not settings.triton_access_token:
            raise ValueError("ARAGOG_MODEL_CONTROL=embedded needs ARAGOG_TRITON_ACCESS_TOKEN "
                             "(the embedded pool's own)")
        return EmbeddedPoolControl(settings.triton_url, settings.triton_access_token,
                                   LOAD_TIMEOUT_S)
    return OperatorControl()


LOAD_TIMEOUT_S = 120.0  # a model server's load of one model


class Deployment:
    """Each model's state, and the changes in flight (a drain, a load) as tasks.

    `occupancy()` gives the leases held per model; `changed()` is called whenever what is
    placeable changes (the scheduler renarrows its queue and runs a round).
    """

    def __init__(self, store: Store, control: ModelControl, pool: PoolSpec,
                 occupancy: Callable[[], np.ndarray], changed: Callable[[], None]):
        self.store = store
        self.control = control
        self.profiles = {m.name: m for m in pool.models}
        self.index = {m.name: i for i, m in enumerate(pool.models)}
        self.state = {m.name: SERVING for m in pool.models}
        self.unplaceable = Unplaceable(np.zeros(len(pool.models), dtype=bool),
                                       np.array([m.params_b for m in pool.models]))
        self._occupancy = occupancy
        self._changed = changed
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def grow(self, profile: ModelProfile) -> None:
        """A model appended to the pool: unplaceable until it is loaded."""
        self.profiles[profile.name] = profile
        self.index[profile.name] = len(self.index)
        self.state[profile.name] = LOADING
        u = self.unplaceable
        u.gone = np.append(u.gone, True)
        u.size = np.append(u.size, profile.params_b)

    async def restore(self) -> None:
        """At start (a restart, or a standby taking over): the states Redis holds, and the
        drains and loads they were in the middle of, resumed."""
        for name, state in (await self.store.model_states()).items():
            if name in self.state:
                self._set(name, state)
                if state == DRAINING:
                    self._spawn(name, self._drain(name))
                elif state == LOADING:
                    self._spawn(name, self._load(name, added=False))
        self._changed()

    async def stop(self) -> None:
        for t in self._tasks.values():
            t.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    def _set(self, name: str, state: str) -> None:
        self.state[name] = state
        self.unplaceable.gone[self.index[name]] = state != SERVING

    async def _record(self, name: str, action: str, by: str = "", detail: str = "",
                      pool: PoolSpec | None = None) -> None:
        by, detail = clip(by, MAX_BY), clip(detail)
        await self.store.change_model(name, self.state[name], action, by, detail, pool)
        log.info("pool_changed", model=name, action=action, state=self.state[name], by=by,
                 detail=detail)

    def _spawn(self, name: str, coro) -> None:  # type: ignore[no-untyped-def]
        old = self._tasks.pop(name, None)
        if old is not None:
            old.cancel()
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks[name] = task
        task.add_done_callback(
            lambda t: self._tasks.pop(name, None) if self._tasks.get(name) is t else None)

    # the operator's asks -------------------------------------------------------------
    async def unload(self, name: str, by: str) -> str:
        if self.state[name] in (DRAINING, UNLOADED):
            return self.state[name]
        self._set(name, DRAINING)
        self._changed()
        await self._record(name, "unload", by)
        self._spawn(name, self._drain(name))
        return DRAINING

    async def load(self, name: str, by: str) -> str:
        state = self.state[name]
        if state in (SERVING, LOADING):
            return state
        if state == DRAINING:  # called off: it never left the model server
            self._tasks.pop(name).cancel()
            self._set(name, SERVING)
            self._changed()
            await self._record(name, "load", by, "drain called off")
            return SERVING
        self._set(name, LOADING)
        await self._record(name, "load", by)
        self._spawn(name, self._load(name, added=False))
        return LOADING

    async def add(self, profile: ModelProfile, pool: PoolSpec, by: str) -> str:
        """`pool` already holds `profile` (the scheduler grew first)."""
        await self._record(profile.name, "add", by, pool=pool)
        self._spawn(profile.name, self._load(profile.name, added=True))
        return LOADING

    # the background halves ---------------------------------------------------------
    async def _drain(self, name: str) -> None:
        i = self.index[name]
        while self._occupancy()[i] > 0:
            await asyncio.sleep(DRAIN_POLL_S)
        try:
            await self.control.unload(name)
        except ModelControlError as e:  # still drained: no stage goes there; unload again
            self._set(name, FAILED)
            await self._record(name, "failed", detail=str(e))
            return
        self._set(name, UNLOADED)
        await self._record(name, "unloaded")

    async def _load(self, name: str, added: bool) -> None:
        try:
            await self.control.load(self.profiles[name], added)
        except ModelControlError as e:
            self._set(name, FAILED)
            await self._record(name, "failed", detail=str(e))
            return
        self._set(name, SERVING)
        self._changed()
        await self._record(name, "loaded")
