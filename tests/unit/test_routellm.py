"""RouteLLM's routers: argument parsing, training, threshold calibration and the stage role."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
from aragog import policies
from aragog.common.pool import load_pool
from aragog.common.workflow import parse_workflow
from aragog.policies.routellm import RouteLLMModel, Scorer, strong_weak
from aragog.stack import shipped_workflow
from aragog.training import metrics
from aragog.training.routellm import fit_clf, fit_mf


def test_the_argument_names_router_share_and_mode():
    p = policies.make("routellm:mf@0.3")
    assert (p.kind, p.share, p.per_stage, p.decides_stages) == ("mf", 0.3, False, False)
    p = policies.make("routellm:clf@1:stage")
    assert (p.kind, p.share, p.per_stage, p.decides_stages) == ("clf", 1.0, True, True)
    for bad, why in (("routellm:gpt@0.3", "takes routellm:<mf|clf>"),
                     ("routellm:mf", "takes routellm:<mf|clf>"),
                     ("routellm:mf@1.5", "between 0 and 1"),
                     ("routellm:mf@0.3:fast", "takes routellm:<mf|clf>")):
        with pytest.raises(policies.PolicyError, match=why):
            policies.make(bad)


def synthetic(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Features with a noisy linear signal of "the weak model loses" (about a third do)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 24)).astype(np.float32)
    u = np.random.default_rng(99).normal(size=24)
    y = (x @ u + rng.normal(scale=2.0, size=n) > 2.0).astype(np.float32)
    return x, y


@pytest.mark.parametrize("kind", ["mf", "clf"])
def test_a_calibrated_threshold_gives_the_requested_share_on_held_out_prompts(kind):
    """RouteLLM's threshold calibration: the requested share of strong calls, within 2
    points, on prompts it was not calibrated on; and the scores carry the signal."""
    x, y = synthetic(1500, 0)
    xh, yh = synthetic(6000, 1)
    weights = (fit_mf if kind == "mf" else fit_clf)(x, y, epochs=200)
    sc = Scorer(kind, weights, np.zeros(0))
    sc.calibration = np.sort(sc.score(x))
    held = sc.score(xh)
    for share in (0.1, 0.3, 0.5, 0.8):
        assert abs(float((held >= sc.threshold(share)).mean()) - share) <= 0.02, share
    assert (held >= sc.threshold(0.0)).sum() == 0
    assert (held >= sc.threshold(1.0)).mean() > 0.99
    # strong always right, weak right where it does not lose: the router's APGR is that of
    # the true signal (random routing: 0.5)
    truth = xh @ np.random.default_rng(99).normal(size=24)
    best = metrics.summary(np.ones_like(yh), 1 - yh, truth)["apgr"]
    assert metrics.summary(np.ones_like(yh), 1 - yh, held)["apgr"] > best - 0.01


def test_the_model_file_round_trips(tmp_path):
    x, y = synthetic(300, 0)
    model = RouteLLMModel({("mf", "request"): Scorer("mf", fit_mf(x, y, epochs=20), np.arange(3.0)),
                           ("clf", "stage:a"): Scorer("clf", fit_clf(x, y, epochs=20), np.arange(2.0))})
    path = str(tmp_path / "routellm.npz")
    model.save(path)
    back = RouteLLMModel.load(path)
    for key, sc in model.scorers.items():
        np.testing.assert_array_equal(back.scorer(*key).score(x), sc.score(x))
        np.testing.assert_array_equal(back.scorer(*key).calibration, sc.calibration)


def test_the_stage_role_sends_each_stage_to_its_decided_end():
    pool = load_pool()
    wf = parse_workflow(shipped_workflow("chain3"), pool.names)
    strong, weak = strong_weak(wf, pool)
    policy = policies.make("routellm:mf@0.5:stage")
    picks = []
    for i, st in enumerate(wf.llm_stages):
        view = policies.StageView("r1", wf, pool, st.name, i, tuple(st.candidates), {},
                                  bytes([1, 0, 1]))
        picks.append(policy.stage(view))
    assert picks == [strong[0], weak[1], strong[2]]
    # a request admitted without decisions (another policy's state) is left to the round
    view = policies.StageView("r1", wf, pool, "x", 0, tuple(wf.llm_stages[0].candidates), {}, b"")
    assert policy.stage(view) is None


def test_a_policy_from_another_package_registers_through_its_entry_point(tmp_path):
    """No edit to any service: an installed distribution's `aragog.policies` entry point."""
    (tmp_path / "my_policy.py").write_text(textwrap.dedent("""
        from aragog.policies import Policy

        class Mine(Policy, name="mine"):
            '''Every stage on its first candidate.'''
            def admit(self, workflow, pool, request_input="", routing=None, load=None):
                return self.one(0)
    """))
    dist = tmp_path / "my_policy-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-policy\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[aragog.policies]\nmine = my_policy\n")
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from aragog import policies; "
            "print(type(policies.make('mine')).__name__, 'mine' in policies.names())")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["Mine", "True"]
