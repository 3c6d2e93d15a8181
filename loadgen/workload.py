"""Request mixes: what the load generator sends (workflow, input, expected answer, policy).

One format for the Locust user and the open-loop runner, read from JSONL (one object per
line with keys workflow, input, and optionally expected, policy) or CSV (header with at
least workflow,input; optionally expected,policy). Other keys or columns (an item id, say)
are ignored. Bad lines raise ValueError naming the line.
"""

from __future__ import annotations

import csv
import dataclasses
import json
from collections.abc import Iterable, Mapping
from pathlib import Path

MAX_ITEMS = 200_000
FIELDS = ("workflow", "input", "expected", "policy")


@dataclasses.dataclass(frozen=True)
class WorkItem:
    """One request to send. expected None: correctness is not judged; policy None: the run's."""

    workflow: str
    input: str
    expected: str | None = None
    policy: str | None = None

    @classmethod
    def of(cls, item: WorkItem | Mapping[str, object] | Iterable[object]) -> WorkItem:
        """Accept a WorkItem, a mapping with the field names, or a (workflow, input[, expected
        [, policy]]) tuple."""
        if isinstance(item, WorkItem):
            return item
        if isinstance(item, Mapping):
            unknown = set(item) - {f.name for f in dataclasses.fields(cls)}
            if unknown:
                raise ValueError(f"unknown workload keys {sorted(unknown)}")
            fields = dict(item)
        else:
            values = list(item)
            if not 2 <= len(values) <= 4:
                raise ValueError("a workload tuple is (workflow, input[, expected[, policy]]), "
                                 f"got {values!r}")
            fields = dict(zip(("workflow", "input", "expected", "policy"), values, strict=False))
        wi = cls(**{k: (None if v is None else str(v)) for k, v in fields.items()})  # type: ignore[arg-type]
        if not wi.workflow or not wi.input:
            raise ValueError(f"workflow and input must be non-empty: {item!r}")
        return wi


def load_workload(path: str | Path) -> list[WorkItem]:
    """Read a .jsonl/.json (JSON lines) or .csv workload file."""
    path = Path(path)
    items: list[WorkItem] = []
    with path.open(newline="", encoding="utf-8-sig") as f:
        if path.suffix.lower() == ".csv":
            reader = csv.DictReader(f)
            if not reader.fieldnames or not {"workflow", "input"} <= set(reader.fieldnames):
                raise ValueError(f"{path}:1: CSV header needs workflow,input "
                                 "(optionally expected,policy)")
            rows: Iterable[tuple[int, object]] = (
                (reader.line_num, {k: (v or None) if k in ("expected", "policy") else v
                                   for k, v in row.items()}) for row in reader)
        else:
            rows = ((n, line) for n, line in enumerate(f, 1) if line.strip())
        for line, raw in rows:
            try:
                data = json.loads(raw) if isinstance(raw, str) else raw
                if not isinstance(data, Mapping):
                    raise ValueError("each line must be a JSON object")
                if None in data:
                    raise ValueError("more fields than the header has")
                items.append(WorkItem.of({k: v for k, v in data.items() if k in FIELDS}))
            except (ValueError, TypeError) as e:
                raise ValueError(f"{path}:{line}: {e}") from None
            if len(items) > MAX_ITEMS:
                raise ValueError(f"{path}: more than {MAX_ITEMS} items")
    if not items:
        raise ValueError(f"{path}: no workload items")
    return items
