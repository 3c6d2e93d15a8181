"""Serving stands on nothing it does not need: importing a service loads neither the
emulation nor the training side (import-linter checks the same statically: make lint-imports)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

SERVICES = ["aragog.router.service", "aragog.router.__main__", "aragog.scheduler.__main__",
            "aragog.executor.__main__", "aragog.load_monitor.__main__"]


@pytest.mark.parametrize("module", SERVICES)
def test_a_service_imports_no_emulation_or_training(module):
    code = (f"import sys, json, {module}; "
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith("
            "('aragog.emulation', 'aragog.training', 'aragog.loadgen', 'aragog.sim')))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout) == []


def test_a_router_with_its_embedding_exported_imports_no_torch():
    """torch exports the embedding model once (training side); serving reads the ONNX file."""
    from aragog.routing.embedding import Embedder

    Embedder()  # makes the export if this machine has none yet
    code = ("import sys, json, aragog.router.service; from aragog.routing.embedding import Embedder; "
            "Embedder().encode(['How many orders shipped?']); "
            "print(json.dumps(sorted(m for m in ('torch', 'transformers', 'sentence_transformers', "
            "'sklearn') if m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout) == []


def test_only_the_store_knows_redis_keys():
    """One module owns every Redis record (aragog.common.store, typed): a service that
    reached into raw keys or the client would bypass its scripts' checks (a request that
    ended is never written back) and spread the key layout over the code."""
    import re
    from pathlib import Path

    import aragog

    root = Path(aragog.__file__).parent
    raw = re.compile(r"\bstore\.(r|k)\b|\bself\.(r|k)\.")
    offenders = [f"{path.relative_to(root)}:{n}: {line.strip()}"
                 for path in sorted(root.rglob("*.py"))
                 if path.relative_to(root).parts[0] in ("router", "scheduler", "executor",
                                                       "load_monitor", "policies")
                 for n, line in enumerate(path.read_text().splitlines(), 1)
                 if raw.search(line)]
    assert not offenders, "\n".join(offenders)
