"""StageRoute (Li & Li, "StageRoute: Dynamic LLM Routing with Deployment Constraints",
arXiv 2506.17254): which models to keep deployed, and how to route among them, learned from
the outcomes of the requests served.

Two stages, as in the paper:
- **Deployment**, at the start of each maintenance window: up to `M_max` models are kept
  deployed, chosen optimistically, by an upper confidence bound on each model's reward and
  a lower one on its cost (`choose_deployment`). The scheduler does it through the live
  pool (`ARAGOG_DEPLOYMENT_WINDOW_S`, aragog.scheduler.deployment.WindowDeployer): models
  left out are drained and unloaded, models chosen are loaded, and a model that arrives
  while the stack serves has no outcomes yet, so its bound is the most optimistic and it is
  deployed and tried at the next window.
- **Routing**, per request, among the models serving now: the budget-constrained linear
  program of the paper (maximise expected reward subject to the expected cost per request
  within the budget; `route_lp`, HiGHS through scipy), then a draw from its solution.

Here an arm is a model that serves every LLM stage of the request (a configuration with one
model throughout), the reward a request's outcome as the caller reports it (ReportOutcome,
0..1), the cost its GPU-seconds from the pool's profile. The profile knows costs, so their
lower bound is the cost itself; rewards are learned. `stageroute:<share>` sets the budget
per request as a share of the dearest arm's cost (default 0.5).
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence

import numpy as np
import scipy.optimize
from aragog.common.pool import PoolSpec
from aragog.common.workflow import WorkflowDef
from aragog.policies.base import Policy, PolicyError

PROMPT_TOKENS = 256  # a stage's prompt, for its cost (the profile's unit of work)
SERVING = ("", "serving")  # a model's states in the load snapshot that take stages


def ucb(n: int, reward_sum: float, total: int) -> float:
    """Upper confidence bound on a model's mean reward (UCB1), within [0, 1]; a model with
    no outcome yet gets 1, the most optimistic value."""
    if n <= 0:
        return 1.0
    return min(1.0, reward_sum / n + math.sqrt(2.0 * math.log(max(total, 2)) / n))


def route_lp(rewards: Sequence[float], costs: Sequence[float], budget: float) -> np.ndarray:
    """The paper's routing LP: the distribution p over arms that maximises sum p*reward with
    sum p*cost <= budget. With no arm within the budget, all on the cheapest."""
    r, c = np.asarray(rewards, dtype=float), np.asarray(costs, dtype=float)
    if c.min() > budget:
        p = np.zeros(len(c))
        p[int(np.argmin(c))] = 1.0
        return p
    res = scipy.optimize.linprog(-r, A_ub=c[None, :], b_ub=[budget], A_eq=np.ones((1, len(c))),
                                 b_eq=[1.0], bounds=[(0.0, 1.0)] * len(c), method="highs")
    if res.status != 0:  # pragma: no cover - feasible by the check above
        raise RuntimeError(f"routing LP failed: {res.message}")
    p = np.clip(res.x, 0.0, None)
    return p / p.sum()


def choose_deployment(models: Sequence[str], outcomes: Mapping[str, tuple[int, float]],
                      costs: Mapping[str, float], budget: float, m_max: int) -> list[str]:
    """The models to keep deployed for the next window: the support of the routing LP over
    every model on the optimistic estimates (at most two models: two constraints), then the
    most promising others (highest bound, cheaper first) up to `m_max`."""
    total = sum(n for n, _ in outcomes.values())
    bound = {m: ucb(*outcomes.get(m, (0, 0.0)), total) for m in models}
    p = route_lp([bound[m] for m in models], [costs[m] for m in models], budget)
    chosen = [m for m, share in sorted(zip(models, p, strict=True), key=lambda x: -x[1])
              if share > 1e-9][:m_max]
    for m in sorted(models, key=lambda m: (-bound[m], costs[m], m)):
        if len(chosen) >= m_max:
            break
        if m not in chosen:
            chosen.append(m)
    return chosen


def arm_cost(pool: PoolSpec, workflow: WorkflowDef, model: str) -> float:
    """GPU-seconds of a request of `workflow` with every LLM stage on `model`."""
    profile = pool.model(model)
    return sum(profile.gpu_seconds(PROMPT_TOKENS, st.output_tokens) for st in workflow.llm_stages)


class StageRoutePolicy(Policy, name="stageroute"):
    """Routing half of StageRoute (module docstring); the deployment half runs in the
    scheduler."""

    wants_load = True  # which models serve now
    wants_outcomes = True

    def __init__(self, budget_share: float = 0.5, seed: int | None = None):
        self.budget_share = budget_share
        self._rng = random.Random(seed)

    @classmethod
    def from_arg(cls, arg: str) -> Policy:
        try:
            share = float(arg) if arg else 0.5
        except ValueError:
            share = -1.0
        if not 0.0 < share <= 1.0:
            raise PolicyError(f"policy stageroute takes a budget share in (0, 1], not {arg[:40]!r}")
        return cls(share)

    def arms(self, workflow: WorkflowDef) -> list[str]:
        """Models that may serve every LLM stage of the workflow."""
        stages = workflow.llm_stages
        return [m for m in stages[0].candidates if all(m in st.candidates for st in stages[1:])]

    def admit(self, workflow, pool, request_input="", routing=None, load=None, outcomes=None):
        arms = self.arms(workflow)
        if not arms:
            raise PolicyError(f"policy stageroute needs a model every LLM stage of workflow "
                              f"{workflow.id} may run on; none is")
        costs = {m: arm_cost(pool, workflow, m) for m in arms}
        budget = self.budget_share * max(costs.values())
        serving = [m for m in arms
                   if load is None or m not in load or load[m].state in SERVING]
        if not serving:  # every arm is away: the scheduler widens to what is there
            serving = arms
        outcomes = outcomes or {}
        total = sum(n for n, _ in outcomes.values())
        p = route_lp([ucb(*outcomes.get(m, (0, 0.0)), total) for m in serving],
                     [costs[m] for m in serving], budget)
        model = self._rng.choices(serving, weights=p.tolist())[0]
        return self.one(workflow.config_index([model] * len(workflow.llm_stages)))
