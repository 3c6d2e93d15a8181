"""`aragog-pool` / `python -m aragog.pool`: serve the EMULATED model pool on a real Triton."""

from __future__ import annotations

import structlog

from aragog.common.settings import PoolSettings
from aragog.pool.emulated import serve


def main() -> None:
    try:
        serve(PoolSettings.for_service("aragog-pool"))
    except RuntimeError:  # a taken port, Triton dying: say so as a log line, exit non-zero
        structlog.get_logger().exception("pool_failed")
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
