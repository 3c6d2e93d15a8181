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
so a drain fails no request. The model server is told through a ModelControl
(ARAGOG_MODEL_CONTROL): `none` leaves it to the operator, `triton` uses Triton's
model-repository API.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

import numpy as np
import structlog
import tritonclient.grpc.aio as triton
from aragog.common.bounds import clip
from aragog.common.pool import ModelProfile, PoolSpec
from aragog.common.settings import SchedulerSettings
from aragog.common.store import Store
from aragog.policies.stageroute import PROMPT_TOKENS, choose_deployment
from aragog.scheduler.placement import Unplaceable
from tritonclient.utils import InferenceServerException

log = structlog.get_logger("scheduler")

SERVING, DRAINING, UNLOADED = "serving", "draining", "unloaded"
LOADING, FAILED = "loading", "failed"
DRAIN_POLL_S = 0.05
MAX_BY = 100  # characters of who asked, as recorded
BY_WINDOW = "stageroute"  # who WindowDeployer's changes are recorded as


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


class TritonRepository:
    """`triton`: Triton's model-repository API (explicit model control), as for any Triton:
    unload a model, load one from the repository (an added model must be in it), and wait
    until it is ready or gone. The embedded pool is such a Triton; its reserve models are
    in its repository, not loaded. A Triton whose repository API is restricted
    (`--grpc-restricted-protocol=model-repository:triton-access-token=<token>`, as the
    embedded pool's is) takes ARAGOG_TRITON_ACCESS_TOKEN."""

    def __init__(self, url: str, token: str, timeout_s: float):
        self.url, self.timeout_s = url, timeout_s
        self.headers = {"triton-grpc-protocol-triton-access-token": token} if token else None

    async def _wait(self, client, name: str, ready: bool) -> None:  # type: ignore[no-untyped-def]
        deadline = asyncio.get_running_loop().time() + self.timeout_s
        while await client.is_model_ready(name) != ready:
            if asyncio.get_running_loop().time() > deadline:
                raise ModelControlError(f"{name} is not {'ready' if ready else 'unloaded'} "
                                        f"after {self.timeout_s:g} s")
            await asyncio.sleep(0.1)

    async def unload(self, name: str) -> None:
        client = triton.InferenceServerClient(self.url)
        try:
            await client.unload_model(name, headers=self.headers)
            await self._wait(client, name, ready=False)
        except InferenceServerException as e:
            raise ModelControlError(f"Triton did not unload {name}: {e.message()}") from e
        finally:
            await client.close()

    async def load(self, profile: ModelProfile, added: bool) -> None:
        client = triton.InferenceServerClient(self.url)
        try:
            if not await client.is_model_ready(profile.name):
                await client.load_model(profile.name, headers=self.headers)
            await self._wait(client, profile.name, ready=True)
        except InferenceServerException as e:
            raise ModelControlError(f"Triton did not load {profile.name}: {e.message()}") from e
        finally:
            await client.close()


def make_control(settings: SchedulerSettings) -> ModelControl:
    if settings.model_control == "triton":
        return TritonRepository(settings.triton_url, settings.triton_access_token,
                                LOAD_TIMEOUT_S)
    return OperatorControl()


LOAD_TIMEOUT_S = 120.0  # a model server's load or unload of one model


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
        # models an operator unloaded: the window deployer leaves them alone until an
        # operator loads them (in memory: a new scheduler's deployer may load them again)
        self.held: set[str] = set()
        self._unloading: set[str] = set()  # drained: the model server is unloading them

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

    def _spawn(self, name: str, coro, cancel: bool = True) -> None:  # type: ignore[no-untyped-def]
        old = self._tasks.pop(name, None)
        if old is not None and cancel:
            old.cancel()
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks[name] = task
        task.add_done_callback(
            lambda t: self._tasks.pop(name, None) if self._tasks.get(name) is t else None)

    # the operator's asks -------------------------------------------------------------
    async def unload(self, name: str, by: str) -> str:
        if by != BY_WINDOW:
            self.held.add(name)
        if self.state[name] in (DRAINING, UNLOADED):
            return self.state[name]
        self._set(name, DRAINING)
        self._changed()
        await self._record(name, "unload", by)
        self._spawn(name, self._drain(name))
        return DRAINING

    async def load(self, name: str, by: str) -> str:
        self.held.discard(name)
        state = self.state[name]
        if state in (SERVING, LOADING):
            return state
        if state == DRAINING and name not in self._unloading:
            drain = self._tasks.pop(name, None)  # called off: it never left the model server
            if drain is not None:
                drain.cancel()
            self._set(name, SERVING)
            self._changed()
            await self._record(name, "load", by, "drain called off")
            return SERVING
        unloading = self._tasks.get(name) if state == DRAINING else None
        self._set(name, LOADING)
        await self._record(name, "load", by)
        self._spawn(name, self._load(name, added=False, after=unloading), cancel=False)
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
        self._unloading.add(name)
        try:
            await self.control.unload(name)
        except ModelControlError as e:  # still drained: no stage goes there; unload again
            self._set(name, FAILED)
            await self._record(name, "failed", detail=str(e))
            return
        finally:
            self._unloading.discard(name)
        if self.state[name] == DRAINING:  # not asked to load meanwhile
            self._set(name, UNLOADED)
        await self._record(name, "unloaded")

    async def _load(self, name: str, added: bool,
                    after: asyncio.Task[None] | None = None) -> None:
        if after is not None:  # a model server unloading it: load it once that is done
            await asyncio.gather(after, return_exceptions=True)
        try:
            await self.control.load(self.profiles[name], added)
        except ModelControlError as e:
            self._set(name, FAILED)
            await self._record(name, "failed", detail=str(e))
            return
        self._set(name, SERVING)
        self._changed()
        await self._record(name, "loaded")


class WindowDeployer:
    """StageRoute's deployment half (aragog.policies.stageroute): at the start of every
    window of `window_s`, keep deployed the `m_max` models its optimistic estimates choose
    from the outcomes reported so far (every workflow's, per model), loading those chosen
    first, then unloading the others (a refused unload, which would strand a workflow's
    stage, leaves the model deployed). Models an operator unloaded are not its to deploy
    until an operator loads them: a model that is loaded (or added) is one that arrived.
    A window with no outcome reported since the last decision changes nothing (at start,
    nothing is known: the deployment stays as the operator left it)."""

    def __init__(self, store: Store, deployment: Deployment, pool: Callable[[], PoolSpec],
                 unload: Callable, load: Callable, window_s: float, m_max: int,
                 budget_share: float):
        self.store, self.deployment, self._pool = store, deployment, pool
        self._unload, self._load = unload, load
        self.window_s, self.m_max, self.budget_share = window_s, m_max, budget_share
        self._decided_at = 0  # outcomes reported when the last decision was made

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.window_s)
            try:
                await self.window()
            except asyncio.CancelledError:
                raise
            except Exception:  # Redis away: the next window tries again
                log.exception("deployment_window_failed")

    async def window(self) -> list[str]:
        """Decide this window's deployment and start its changes; the models chosen (none
        when nothing was decided)."""
        pool = self._pool()
        outcomes: dict[str, tuple[int, float]] = {}
        for wf in await self.store.list_workflows():
            for model, (n, total) in (await self.store.outcomes(wf.id)).items():
                n0, t0 = outcomes.get(model, (0, 0.0))
                outcomes[model] = (n0 + n, t0 + total)
        total = sum(n for n, _ in outcomes.values())
        models = [m for m in pool.names if m not in self.deployment.held]
        if not models or total == self._decided_at:
            return []
        self._decided_at = total
        costs = {m.name: m.gpu_seconds(PROMPT_TOKENS, 128) for m in pool.models
                 if m.name in models}
        chosen = choose_deployment(models, outcomes, costs,
                                   self.budget_share * max(costs.values()), self.m_max)
        log.info("deployment_window", chosen=chosen,
                 outcomes={m: n for m, (n, _) in outcomes.items()})
        for m in chosen:
            if self.deployment.state[m] in (UNLOADED, FAILED, DRAINING):
                await self._load(m, BY_WINDOW)
        for m in models:
            if m not in chosen and self.deployment.state[m] in (SERVING, LOADING):
                try:
                    await self._unload(m, BY_WINDOW)
                except Exception as e:  # StageRejected: a workflow cannot do without it
                    log.info("deployment_window_kept", model=m, why=str(e))
        return chosen

