"""Leases: the capacity the scheduler has handed out, and the occupancy it makes per model.

A lease is one stage's place on one model, held by the executor running it until it
releases it or stops renewing it (then it expires). Occupancy is always the count of leases
held per model, so free capacity = capacity - occupancy. Redis keeps a copy of every lease
(`{ns}:leases`, written through the group commit) so a restarted or standby scheduler
reloads them.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator

import numpy as np


@dataclasses.dataclass
class Lease:
    lease_id: str
    model: int  # index in the pool
    request_id: str
    stage: str
    executor_id: str
    expires: float  # wall-clock time (time.time()): leases outlive a scheduler process

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, raw: bytes | str) -> Lease:
        return cls(**json.loads(raw))


class Leases:
    """The leases held, by id, and the occupancy they make per model."""

    def __init__(self, models: int):
        self.held: dict[str, Lease] = {}
        self.occupancy = np.zeros(models, dtype=np.int32)

    def grow(self) -> None:
        """One model more in the pool (appended: the others keep their index)."""
        self.occupancy = np.append(self.occupancy, 0).astype(np.int32)

    def __contains__(self, lease_id: str) -> bool:
        return lease_id in self.held

    def __iter__(self) -> Iterator[str]:
        return iter(self.held)

    def __len__(self) -> int:
        return len(self.held)

    def get(self, lease_id: str) -> Lease | None:
        return self.held.get(lease_id)

    def add(self, lease: Lease) -> None:
        self.held[lease.lease_id] = lease
        self.occupancy[lease.model] += 1

    def pop(self, lease_id: str) -> Lease | None:
        lease = self.held.pop(lease_id, None)
        if lease is not None:
            self.occupancy[lease.model] -= 1
        return lease

    def of_request(self, rid: str) -> list[Lease]:
        return [lz for lz in self.held.values() if lz.request_id == rid]

    def expired(self, now: float) -> list[Lease]:
        return [lz for lz in self.held.values() if lz.expires < now]

    def requests(self) -> set[str]:
        return {lz.request_id for lz in self.held.values()}
