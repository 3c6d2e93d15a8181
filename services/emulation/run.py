"""Run a workflow in-process on the emulated models' answer function (no Triton, no sleep).

The profiler and the calibration use it; the executor runs the same prompts through Triton.
A stage's output depends only on its own model and its ancestors' models, so outputs are
cached by (stage, those models): configurations sharing a prefix of the DAG share its work.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

from aragog.common.workflow import WorkflowDef
from aragog.emulation.answer import answer

StageCache = dict[tuple[str, tuple[str, ...]], str]


@functools.cache
def _ancestry(wf: WorkflowDef) -> dict[str, tuple[int, ...]]:
    """LLM stage -> configuration digits (LLM stage indices) its output depends on."""
    llm = {s.name: i for i, s in enumerate(wf.llm_stages)}
    closure: dict[str, set[int]] = {}
    for s in wf.stages:
        deps = set().union(*(closure[d] for d in s.depends_on)) if s.depends_on else set()
        closure[s.name] = deps | ({llm[s.name]} if s.name in llm else set())
    return {name: tuple(sorted(ix)) for name, ix in closure.items() if name in llm}


class Runner:
    """Runs configurations of one request, counting the stage executions it really made."""

    def __init__(self, wf: WorkflowDef, request_input: str):
        self.wf = wf
        self.input = request_input
        self.cache: StageCache = {}
        self.executions = 0
        self._ancestry = _ancestry(wf)

    def missing(self, models: Sequence[str]) -> int:
        """Stage executions `answer(models)` would still have to make."""
        return sum(
            (st, tuple(models[i] for i in anc)) not in self.cache
            for st, anc in self._ancestry.items()
        )

    def answer(self, models: Sequence[str]) -> str:
        """The final answer of the configuration giving models[i] to the i-th LLM stage."""
        outputs: dict[str, str] = {}
        llm = 0
        for st in self.wf.stages:
            prompt = st.render(self.input, outputs)
            if st.kind != "llm":
                outputs[st.name] = prompt
                continue
            key = (st.name, tuple(models[i] for i in self._ancestry[st.name]))
            out = self.cache.get(key)
            if out is None:
                out = self.cache[key] = answer(models[llm], st.name, prompt)
                self.executions += 1
            outputs[st.name] = out
            llm += 1
        return outputs[self.wf.sink.name]
