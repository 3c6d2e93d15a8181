"""What the cost-first round shows the kernel of a request's C(r): its cheapest plan first,
then the escalations that leave that plan's other stages alone.

Why: a work-conserving round that scores a placement by the throughput it adds now spends
the pool's bottleneck. An idle 70B takes a stage whose request could have run it on an 8B,
and a request that needs the 70B then waits; and ranking model by model, it puts a first
stage on the fast 3B even when that leaves only configurations with a 70B later. On the
llama3 pool that made aragog serve 0.78x what binding the cheapest configuration at arrival
serves (benchmarks/README.md, "Mixed workload, real arrivals").

So each round runs in two passes over the same queue (FIFO, the same kernel):
1. **cheapest**: every request offers only its cheapest configurations (GPU-seconds, the
   cost the router and the evaluation use). In the fluid limit this is the best any policy
   can do with F(r) on a pool whose bottleneck every trusted configuration loads as much.
2. **escalation**: into the capacity pass 1 left free (no queued request wanted it at its
   cheapest), a waiting stage may take a dearer model of its C(r), keeping its cheapest plan
   for every stage not ready now. An idle model costs nothing; one that queued stages want
   is never taken from them. This is where deciding per stage pays: the escalated stage
   runs now instead of waiting for its cheap model.
"""

from __future__ import annotations

import numpy as np
from aragog.common.pool import PoolSpec
from aragog.common.workflow import WorkflowDef
from aragog.routing.space import PROMPT_TOKENS
from aragog.scheduler_ext import WorkflowSpace

#: Relative tolerance under which two configurations cost the same (float sums).
SAME_COST = 1e-9


def stage_costs(workflow: WorkflowDef, pool: PoolSpec, space: WorkflowSpace) -> np.ndarray:
    """costs[s, k]: GPU-seconds of stage s on its candidate k (as aragog.routing.space prices
    a configuration: each model at its saturation batch, tensor-parallel GPUs included)."""
    costs = np.zeros(space.stage_models.shape, dtype=np.float64)
    for s, st in enumerate(workflow.llm_stages):
        for k, name in enumerate(st.candidates):
            costs[s, k] = pool.model(name).gpu_seconds(PROMPT_TOKENS, st.output_tokens)
    return costs


def cheapest(configs: np.ndarray, space: WorkflowSpace, costs: np.ndarray) -> np.ndarray:
    """The configurations of `configs` that cost least (ties all kept); `configs` itself when
    they all cost the same, so the kernel's cached counts of it stay warm."""
    if len(configs) <= 1:
        return configs
    total = np.zeros(len(configs), dtype=np.float64)
    for s in range(space.n_stages):
        total += costs[s][(configs // space.strides[s]) % space.radices[s]]
    low = total.min()
    keep = total <= low + abs(low) * SAME_COST
    if keep.all():
        return configs
    out = configs[keep]
    out.setflags(write=False)
    return out


def escalations(configs: np.ndarray, cheap: np.ndarray, space: WorkflowSpace,
                ready: list[int]) -> np.ndarray:
    """The configurations of `configs` that agree with some cheapest one on every stage not
    ready now: a dearer model for a stage placed now, the cheap plan for the rest."""
    if len(cheap) == len(configs):
        return cheap
    rest = np.zeros(len(configs), dtype=np.int64)
    rest_cheap = np.zeros(len(cheap), dtype=np.int64)
    for s in range(space.n_stages):
        if s in ready:
            continue
        stride, radix = space.strides[s], space.radices[s]
        rest += (configs // stride) % radix * stride
        rest_cheap += (cheap // stride) % radix * stride
    out = configs[np.isin(rest, rest_cheap)]
    out.setflags(write=False)
    return out
