"""The EMULATED latency model of one model instance, on any clock.

Continuous batching as vLLM-class servers do it: batches join and leave the running batch at
any time, and each decode step takes the profile's per-token time at the current batch size.
A batch alone on the instance takes exactly `ModelProfile.batch_latency_s`; batches that
overlap slow each other down as one larger batch would. Prefill is charged to the joining
batch only (it does not pause the others' decode), a simplification.

The clock is the caller's: the emulated Triton pool (aragog.pool.emulated) drives it with
wall time and sleeps, the simulator (aragog.sim) with simulated time and events. Both run
this one model, so a simulated pool is the emulated pool, not a second approximation of it.
"""

from __future__ import annotations

from collections.abc import Hashable

from aragog.common.pool import ModelProfile

def prompt_tokens(prompt: str) -> int:
    """Token count of a prompt, estimated as its whitespace-separated words (an English word is
    ~1.3 tokens; the profile's prefill term is small next to decode, so this is close enough)."""
    return len(prompt.split())


DONE = 1e-6  # decode tokens left under which a batch has finished (float drift)


class ContinuousBatching:
    """One instance's running batch. Times are in the caller's seconds (scaled by
    `time_scale`, as the pool's profiles are); `now` is whatever clock the caller keeps."""

    def __init__(self, profile: ModelProfile, time_scale: float, now: float = 0.0):
        self.profile = profile
        self.scale = time_scale
        self.active = 0  # requests decoding now
        self.load = 0  # requests decoding or in prefill here (callers balance on it)
        self._remaining: dict[Hashable, tuple[float, int]] = {}  # batch -> (tokens left, size)
        self._last = now

    def prefill_s(self, batch: int, prompt_tokens: int) -> float:
        """Time a joining batch spends in prefill before it decodes."""
        p = self.profile
        return (p.ttft_ms / 1000.0 + batch * prompt_tokens * p.prefill_ms_per_token / 1000.0) \
            * self.scale

    def step_s(self) -> float:
        """Time of one decode step at the current batch size."""
        p, b = self.profile, self.active
        slow = 1.0 + p.batch_slowdown * (min(b, p.saturation_batch) - 1)
        return p.tpot_ms / 1000.0 * slow * max(1.0, b / p.saturation_batch) * self.scale

    def advance(self, now: float) -> None:
        """Charge the time since the last change at the batch size that held during it."""
        if self.active and now > self._last:
            steps = (now - self._last) / self.step_s()
            for key, (left, size) in self._remaining.items():
                self._remaining[key] = (left - steps, size)
        self._last = max(self._last, now)

    def join(self, key: Hashable, batch: int, output_tokens: int, now: float) -> None:
        """`batch` requests (prefill done) start decoding `output_tokens` tokens now."""
        self.advance(now)
        self._remaining[key] = (float(output_tokens), batch)
        self.active += batch

    def leave(self, key: Hashable, now: float) -> None:
        self.advance(now)
        _, size = self._remaining.pop(key)
        self.active -= size

    def left_s(self, key: Hashable) -> float:
        """Time until the batch finishes if the running batch stays as it is."""
        return max(0.0, self._remaining[key][0]) * self.step_s()

    def finished(self) -> list[Hashable]:
        """The batches that have decoded all their tokens (as of the last advance), or have
        less left than a nanosecond's worth (float drift, which a clock cannot resolve)."""
        step = self.step_s()
        return [k for k, (left, _) in self._remaining.items()
                if left <= DONE or left * step < 1e-9]

    def next_finish_s(self) -> float | None:
        """Time until the first running batch finishes, None if none runs."""
        if not self._remaining:
            return None
        return max(0.0, min(left for left, _ in self._remaining.values())) * self.step_s()
