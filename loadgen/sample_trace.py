"""Makes the shipped trace traces/sample.csv, so its provenance is reproducible.

    .venv/bin/python -m aragog.loadgen.sample_trace loadgen/traces/sample.csv

Bursty (MMPP: 1 req/s for ~8 s, then 8 req/s for ~3 s, alternating) over 80 s, all on the
shipped `chain3` workflow, seed 7: 211 rows, ids s0000... Timestamps are relative; the
trace reader also accepts absolute (Unix) ones.
"""

import sys

from aragog.loadgen.arrivals import mmpp, write_trace


def main(out: str) -> None:
    offsets = mmpp(rates=[1.0, 8.0], mean_dwell=[8.0, 3.0], duration=80.0, seed=7)
    write_trace(out, offsets, ["chain3"] * len(offsets), [f"s{i:04d}" for i in range(len(offsets))])
    print(f"{out}: {len(offsets)} arrivals over {offsets[-1]:.1f}s")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "sample.csv")
