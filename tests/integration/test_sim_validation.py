"""The simulator against the live stack, small (aragog.sim.validate; the full comparison is a
benchmark): the same arrivals served live on the embedded pool and simulated agree on what
ran where, and on latency within the control path's share."""

from __future__ import annotations

import pytest
from aragog.common.pool import load_pool
from aragog.loadgen.arrivals import poisson
from aragog.sim.validate import compare, render, warm_up
from aragog.stack import shipped_workflow

pytestmark = pytest.mark.integration


def test_the_simulator_serves_as_the_live_stack_does(stack):
    stack.register(shipped_workflow("self-refine"))
    warm_up(stack.router_addr, "self-refine", "largest", 1.5, 2.0,
            root_certificates=stack.root_certificates)
    offsets = poisson(1.5, 8.0, seed=5).tolist()
    result = compare(stack.router_addr, load_pool(), "self-refine", "largest", offsets,
                     root_certificates=stack.root_certificates,
                     scheduler_addr=stack.scheduler_addr, triton_url=stack.triton_url)
    print(render(result))
    live, sim = result["live"], result["sim"]
    assert live["by_status"]["ok"] == sim["by_status"]["ok"] == len(offsets)
    assert live["model_shares"] == sim["model_shares"] == {"llama3-70b": 1.0}
    # well under saturation, a request's latency is its stages' model time plus, live, the
    # control path (a few ms per stage on an idle host; more on a busy CI machine)
    assert -0.3 < result["difference"]["latency_p50_s"] < 0.05, render(result)
    # the host's CPU was sampled while the live side ran (a share of both cores)
    assert 0.0 <= result["live_cpu"]["p50"] <= result["live_cpu"]["p95"] <= 1.0
    # every live stage carries its placement and its model call as the scheduler and the
    # executor timed them: placement before the call, within the control path's few ms
    to_call = result["placement_to_call_ms"]["live"]
    assert 0.0 < to_call["p5"] <= to_call["p50"] <= to_call["p95"] < 1000.0, to_call
    assert set(result["shared"]["live"]) == set(result["shared"]["sim"]) \
        == {"generate", "critique", "refine"}
    # how calls met at the batcher, read from both sides' timings (ControlPath's parts)
    assert set(result["meet"]["live"]) == set(result["meet"]["sim"])
    assert 0.0 < result["meet"]["sim"]["rounds_apart_ms"] < 1000.0
    # Triton's own statistics of the live run, against the simulated pool's: it counted
    # each of the run's model calls once (three stages a request; the warm-up was before)
    live_b, sim_b = result["batchers"]["live"], result["batchers"]["sim"]
    assert set(live_b) == set(sim_b) == {"llama3-70b"}
    for side in (live_b, sim_b):
        got = side["llama3-70b"]
        assert got["calls"] == 3 * len(offsets), got
        assert 0.0 <= got["shared"] <= 1.0 and 0.0 < got["queue_ms"] < 1000.0, got
        assert min(got["compute_ms"].values()) > 0.0, got
    assert "Triton's statistics, llama3-70b, live / sim" in render(result)
