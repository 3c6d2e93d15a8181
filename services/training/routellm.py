"""Training RouteLLM's routers (aragog.policies.routellm) from a profile.

Labels come from the profile's preserving sets. For the whole request: the weak end (every
stage on its smallest candidate) loses the answer. For stage s: the configuration with s on
its smallest candidate and every other stage on its largest loses it. The generated
benchmarks are graded "agrees with the largest", so "loses" is the paper's definition of
not preserving accuracy; with labelled data (the MMLU recorded pool) it is "the weak model
is wrong where the strong one is right", RouteLLM's "strong wins".
"""

from __future__ import annotations

import numpy as np
from aragog.policies.routellm import FILENAME, REQUEST, RouteLLMModel, Scorer
from aragog.routing.artifacts import Profile
from aragog.routing.space import Space

__all__ = ["FILENAME", "fit", "fit_clf", "fit_mf", "unit_configs"]
MF_DIM = 64
EPOCHS = 300
CLF_L2 = 1e-2


def unit_configs(space: Space) -> dict[str, int]:
    """The configuration whose failure labels each unit: the weak end for the request, and
    for each stage that stage weak with the others strong."""
    top = space.ranks.max(0)
    units = {REQUEST: int(np.flatnonzero((space.ranks == 0).all(1))[0])}
    for s, st in enumerate(space.workflow.llm_stages):
        want = top.copy()
        want[s] = 0
        units[f"stage:{st.name}"] = int(np.flatnonzero((space.ranks == want).all(1))[0])
    return units


def fit(space: Space, prof: Profile, x: np.ndarray, train_rows: np.ndarray,
        seed: int = 0) -> RouteLLMModel:
    """Both routers for every unit, trained and calibrated on `train_rows`."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small full-batch fits: extra threads only spin
    try:
        return _fit(space, prof, x, train_rows, seed)
    finally:
        torch.set_num_threads(threads)


def _fit(space: Space, prof: Profile, x: np.ndarray, train_rows: np.ndarray,
         seed: int) -> RouteLLMModel:
    scorers = {}
    for unit, c in unit_configs(space).items():
        y = (~prof.preserving[train_rows, c]).astype(np.float32)
        xt = x[train_rows]
        for kind, weights in (("mf", fit_mf(xt, y, seed)), ("clf", fit_clf(xt, y, seed))):
            sc = Scorer(kind, weights, np.zeros(0))
            sc.calibration = np.sort(sc.score(xt))
            scorers[(kind, unit)] = sc
    return RouteLLMModel(scorers)


def fit_mf(x: np.ndarray, y: np.ndarray, seed: int = 0, dim: int = MF_DIM,
           epochs: int = EPOCHS, lr: float = 3e-3, weight_decay: float = 1e-4) -> dict:
    """RouteLLM's MF for two models (row 0 strong, row 1 weak): P(strong wins) =
    sigmoid(readout . ((v_s/|v_s| - v_w/|v_w|) * proj x)), fitted full-batch with Adam."""
    import torch

    torch.manual_seed(seed)
    xt, yt = torch.from_numpy(np.ascontiguousarray(x, np.float32)), torch.from_numpy(y)
    models = torch.nn.Parameter(torch.randn(2, dim) * 0.1)
    proj = torch.nn.Linear(x.shape[1], dim, bias=False)
    readout = torch.nn.Parameter(torch.randn(dim) * 0.1)
    opt = torch.optim.Adam([models, readout, *proj.parameters()], lr=lr,
                           weight_decay=weight_decay)
    pos = float(y.mean()) if len(y) else 0.5
    weight = torch.tensor(1.0 if pos in (0.0, 1.0) else (1 - pos) / pos)
    for _ in range(epochs):
        opt.zero_grad()
        v = torch.nn.functional.normalize(models, dim=1)
        logit = proj(xt) @ ((v[0] - v[1]) * readout)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logit, yt, pos_weight=weight)
        loss.backward()
        opt.step()
    return {"models": models.detach().numpy().copy(), "proj": proj.weight.detach().numpy().copy(),
            "readout": readout.detach().numpy().copy()}


def fit_clf(x: np.ndarray, y: np.ndarray, seed: int = 0, l2: float = CLF_L2,
            epochs: int = EPOCHS, lr: float = 1e-2) -> dict:
    """Logistic regression (L2, balanced classes) on the features."""
    import torch

    torch.manual_seed(seed)
    xt, yt = torch.from_numpy(np.ascontiguousarray(x, np.float32)), torch.from_numpy(y)
    lin = torch.nn.Linear(x.shape[1], 1)
    opt = torch.optim.Adam(lin.parameters(), lr=lr)
    pos = float(y.mean()) if len(y) else 0.5
    weight = torch.tensor(1.0 if pos in (0.0, 1.0) else (1 - pos) / pos)
    for _ in range(epochs):
        opt.zero_grad()
        logit = lin(xt).squeeze(1)
        loss = (torch.nn.functional.binary_cross_entropy_with_logits(logit, yt, pos_weight=weight)
                + l2 * (lin.weight ** 2).sum())
        loss.backward()
        opt.step()
    return {"w": lin.weight.detach().numpy()[0].copy(),
            "b": np.array(float(lin.bias.detach()[0]), dtype=np.float32)}
