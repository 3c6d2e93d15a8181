"""Workflow declarations shipped with Aragog (YAML, one file per workflow id)."""

from __future__ import annotations

import importlib.resources
from collections.abc import Sequence

BENCHMARKED = ("self-refine", "text-to-sql", "voting", "task-decomposition")
"""The paper's workflow shapes, each with a generated benchmark (aragog.emulation)."""


def shipped_yaml(wid: str) -> str:
    """The YAML text of a shipped workflow."""
    path = importlib.resources.files("aragog.workflows").joinpath(f"{wid}.yaml")
    if not path.is_file():
        raise KeyError(f"no shipped workflow {wid!r}")
    return path.read_text("utf-8")


def load(wid: str, pool_models: Sequence[str]):  # -> WorkflowDef
    """A shipped workflow resolved against a pool (stages without candidates take every model)."""
    from aragog.common.workflow import parse_workflow

    return parse_workflow(shipped_yaml(wid), pool_models)
