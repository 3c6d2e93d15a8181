"""EMULATED: the generated benchmarks and the answers of the emulated pool's models.

Nothing here is real data or a real model: seeded benchmark requests with a latent
difficulty (generate, texts, specs, calibration, skills), the one answer function the
emulated Triton models and the in-process profiler share (answer), and the in-process
runner that is the profiler's fast path on these benchmarks (run). Only the embedded pool,
the training side's fast path, the evaluation and the tests import this package; the four
services never do (an import contract in CI checks it).
"""
