"""What the policies read at admission: the routing artifacts and the embedding model.

One `Routing` per router process. Artifacts load lazily per (pool family, workflow) and are
used only when their manifest matches the registered workflow and pool
(aragog.routing.artifacts.load); otherwise the policies that need them refuse the request
with the reason, and it is logged once per lookup.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import structlog
from aragog.common.pool import PoolSpec
from aragog.common.settings import RouterSettings
from aragog.common.workflow import WorkflowDef
from aragog.routing import artifacts
from aragog.routing.artifacts import Artifacts
from aragog.routing.embedding import Embedder

log = structlog.get_logger("routing")
RETRY_S = 60.0


class Routing:
    def __init__(self, settings: RouterSettings):
        self.settings = settings
        self.root = settings.artifacts_dir or artifacts.default_dir()
        self._arts: dict[tuple[str, str, tuple], Artifacts | None] = {}
        self._why: dict[tuple[str, str, tuple], str] = {}
        self._missing_since: dict[tuple[str, str, tuple], float] = {}
        self._embedder: Embedder | None = None
        self._lock = threading.Lock()

    @property
    def embedder(self) -> Embedder:
        with self._lock:
            if self._embedder is None:
                self._embedder = Embedder.from_settings(self.settings)
            return self._embedder

    @staticmethod
    def _key(wf: WorkflowDef, pool: PoolSpec) -> tuple[str, str, tuple]:
        return (pool.family, wf.id, tuple(s.candidates for s in wf.llm_stages))

    def loaded(self, wf: WorkflowDef, pool: PoolSpec) -> bool:
        """Whether `artifacts` answers without loading (loading reads files: not on the
        event loop)."""
        key = self._key(wf, pool)
        return key in self._arts and not self._stale(key)

    def _stale(self, key: tuple[str, str, tuple]) -> bool:
        """A missing artifact is looked for again after RETRY_S: `aragog-routing build` may
        have made it since (no router restart needed)."""
        since = self._missing_since.get(key)
        return since is not None and time.monotonic() - since > RETRY_S

    def artifacts(self, wf: WorkflowDef, pool: PoolSpec) -> Artifacts | None:
        key = self._key(wf, pool)
        if key not in self._arts or self._stale(key):
            art, why = artifacts.load(self.root, pool, wf)
            if art is None:
                log.warning("routing_artifacts_unavailable", workflow=wf.id, family=pool.family,
                            reason=why)
                self._missing_since[key] = time.monotonic()
            else:
                self._missing_since.pop(key, None)
            self._arts[key], self._why[key] = art, why
        return self._arts[key]

    def unavailable(self, wf: WorkflowDef, pool: PoolSpec) -> str:
        """Why `artifacts` gave None (after it did), with what to do about it."""
        why = self._why.get(self._key(wf, pool), "routing artifacts not loaded")
        return (f"{why}. Build them: aragog-routing profile, then aragog-routing build "
                "--profile (README, \"Your own workflow and data\"); or use a policy that needs "
                "none: largest, cheapest, any, static:<models>")

    def route(self, art: Artifacts, request_input: str) -> np.ndarray:
        """Predicted F(r) (blocking: call it off the event loop)."""
        x = art.features([request_input], self.embedder)[0]
        return art.router.route(x, art.space, self.settings.routing_budget)
