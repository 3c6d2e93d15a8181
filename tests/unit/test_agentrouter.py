"""AgentRouter's tiers: features, labels, the classifier and the stage role."""

from __future__ import annotations

import numpy as np
from aragog import policies
from aragog.common.pool import load_pool
from aragog.common.workflow import parse_workflow
from aragog.policies.agentrouter import candidate_of_tier, stage_features, tier_of_rank
from aragog.routing.artifacts import Profile
from aragog.routing.space import build
from aragog.stack import shipped_workflow
from aragog.training.agentrouter import fit, needed_tiers


def test_four_tiers_map_onto_any_number_of_candidates():
    assert [candidate_of_tier(t, 3) for t in range(4)] == [0, 1, 1, 2]
    assert [candidate_of_tier(t, 4) for t in range(4)] == [0, 1, 2, 3]
    assert [candidate_of_tier(t, 1) for t in range(4)] == [0, 0, 0, 0]
    for n in (2, 3, 4):  # a rank's tier comes back to that rank
        assert [candidate_of_tier(tier_of_rank(r, n), n) for r in range(n)] == list(range(n))
    # five candidates, four tiers: one rank is no tier's (the middle one here)
    assert sorted({candidate_of_tier(t, 5) for t in range(4)}) == [0, 1, 3, 4]


def test_stage_features_read_the_dag():
    pool = load_pool()
    wf = parse_workflow(shipped_workflow("voting"), pool.names)
    f = stage_features(wf, "a question", 0.25)
    final = [s.name for s in wf.llm_stages].index(wf.llm_stages[-1].name)
    assert f.shape == (len(wf.llm_stages), 6)
    assert f[final, 0] == 1.0 and f[:final, 0].tolist() == [0.0] * final  # voters feed the last
    assert f[0, 1] == 0.0 and f[-1, 1] == 1.0 and f[-1, 2] == 1.0
    assert (f[:, 3] == np.log1p(len("a question"))).all() and (f[:, 5] == 0.25).all()
    assert f[0, 4] == 0.0 and f[-1, 4] > 0  # voters read no model output, the last reads them


def test_labels_classifier_and_stage_role_agree_on_a_learnable_workflow():
    """chain3 where stage s needs its size rank s on every request: the labels say so, the
    classifier learns it from the stages' position, and the stage role places each stage on
    the candidate that rank names."""
    pool = load_pool()
    wf = parse_workflow(shipped_workflow("chain3"), pool.names)
    space = build(wf, pool)
    need = np.array([0, 1, 2])
    n = 120
    preserving = np.tile((space.ranks >= need).all(1), (n, 1))
    prof = Profile([str(i) for i in range(n)], [str(i) for i in range(n)], ["train"] * n,
                   preserving, np.ones(n, bool), np.zeros(n), 27, np.zeros(n), np.zeros(n))
    rows = np.arange(n)
    assert (needed_tiers(space, prof, rows) == [0, 2, 3]).all()  # ranks 0, 1, 2 of 3
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 8)).astype(np.float32)
    texts = ["q" * int(k) for k in rng.integers(5, 200, n)]
    model = fit(space, prof, x, texts, rows)
    tiers = model.tiers(stage_features(wf, "a new question", float(model.difficulty(x[:1])[0])))
    assert tiers.tolist() == [0, 2, 3]
    policy = policies.make("agentrouter")
    placed = [policy.stage(policies.StageView("r", wf, pool, s.name, i, tuple(s.candidates), {},
                                              bytes(tiers.tolist())))
              for i, s in enumerate(wf.llm_stages)]
    by_size = [sorted(s.candidates, key=lambda m: pool.model(m).params_b) for s in wf.llm_stages]
    assert placed == [by_size[0][0], by_size[1][1], by_size[2][2]]
