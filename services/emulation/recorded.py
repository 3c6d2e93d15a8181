"""RECORDED engines: real outcomes, EMULATED answers (RouteLLM's GPT-4 and Mixtral on MMLU).

The shipped file `data/routellm-mmlu.csv.gz` (source, license and compaction: data/README.md)
records, for each of MMLU's 14,042 test prompts, whether Mixtral-8x7B-Instruct and GPT-4
(1106-preview) answered it correctly: measured by RouteLLM on the real models. The pool's
recorded models (`MODELS`, served by the pool file `mmlu-recorded`) answer from it, so
routing between them is decided on real outcomes, while their latency stays emulated.

The release says *whether* a model was right, not which option is right. Each prompt
therefore gets a **designated correct letter**, a seeded deterministic function of its
normalised text (`designated_letter`), and one designated wrong letter; a recorded model
answers the first where the real model was correct and the second where it was not. The
correctness is real; the letters are not, and two wrong models always give the same wrong
letter here (which wrong option a real model chose is not recorded).

A prompt is found when it carries a recorded MMLU prompt exactly (after normalisation:
surrounding whitespace of the text and of each line removed), as the whole text, or as whole
lines of it, the first of which may follow a stage template's `Label: ` (as
`answer.find_item` finds generated inputs). The lookup hashes candidate texts against an
index (O(lines x answer lines) hash look-ups per prompt, never a scan of the records).
Candidates start only at lines that begin a recorded prompt and end only at lines that end
one, so most prompts cost a few set look-ups. Prompts recorded twice with different outcomes
(4 of them, in two subjects) answer from the first record.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import functools
import gzip
import hashlib
import importlib.resources
import json
import sys

from aragog.emulation.generate import LETTERS, unit

DATA = "data/routellm-mmlu.csv.gz"
WEAK, STRONG = "mixtral-8x7b", "gpt-4-1106"
MODELS = (WEAK, STRONG)
"""The recorded models, weak first: the names the pool file `mmlu-recorded` serves."""
SEED = "routellm-mmlu/1"
"""Seeds the designated letters; changing it changes every record's `expected`."""


@dataclasses.dataclass(frozen=True)
class Record:
    id: str  # mmlu-<subject>-<row within the subject>
    subject: str
    prompt: str
    weak_correct: bool  # Mixtral-8x7B-Instruct-v0.1, as RouteLLM measured it
    strong_correct: bool  # gpt-4-1106-preview, likewise

    def correct(self, model: str) -> bool:
        return self.strong_correct if model == STRONG else self.weak_correct


def normalise(text: str) -> str:
    """The text a prompt is matched by: outer whitespace of the text and of each line removed."""
    return "\n".join(line.strip() for line in text.strip().splitlines())


def _key(normalised: str) -> bytes:
    return hashlib.blake2b(normalised.encode("utf-8"), digest_size=16).digest()


@functools.cache
def records() -> tuple[Record, ...]:
    """Every recorded row, in the file's order (subjects alphabetically, then RouteLLM's)."""
    path = importlib.resources.files("aragog.emulation").joinpath(DATA)
    with path.open("rb") as raw, gzip.open(raw, "rt", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    out, seen = [], {}
    for r in rows:
        k = seen[r["subject"]] = seen.get(r["subject"], -1) + 1
        out.append(Record(f"mmlu-{r['subject']}-{k:04d}", r["subject"], r["prompt"],
                          r["mixtral_correct"] == "1", r["gpt4_correct"] == "1"))
    return tuple(out)


@functools.cache
def _index() -> tuple[dict[bytes, Record], frozenset[str], frozenset[str]]:
    """Hash of each normalised prompt -> its first record; the first and last lines prompts
    start and end with (where a prompt embedded in a longer text can begin and end)."""
    idx: dict[bytes, Record] = {}
    firsts, lasts = set(), set()
    for r in records():
        text = normalise(r.prompt)
        idx.setdefault(_key(text), r)
        lines = text.split("\n")
        firsts.add(lines[0])
        lasts.add(lines[-1])
    return idx, frozenset(firsts), frozenset(lasts)


def find(prompt: str) -> Record | None:
    """The recorded MMLU prompt `prompt` carries (see the module docstring), or None."""
    idx, firsts, lasts = _index()
    text = normalise(prompt)
    hit = idx.get(_key(text))
    if hit is not None:
        return hit
    lines = text.split("\n")
    ends = [j for j, line in enumerate(lines) if line in lasts]
    if not ends:
        return None
    for i, line in enumerate(lines):
        _, sep, rest = line.partition(": ")
        for head in (line, rest.strip()) if sep else (line,):
            if head not in firsts:
                continue
            for j in ends:
                if j > i and (hit := idx.get(_key("\n".join([head, *lines[i + 1 : j + 1]])))):
                    return hit
    return None


def designated_letter(prompt: str) -> str:
    """The prompt's designated correct option: seeded, deterministic, NOT MMLU's answer key
    (the release does not carry it)."""
    return LETTERS[int(unit(SEED, "correct", normalise(prompt)) * len(LETTERS))]


def wrong_letter(prompt: str) -> str:
    """The one wrong option every recorded model that got `prompt` wrong answers."""
    right = designated_letter(prompt)
    others = [c for c in LETTERS if c != right]
    return others[int(unit(SEED, "wrong", normalise(prompt)) * len(others))]


def answer(model: str, prompt: str) -> str | None:
    """What recorded `model` answers to `prompt`: the designated letter if the real model was
    correct on the MMLU prompt it carries, else the wrong letter; None if `model` is not a
    recorded model or the prompt carries no recorded MMLU prompt."""
    if model not in MODELS:
        return None
    rec = find(prompt)
    if rec is None:
        return None
    return designated_letter(rec.prompt) if rec.correct(model) else wrong_letter(rec.prompt)


def dataset(out: str | None = None) -> list[dict]:
    """The recorded prompts as a dataset ({"id", "input", "expected", "subject"} per record;
    `expected` is the designated letter). Written to `out` if given as the JSONL datasets
    aragog-routing profiles (aragog.training.dataset): id, input, expected, the subject
    being in the id, as that format has no other fields."""
    rows = [{"id": r.id, "input": r.prompt, "expected": designated_letter(r.prompt),
             "subject": r.subject} for r in records()]
    if out:
        with open(out, "w", encoding="utf-8") as f:
            for row in rows:
                line = {k: row[k] for k in ("id", "input", "expected")}
                f.write(json.dumps(line) + "\n")  # ASCII: no U+2028 inside a line
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Write the recorded MMLU prompts as a JSONL dataset.")
    p.add_argument("--out", required=True, help="JSONL file to write")
    args = p.parse_args(argv)
    print(f"{args.out}: {len(dataset(args.out))} records", file=sys.stderr)


if __name__ == "__main__":
    main()
