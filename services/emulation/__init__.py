"""EMULATED: the generated benchmarks and the answers of the emulated pool's models.

No real model runs here: seeded benchmark requests with a latent difficulty (generate,
texts, specs, calibration, skills), the one answer function the emulated Triton models and
the in-process profiler share (answer), and the in-process runner that is the profiler's
fast path on these benchmarks (run). The one real dataset is the recorded engines' (recorded:
RouteLLM's measured GPT-4 and Mixtral outcomes on MMLU, data/README.md); their answers are
still emulated from it. Only the embedded pool, the training side's fast path, the
evaluation and the tests import this package; the four services never do (an import
contract in CI checks it).
"""
