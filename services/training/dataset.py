"""A user's dataset: the requests a workflow is profiled and its router trained on.

JSONL, one object per line:

    {"id": "q-0001", "input": "How many orders shipped in May?", "expected": "412"}

- `id`: unique, 1-128 characters, no control characters;
- `input`: the workflow's input (a non-empty string, what `{input}` in the prompts becomes);
- `expected` (optional): the reference answer, for graders that compare with one;
- `split` (optional): `train` (profiling and training) or `test` (held out for evaluation).

Split rule where a line has no `split`: a request is in `train` when
sha256("<seed>\\0<id>"), read as a number in [0, 1), is below the training share (default
0.7, seed 0): it depends on the id alone, so adding or reordering lines never moves another
request between the splits.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import unicodedata

TRAIN_SHARE = 0.7
SPLIT_SEED = 0
MAX_ID_CHARS = 128
MAX_LINE_BYTES = 1 << 20
MAX_RECORDS = 1_000_000


class DatasetError(ValueError):
    """The dataset cannot be used; the message names the file, the line and the fix."""


@dataclasses.dataclass(frozen=True)
class Record:
    id: str
    input: str
    expected: str | None
    split: str  # "train" or "test"
    line: int = 0  # line of the file (1-based), for messages; 0 when not from a file


def split_of(rid: str, seed: int = SPLIT_SEED, train_share: float = TRAIN_SHARE) -> str:
    h = hashlib.sha256(f"{seed}\0{rid}".encode()).digest()
    return "train" if int.from_bytes(h[:8], "big") / 2.0**64 < train_share else "test"


def _has_control(text: str) -> bool:
    return any(unicodedata.category(c) == "Cc" for c in text)


def parse_line(text: str, line: int, where: str, seed: int, train_share: float) -> Record:
    at = f"{where} line {line}"
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise DatasetError(f"{at}: not a JSON object ({e.msg} at column {e.colno})") from None
    if not isinstance(obj, dict):
        raise DatasetError(f"{at}: each line must be a JSON object with `id` and `input`")
    rid = obj.get("id")
    if isinstance(rid, int) and not isinstance(rid, bool):
        rid = str(rid)
    if not isinstance(rid, str) or not 1 <= len(rid) <= MAX_ID_CHARS or _has_control(rid):
        raise DatasetError(
            f"{at}: `id` must be a string of 1-{MAX_ID_CHARS} characters without control characters")
    value = obj.get("input")
    if not isinstance(value, str) or not value.strip():
        raise DatasetError(
            f"{at} (id {rid!r}): `input` must be a non-empty string: the workflow's prompts "
            "take the input as {input}")
    expected = obj.get("expected")
    if isinstance(expected, bool) or not (expected is None or isinstance(expected, str | int | float)):
        raise DatasetError(f"{at} (id {rid!r}): `expected` must be a string or a number")
    split = obj.get("split")
    if split is None:
        split = split_of(rid, seed, train_share)
    elif split not in ("train", "test"):
        raise DatasetError(f"{at} (id {rid!r}): `split` must be train or test, not {split!r:.40}")
    unknown = sorted(set(obj) - {"id", "input", "expected", "split"})
    if unknown:
        raise DatasetError(
            f"{at} (id {rid!r}): unknown fields {unknown[:5]}; allowed: id, input, expected, split")
    return Record(rid, value, None if expected is None else str(expected), split, line)


def load(path: str, seed: int = SPLIT_SEED, train_share: float = TRAIN_SHARE,
         max_input_bytes: int = 65536) -> list[Record]:
    """The records of a JSONL file, validated; DatasetError names the first bad line."""
    if not 0.0 < train_share < 1.0:
        raise DatasetError(f"training share must be in (0, 1), not {train_share}")
    records: list[Record] = []
    seen: dict[str, int] = {}
    try:
        f = open(path, "rb")  # noqa: SIM115 (closed below; bytes so a bad encoding names its line)
    except OSError as e:
        raise DatasetError(f"cannot read dataset {path}: {e.strerror}") from None
    with f:
        for n, raw in enumerate(f, 1):
            if len(raw) > MAX_LINE_BYTES:
                raise DatasetError(f"{path} line {n}: longer than {MAX_LINE_BYTES} bytes")
            try:
                text = raw.decode("utf-8").strip()
            except UnicodeDecodeError:
                raise DatasetError(f"{path} line {n}: not UTF-8") from None
            if not text:
                continue
            rec = parse_line(text, n, path, seed, train_share)
            if len(rec.input.encode()) > max_input_bytes:
                raise DatasetError(
                    f"{path} line {n} (id {rec.id!r}): input is {len(rec.input.encode())} bytes; "
                    f"the router accepts at most {max_input_bytes} (ARAGOG_MAX_INPUT_BYTES)")
            if rec.id in seen:
                raise DatasetError(f"{path} line {n}: id {rec.id!r} repeats line {seen[rec.id]}")
            seen[rec.id] = n
            records.append(rec)
            if len(records) > MAX_RECORDS:
                raise DatasetError(f"{path}: more than {MAX_RECORDS} records")
    if not records:
        raise DatasetError(f"{path}: no records")
    if not any(r.split == "train" for r in records):
        raise DatasetError(f"{path}: no request is in the train split")
    return records


def digest(records: list[Record]) -> str:
    """Changes with any record's id, input, expected answer or split."""
    h = hashlib.sha256()
    for r in records:
        h.update(json.dumps([r.id, r.input, r.expected, r.split]).encode())
        h.update(b"\n")
    return h.hexdigest()[:16]


def from_benchmark(workflow: str) -> list[Record]:
    """A shipped GENERATED benchmark as a dataset (its own seeded split)."""
    from aragog.emulation.generate import benchmark

    return [Record(it.id, it.input, it.answer, it.split) for it in benchmark(workflow).items]
