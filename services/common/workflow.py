"""Workflow declarations: parse and validate YAML, and derive the configuration space.

A *configuration* assigns one candidate model to every LLM stage. Configurations are
numbered in mixed radix over the LLM stages in declaration order (stage 0 varies
fastest), which is the compact form F(r) and C(r) are stored in (int64 index arrays).
"""

from __future__ import annotations

import dataclasses
import functools
import re
import string
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import yaml

from aragog.common.bounds import clip, id_error, quote
from aragog.v1 import common_pb2

STAGE_RE = re.compile(r"[a-z][a-z0-9_]{0,63}")  # a stage name is also a {placeholder}
MAX_STAGES = 32
MAX_OUTPUT_TOKENS = 8192
MAX_DESCRIPTION = 1000  # characters
MAX_YAML_DEPTH = 8  # nested collections; a workflow needs 4 (stages, a stage, its candidates)


class WorkflowError(ValueError):
    """The workflow declaration is invalid; the message says where and how to fix it."""

    def __init__(self, message: str):
        super().__init__(clip(message))  # it may quote the declaration, and goes to clients


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that refuses anchors, aliases and deep nesting while it composes nodes,
    before any Python object is built.

    Aliases let a few hundred bytes stand for billions of values (the "billion laughs"): the
    parsed object shares them, but anything that walks it (str, a message, a stored copy)
    does not. Without aliases, what is built is proportional to the text, which the router
    caps (ARAGOG_MAX_WORKFLOW_BYTES). Both the composer and the constructor recurse once per
    nesting level, so deep nesting would end in RecursionError.
    """

    def __init__(self, stream: str):
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):  # type: ignore[no-untyped-def]
        event = self.peek_event()
        line = event.start_mark.line + 1
        if isinstance(event, yaml.AliasEvent) or event.anchor is not None:
            raise WorkflowError(
                f"workflow YAML line {line}: anchors and aliases (&name, *name) are not "
                "accepted; write the value out"
            )
        if self._depth >= MAX_YAML_DEPTH:
            raise WorkflowError(
                f"workflow YAML line {line}: nested deeper than {MAX_YAML_DEPTH} levels; a "
                "workflow is a mapping of stages, each a mapping of scalars and lists"
            )
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def load_yaml(text: str) -> Any:
    """The YAML document in `text`, within _BoundedLoader's limits (WorkflowError if not)."""
    loader = None
    try:
        loader = _BoundedLoader(text)  # its reader refuses control characters right here
        return loader.get_single_data()
    except WorkflowError:
        raise
    except (yaml.YAMLError, ValueError) as e:  # ValueError: e.g. an int of 5000 digits
        raise WorkflowError(f"workflow YAML does not parse: {e}") from e
    finally:
        if loader is not None:
            loader.dispose()


@dataclasses.dataclass(frozen=True)
class StageDef:
    name: str
    kind: str  # "llm" or "tool"
    depends_on: tuple[str, ...]
    prompt: str
    candidates: tuple[str, ...]
    output_tokens: int

    def render(self, request_input: str, outputs: Mapping[str, str]) -> str:
        """The stage's prompt: its template filled with the input and its dependencies' outputs."""
        return self.prompt.format_map({"input": request_input, **{d: outputs[d] for d in self.depends_on}})


@dataclasses.dataclass(frozen=True)
class WorkflowDef:
    """A validated workflow. `llm_stages` fixes the order of the configuration's digits."""

    id: str
    description: str
    stages: tuple[StageDef, ...]
    per_workflow: tuple[str, ...]

    @property
    def llm_stages(self) -> list[StageDef]:
        return [s for s in self.stages if s.kind == "llm"]

    def stage(self, name: str) -> StageDef:
        for s in self.stages:
            if s.name == name:
                return s
        raise KeyError(name)

    def llm_index(self, name: str) -> int:
        """Position of an LLM stage among the configuration's digits."""
        for i, s in enumerate(self.llm_stages):
            if s.name == name:
                return i
        raise KeyError(name)

    @property
    def sink(self) -> StageDef:
        """The stage no other stage depends on: its output is the answer."""
        used = {d for s in self.stages for d in s.depends_on}
        return [s for s in self.stages if s.name not in used][0]

    def depths(self) -> dict[str, int]:
        """Longest path from a source to each stage (sources have depth 0)."""
        depth: dict[str, int] = {}
        for s in self.stages:  # declaration order is topological (validated)
            depth[s.name] = 1 + max((depth[d] for d in s.depends_on), default=-1)
        return depth

    @property
    def num_configurations(self) -> int:
        return int(np.prod([len(s.candidates) for s in self.llm_stages], dtype=object))

    def config_index(self, models: Sequence[str]) -> int:
        """Index of the configuration giving models[i] to the i-th LLM stage."""
        llm = self.llm_stages
        if len(models) != len(llm):
            raise WorkflowError(
                f"workflow {self.id} has {len(llm)} LLM stages "
                f"({', '.join(s.name for s in llm)}); got {len(models)} models"
            )
        index, stride = 0, 1
        for s, m in zip(llm, models, strict=True):
            if m not in s.candidates:
                raise WorkflowError(
                    f"model {quote(m)} is not a candidate of stage {s.name!r} "
                    f"(candidates: {', '.join(s.candidates)})"
                )
            index += s.candidates.index(m) * stride
            stride *= len(s.candidates)
        return index

    def config_models(self, index: int) -> list[str]:
        out = []
        for s in self.llm_stages:
            out.append(s.candidates[index % len(s.candidates)])
            index //= len(s.candidates)
        return out

    def to_proto(self) -> common_pb2.Workflow:
        kinds = {"llm": common_pb2.STAGE_KIND_LLM, "tool": common_pb2.STAGE_KIND_TOOL}
        return common_pb2.Workflow(
            id=self.id,
            description=self.description,
            per_workflow_models=list(self.per_workflow),
            stages=[
                common_pb2.Stage(
                    name=s.name,
                    kind=kinds[s.kind],
                    depends_on=list(s.depends_on),
                    prompt_template=s.prompt,
                    candidate_models=list(s.candidates),
                    output_tokens=s.output_tokens,
                )
                for s in self.stages
            ],
        )

    def to_yaml(self) -> str:
        data: dict[str, Any] = {"id": self.id, "description": self.description, "stages": []}
        for s in self.stages:
            d: dict[str, Any] = {"name": s.name, "kind": s.kind, "prompt": s.prompt}
            if s.depends_on:
                d["depends_on"] = list(s.depends_on)
            if s.kind == "llm":
                d["candidates"] = list(s.candidates)
                d["output_tokens"] = s.output_tokens
            data["stages"].append(d)
        if self.per_workflow:
            data["per_workflow"] = list(self.per_workflow)
        return yaml.safe_dump(data, sort_keys=False)


@functools.cache
def stage_ancestry(wf: WorkflowDef) -> dict[str, tuple[int, ...]]:
    """LLM stage -> the configuration digits (LLM stage indices) its output depends on: its
    own and its ancestors'. Configurations that agree on those share the stage's output,
    which is what lets a profiler run shared prefixes of the DAG once."""
    llm = {s.name: i for i, s in enumerate(wf.llm_stages)}
    closure: dict[str, set[int]] = {}
    for s in wf.stages:
        deps = set().union(*(closure[d] for d in s.depends_on)) if s.depends_on else set()
        closure[s.name] = deps | ({llm[s.name]} if s.name in llm else set())
    return {name: tuple(sorted(ix)) for name, ix in closure.items() if name in llm}


def _placeholders(template: str) -> set[str]:
    """Names a template substitutes. Only plain `{name}` fields are allowed: a format spec,
    conversion, attribute or index could fail (or allocate without bound) at run time."""
    try:
        fields = list(string.Formatter().parse(template))
    except ValueError as e:
        raise WorkflowError(f"prompt template {quote(template)}: {e}") from e
    names = set()
    for _, name, spec, conversion in fields:
        if name is None:
            continue
        if spec or conversion or not name or any(c in name for c in ".[]"):
            field = f"{name}{'!' + conversion if conversion else ''}{':' + spec if spec else ''}"
            raise WorkflowError(
                f"prompt template {quote(template)}: placeholder {{{clip(field, 40)}}} must be a "
                "plain {input} or {<stage name>} (no format spec, conversion, attribute or index)"
            )
        names.add(name)
    return names


def parse_workflow(text: str, pool_models: Sequence[str] | None = None) -> WorkflowDef:
    """Parse and validate a YAML declaration; `pool_models` (if given) bounds the candidates."""
    data = load_yaml(text)
    if not isinstance(data, Mapping):
        raise WorkflowError("workflow YAML must be a mapping with `id` and `stages`")
    wid = data.get("id")
    bad_id = id_error("workflow `id`", wid)
    if bad_id:
        raise WorkflowError(bad_id)
    description = data.get("description")
    if description is None:
        description = ""
    if not isinstance(description, str) or len(description) > MAX_DESCRIPTION:
        raise WorkflowError(
            f"workflow {wid}: `description` must be a string of at most {MAX_DESCRIPTION} "
            "characters"
        )
    raw_stages = data.get("stages")
    if not isinstance(raw_stages, list) or not raw_stages:
        raise WorkflowError(f"workflow {wid}: `stages` must be a non-empty list")
    if len(raw_stages) > MAX_STAGES:
        raise WorkflowError(f"workflow {wid}: at most {MAX_STAGES} stages")
    stages: list[StageDef] = []
    seen: set[str] = set()
    for i, raw in enumerate(raw_stages):
        where = f"workflow {wid}, stage #{i}"
        if not isinstance(raw, Mapping):
            raise WorkflowError(f"{where}: must be a mapping")
        name = raw.get("name")
        if not isinstance(name, str) or not STAGE_RE.fullmatch(name):
            raise WorkflowError(f"{where}: `name` must match {STAGE_RE.pattern}")
        where = f"workflow {wid}, stage {name!r}"
        if name in seen or name == "input":
            raise WorkflowError(f"{where}: duplicate or reserved name")
        kind = raw.get("kind", "llm")
        if kind not in ("llm", "tool"):
            raise WorkflowError(f"{where}: `kind` must be llm or tool, not {quote(kind)}")
        deps = raw.get("depends_on", []) or []
        if not isinstance(deps, list) or not all(isinstance(d, str) for d in deps):
            raise WorkflowError(f"{where}: `depends_on` must be a list of stage names")
        for d in deps:
            if d not in seen:
                raise WorkflowError(
                    f"{where}: depends on {quote(d)}, which is not declared before it "
                    "(declare stages in dependency order; cycles are not allowed)"
                )
        prompt = raw.get("prompt", "")
        if not isinstance(prompt, str) or not prompt:
            raise WorkflowError(f"{where}: `prompt` must be a non-empty template")
        unknown = _placeholders(prompt) - {"input", *deps}
        if unknown:
            raise WorkflowError(
                f"{where}: prompt uses {quote(sorted(unknown))}; only {{input}} and dependencies "
                f"({', '.join(deps) or 'none'}) can be referenced"
            )
        candidates: tuple[str, ...] = ()
        output_tokens = 0
        if kind == "llm":
            cands = raw.get("candidates")
            if cands is None and pool_models is not None:
                cands = list(pool_models)  # left to the pool: every model may serve the stage
            if not isinstance(cands, list) or not cands or not all(isinstance(c, str) for c in cands):
                raise WorkflowError(
                    f"{where}: `candidates` must be a non-empty list of models "
                    "(or omitted, to let every model of the pool serve the stage)"
                )
            if len(set(cands)) != len(cands):
                raise WorkflowError(f"{where}: `candidates` has duplicates")
            if pool_models is not None:
                missing = [c for c in cands if c not in pool_models]
                if missing:
                    raise WorkflowError(
                        f"{where}: models {quote(missing)} are not in the pool "
                        f"({', '.join(pool_models)})"
                    )
            candidates = tuple(cands)
            output_tokens = raw.get("output_tokens", 128)
            if not isinstance(output_tokens, int) or not 1 <= output_tokens <= MAX_OUTPUT_TOKENS:
                raise WorkflowError(f"{where}: `output_tokens` must be 1..{MAX_OUTPUT_TOKENS}")
        stages.append(StageDef(name, kind, tuple(deps), prompt, candidates, output_tokens))
        seen.add(name)
    used = {d for s in stages for d in s.depends_on}
    sinks = [s.name for s in stages if s.name not in used]
    if len(sinks) != 1:
        raise WorkflowError(
            f"workflow {wid}: exactly one stage must be the answer (no dependents); found {sinks}"
        )
    if not any(s.kind == "llm" for s in stages):
        raise WorkflowError(f"workflow {wid}: needs at least one llm stage")
    per = data.get("per_workflow", []) or []
    if not isinstance(per, list) or not all(isinstance(m, str) for m in per):
        raise WorkflowError(f"workflow {wid}: `per_workflow` must be a list of models")
    wf = WorkflowDef(wid, description, tuple(stages), tuple(per))
    if per:
        wf.config_index(per)  # validates count and membership
    return wf
