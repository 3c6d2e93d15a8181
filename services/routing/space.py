"""A workflow's configuration space on a pool: costs, size ranks and the dominance order.

Configurations are numbered as in aragog.common.workflow (mixed radix over the LLM stages).
`ranks[c, s]` is the size rank of configuration c's model at stage s (0 = smallest
candidate), so c dominates c' when every stage's rank is at least as large; accuracy is
near-monotonic along that order, which the profiler and the router both exploit.

Cost is GPU-seconds per request (each stage's model at its saturation batch, tensor-parallel
GPUs included), the quantity serving spends and the evaluation reports. The paper orders by
FLOPs, which ignore how many GPUs a model holds and how well it batches; `flops` is kept for
the profiler's tie-breaks.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
from aragog.common.pool import PoolSpec
from aragog.common.workflow import WorkflowDef

PROMPT_TOKENS = 256
"""Prompt length assumed when pricing a stage (inputs are short; decode dominates)."""


@dataclasses.dataclass(frozen=True, eq=False)
class Space:
    workflow: WorkflowDef
    pool: PoolSpec
    ranks: np.ndarray  # [n, stages] int8
    flops: np.ndarray  # [n] relative FLOPs: sum of params_b x tokens per stage
    gpu_seconds: np.ndarray  # [n] GPU-seconds per request at each model's saturation batch

    @property
    def size(self) -> int:
        return len(self.flops)

    @functools.cached_property
    def largest(self) -> int:
        return int(np.flatnonzero((self.ranks == self.ranks.max(0)).all(1))[0])

    @functools.cached_property
    def relative_cost(self) -> np.ndarray:
        """GPU-seconds over the largest configuration's."""
        return self.gpu_seconds / self.gpu_seconds[self.largest]

    @property
    def cheapest(self) -> int:
        return int(np.argmin(self.gpu_seconds))

    @functools.cached_property
    def cost_order(self) -> np.ndarray:
        """Configurations from cheapest to most expensive in GPU-seconds (ties by index)."""
        return np.lexsort((np.arange(self.size), self.gpu_seconds))

    @functools.cached_property
    def dominates(self) -> np.ndarray:
        """dominates[i, j]: configuration i uses a model at least as large at every stage as j."""
        r = self.ranks.astype(np.int16)
        return (r[:, None, :] >= r[None, :, :]).all(-1)

    def models(self, c: int) -> list[str]:
        return self.workflow.config_models(int(c))


def build(wf: WorkflowDef, pool: PoolSpec) -> Space:
    llm = wf.llm_stages
    radices = [len(s.candidates) for s in llm]
    n = int(np.prod(radices))
    idx = np.arange(n)
    ranks = np.zeros((n, len(llm)), dtype=np.int8)
    flops = np.zeros(n)
    gpu = np.zeros(n)
    stride = 1
    for s, st in enumerate(llm):
        digit = (idx // stride) % len(st.candidates)
        stride *= len(st.candidates)
        by_size = sorted(st.candidates, key=lambda m: pool.model(m).params_b)
        rank_of = np.array([by_size.index(m) for m in st.candidates], dtype=np.int8)
        ranks[:, s] = rank_of[digit]
        tokens = PROMPT_TOKENS + st.output_tokens
        f = np.array([pool.model(m).params_b * tokens for m in st.candidates])
        g = np.array(
            [pool.model(m).gpu_seconds(PROMPT_TOKENS, st.output_tokens) for m in st.candidates]
        )
        flops += f[digit]
        gpu += g[digit]
    return Space(wf, pool, ranks, flops, gpu)
