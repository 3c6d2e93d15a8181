"""Which models the round may place on: a model whose calls keep failing is ejected.

Executors tell the scheduler when a model call itself failed (ReleaseStage's
`model_failed`); a success on the model resets its count. After `eject_after_failures`
failures in a row the model is ejected: the round gives it no free capacity for `eject_s`,
so stages go to the other models their C(r) allows (every configuration in F(r) is as
accurate as the largest: the answer degrades in cost, not accuracy). When the ejection
lapses the model is tried again; a further failure before any success ejects it for twice
as long, up to 30 times `eject_s` (as Envoy's outlier detection does).

A stage whose C(r) allows only an ejected model waits for the ejection to lapse, within
its acquire timeout. A model that fails some calls but not `eject_after_failures` in a row
(one bad instance of several) is never ejected; the retry of each failed stage avoids it
instead (Entry.avoid in service.py).
"""

from __future__ import annotations

import numpy as np
from prometheus_client import Counter, Gauge

EJECTED = Gauge("aragog_scheduler_model_ejected", "1 while a model is ejected from placement",
                ["model"])
EJECTIONS = Counter("aragog_scheduler_ejections_total",
                    "Models ejected after consecutive failed calls", ["model"])
FAILED_CALLS = Counter("aragog_scheduler_model_failures_total",
                       "Model calls executors reported as failed", ["model"])
MAX_EJECTION_FACTOR = 30


class ModelHealth:
    def __init__(self, names: list[str], eject_after_failures: int, eject_s: float):
        self.names = names
        self.after = eject_after_failures
        self.eject_s = eject_s
        self.failures = np.zeros(len(names), dtype=np.int64)  # in a row, since a success
        self.factor = np.ones(len(names), dtype=np.int64)  # the next ejection's multiple
        self.until = np.zeros(len(names), dtype=np.float64)  # ejected until (monotonic s)
        self._gauges = [EJECTED.labels(n) for n in names]

    def grow(self, name: str) -> None:
        """One model more in the pool (appended)."""
        self.names = [*self.names, name]
        self.failures = np.append(self.failures, 0)
        self.factor = np.append(self.factor, 1)
        self.until = np.append(self.until, 0.0)
        self._gauges.append(EJECTED.labels(name))

    def failed(self, model: int, now: float) -> bool:
        """A call on `model` failed; True if that ejects it now."""
        FAILED_CALLS.labels(self.names[model]).inc()
        self.failures[model] += 1
        if not self.after or self.failures[model] < self.after or self.until[model] > now:
            return False
        self.until[model] = now + self.eject_s * self.factor[model]
        self.factor[model] = min(self.factor[model] * 2, MAX_EJECTION_FACTOR)
        self.failures[model] = self.after - 1  # on probation: one more failure ejects it again
        EJECTIONS.labels(self.names[model]).inc()
        self._gauges[model].set(1)
        return True

    def succeeded(self, model: int) -> None:
        self.failures[model] = 0
        self.factor[model] = 1

    def ejected(self, now: float) -> np.ndarray:
        """A boolean mask of the models ejected at `now`."""
        out = self.until > now
        for i in np.flatnonzero(~out & (self.until > 0)):
            self._gauges[i].set(0)
        return out

    def seconds_left(self, now: float) -> dict[str, float]:
        return {self.names[i]: float(self.until[i] - now) for i in np.flatnonzero(self.until > now)}

    def next_lapse(self, now: float) -> float | None:
        """When the next ejection lapses (monotonic s), if any is in force."""
        live = self.until[self.until > now]
        return float(live.min()) if live.size else None
