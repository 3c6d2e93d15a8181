"""Run a workflow in-process on the EMULATED models' answer function (no Triton, no sleep).

The profiler's fast path on the generated benchmarks, and the calibration, use it; the
executor (and the profiler's serving path) run the same prompts through Triton. A stage's
output depends only on its own model and its ancestors' models, so outputs are cached by
(stage, those models): configurations sharing a prefix of the DAG share its work.
"""

from __future__ import annotations

from collections.abc import Sequence

from aragog.common.workflow import WorkflowDef, stage_ancestry
from aragog.emulation.answer import answer

StageCache = dict[tuple[str, tuple[str, ...]], str]


class Runner:
    """Runs configurations of one request, counting the stage executions it really made
    (`executed`: model, stage and prompt of each, for the profiler's cost accounting)."""

    def __init__(self, wf: WorkflowDef, request_input: str):
        self.wf = wf
        self.input = request_input
        self.cache: StageCache = {}
        self.executed: list[tuple[str, str, str]] = []
        self._ancestry = stage_ancestry(wf)

    @property
    def executions(self) -> int:
        return len(self.executed)

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
                self.executed.append((models[llm], st.name, prompt))
            outputs[st.name] = out
            llm += 1
        return outputs[self.wf.sink.name]
