"""Compact RouteLLM's MMLU outcomes into the copy the package ships (run once, by hand).

    python scripts/compact_routellm_mmlu.py ../shared/data/routellm-mmlu \
        services/emulation/data/routellm-mmlu.csv.gz

Input: the 57 `mmlu_<subject>.csv` files of lm-sys/RouteLLM `routellm/evals/mmlu/responses/`
(columns `prompt`, `mistralai/Mixtral-8x7B-Instruct-v0.1`, `gpt-4-1106-preview`, True/False).
Output: one gzipped CSV, columns subject, prompt, mixtral_correct, gpt4_correct (0/1), rows in
subject order then file order (a row's position in its subject is its id). Prompts are kept
byte for byte: the recorded engines look them up exactly. The gzip header carries no name or
time, so the same input gives the same bytes.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import pathlib
import sys

WEAK, STRONG = "mistralai/Mixtral-8x7B-Instruct-v0.1", "gpt-4-1106-preview"
COLUMNS = ("subject", "prompt", "mixtral_correct", "gpt4_correct")


def _bit(value: str, where: str) -> int:
    if value not in ("True", "False"):
        raise ValueError(f"{where}: expected True or False, got {value!r}")
    return int(value == "True")


def compact(src: pathlib.Path) -> bytes:
    files = sorted(src.glob("mmlu_*.csv"))
    if not files:
        raise FileNotFoundError(f"no mmlu_*.csv under {src}")
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(COLUMNS)
    for path in files:
        subject = path.stem.removeprefix("mmlu_")
        with path.open(newline="", encoding="utf-8") as f:
            for i, row in enumerate(csv.DictReader(f)):
                where = f"{path.name} row {i}"
                w.writerow([subject, row["prompt"], _bit(row[WEAK], where),
                            _bit(row[STRONG], where)])
    return gzip.compress(out.getvalue().encode("utf-8"), compresslevel=9, mtime=0)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("src", type=pathlib.Path, help="folder of RouteLLM's mmlu_*.csv files")
    p.add_argument("out", type=pathlib.Path, help="the .csv.gz to write")
    args = p.parse_args(argv)
    data = compact(args.src)
    args.out.write_bytes(data)
    print(f"{args.out}: {len(data):,} bytes", file=sys.stderr)


if __name__ == "__main__":
    main()
