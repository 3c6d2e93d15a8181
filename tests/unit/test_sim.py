"""The simulator (aragog.sim): the emulated pool's latency model on simulated time, the
scheduler's own round, the router's policies; one record per arrival, in the load
generator's format."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from aragog import policies
from aragog import workflows as shipped
from aragog.common.pool import load_pool
from aragog.emulation.answer import answer
from aragog.emulation.engine import ContinuousBatching, prompt_tokens
from aragog.emulation.generate import benchmark
from aragog.loadgen.arrivals import poisson
from aragog.scheduler.placement import CompiledWorkflow, Round
from aragog.sim import __main__ as cli
from aragog.sim.core import Arrival, ControlPath, Result, Simulator

POOL = load_pool("llama3")


def one_self_refine(control: ControlPath | None = None) -> Result:
    """One self-refine request alone under `largest` (every stage on the 70B), played with
    `control` around its calls (none by default)."""
    item = benchmark("self-refine").split("test")[0]
    sim = Simulator(POOL, [shipped.load("self-refine", POOL.names)],
                    control=control or ControlPath())
    return sim.run([Arrival(0.0, "self-refine", item.input, item.answer)], "largest")


def last_freed(result: Result) -> float:
    """When the largest model's last lease was given back (its occupancy back to 0)."""
    largest = POOL.models[-1].name
    return [t for t, occ in result.occupancy if occ[largest] == 0 and t > 0][-1]


def arrivals(wid: str, rate: float, duration: float, seed: int = 0) -> list[Arrival]:
    held = benchmark(wid).split("test")
    return [Arrival(t, wid, held[i % len(held)].input, held[i % len(held)].answer, i % len(held))
            for i, t in enumerate(poisson(rate, duration, seed).tolist())]


def test_a_lone_batch_takes_exactly_the_profiles_batch_latency():
    m = POOL.model("llama3-8b")
    cb = ContinuousBatching(m, 0.5)
    cb.join("a", 3, 200, now=1.0)
    total = cb.prefill_s(3, 40) + cb.next_finish_s()
    assert total == pytest.approx(m.batch_latency_s(3, 40, 200) * 0.5)


def test_overlapping_batches_slow_each_other_as_one_larger_batch():
    m = POOL.model("llama3-8b")
    alone = ContinuousBatching(m, 1.0)
    alone.join("a", 1, 100, 0.0)
    both = ContinuousBatching(m, 1.0)
    both.join("a", 1, 100, 0.0)
    both.join("b", 1, 100, 0.0)
    assert both.next_finish_s() > alone.next_finish_s()
    assert both.next_finish_s() == pytest.approx(100 * both.step_s())
    # half way through, "b" leaves: "a" finishes its second half at the lone pace
    both.advance(50 * both.step_s())
    both.leave("b", 50 * both.step_s())
    assert both.next_finish_s() == pytest.approx(alone.next_finish_s() / 2)


def test_an_idle_request_takes_its_stages_latencies_one_after_another():
    """self-refine is a chain: on an idle pool each stage is one batch of one, after the
    batcher's delay, with its prompt rendered from the outputs before it (the answer
    function's), so the latency is the sum of the profile's batch latencies."""
    wf = shipped.load("self-refine", POOL.names)
    sim = Simulator(POOL, [wf])
    item = benchmark("self-refine").split("test")[0]
    rec = sim.run([Arrival(0.0, "self-refine", item.input, item.answer)], "largest").records[0]
    assert rec.status == "ok"
    largest = POOL.models[-1]
    outputs: dict[str, str] = {}
    expected = 0.0
    for st in wf.stages:
        prompt = st.render(item.input, outputs)
        outputs[st.name] = answer(largest.name, st.name, prompt)
        expected += sim.queue_delay_s + largest.batch_latency_s(
            1, prompt_tokens(prompt), st.output_tokens) * POOL.time_scale
    assert rec.latency_s == pytest.approx(expected)
    assert rec.answer == outputs[wf.sink.name]
    assert [s.model for s in rec.stages] == [largest.name] * 3


def test_each_calls_control_path_is_drawn_around_the_mean_and_reproducible():
    """Calls placed together must not reach the batcher together (core.py, ControlPath):
    each stage's control path is drawn within +-jitter of stage_s, the same every run."""
    base = one_self_refine().records[0].latency_s
    c = 0.012
    fixed = one_self_refine(ControlPath(c, jitter=0))
    assert fixed.records[0].latency_s == pytest.approx(base + 3 * c)
    drawn = [one_self_refine(ControlPath(c, jitter=0.5)).records[0].latency_s - base
             for _ in range(2)]
    assert drawn[0] == drawn[1] and 3 * c * 0.5 <= drawn[0] <= 3 * c * 1.5
    assert drawn[0] != pytest.approx(3 * c)


TOOL_SINK = """\
id: fan-in
description: two parallel calls joined by a tool stage
stages:
  - {name: a, prompt: "{input}", candidates: [llama3-3b], output_tokens: 8}
  - {name: b, prompt: "{input}", candidates: [llama3-3b], output_tokens: 8}
  - {name: join, kind: tool, depends_on: [a, b], prompt: "{a} {b}"}
"""


def test_a_request_ends_once_when_its_parallel_answers_each_move_it_on():
    """With a control path, each answer moves its request on later (core.py, _answered):
    two parallel stages feeding a tool sink must end the request once, not twice."""
    from aragog.common.workflow import parse_workflow

    wf = parse_workflow(TOOL_SINK, POOL.names)
    arr = [Arrival(0.01 * i, "fan-in", f"q{i}", None) for i in range(20)]
    res = Simulator(POOL, [wf], control=ControlPath(0.012)).run(arr, "largest")
    assert sorted(r.status for r in res.records) == ["ok"] * 20
    assert all(len(r.stages) == 3 for r in res.records)


def test_every_arrival_has_one_record_and_no_model_exceeds_its_capacity():
    wf = shipped.load("voting", POOL.names)
    sim = Simulator(POOL, [wf])
    arr = arrivals("voting", 60.0, 10.0)
    res = sim.run(arr, "largest")  # overloaded: the 70B is the bottleneck
    assert sorted(r.index for r in res.records) == list(range(len(arr)))
    assert all(r.status == "ok" for r in res.records)
    cap = {m.name: m.capacity for m in POOL.models}
    assert max(occ["llama3-70b"] for _, occ in res.occupancy) == cap["llama3-70b"]
    assert all(n <= cap[m] for _, occ in res.occupancy for m, n in occ.items())
    # FIFO by arrival under overload: requests finish roughly in order
    ends = [r.completed_at for r in sorted(res.records, key=lambda r: r.arrival)]
    assert np.corrcoef(np.arange(len(ends)), ends)[0, 1] > 0.95


def test_the_same_arrivals_give_the_same_run():
    sim = Simulator(POOL, [shipped.load("voting", POOL.names)])
    arr = arrivals("voting", 20.0, 5.0, seed=3)
    a = [r.to_dict() for r in sim.run(arr, "cheapest").records]
    b = [r.to_dict() for r in sim.run(arr, "cheapest").records]
    assert a == b


def test_the_simulator_places_with_the_schedulers_round():
    """Not a copy: the same class the scheduler service builds (aragog.scheduler.placement)."""
    sim = Simulator(POOL, [shipped.load("voting", POOL.names)])
    assert type(sim.round) is Round
    assert isinstance(sim.compiled["voting"], CompiledWorkflow)


@pytest.mark.parametrize("policy", ["aragog", "aragog-profiled"])
def test_aragog_runs_configurations_of_its_routers_f_r(artifacts_dir, policy):
    """With the router's artifacts, every request runs a configuration of the F(r) the
    policy admits for it (the router's, or the profiled one), chosen per stage by the round."""
    from aragog.common.settings import RouterSettings
    from aragog.loadgen import eval_policies  # noqa: F401  (registers aragog-profiled)
    from aragog.routing.context import Routing

    routing = Routing(RouterSettings(artifacts_dir=artifacts_dir))
    wf = shipped.load("voting", POOL.names)
    cw = CompiledWorkflow.build(wf, POOL)
    sim = Simulator(POOL, [wf], routing=routing)
    arr = arrivals("voting", 30.0, 4.0)
    res = sim.run(arr, policy)
    assert len(res.records) == len(arr) and all(r.status == "ok" for r in res.records)
    made = policies.make(policy)
    ids = {m.name: i for i, m in enumerate(POOL.models)}
    for rec, a in zip(sorted(res.records, key=lambda r: r.index), arr, strict=True):
        f_r = made.admit(wf, POOL, a.input, routing)
        f_r = cw.every if f_r is None else f_r
        models = {s.stage: s.model for s in rec.stages}
        config = sum(int(list(cw.space.stage_models[i]).index(ids[models[st.name]]))
                     * int(cw.space.strides[i]) for i, st in enumerate(wf.llm_stages))
        assert config in set(f_r.tolist()), rec.request_id
        assert rec.admitted_configurations == len(f_r)


def test_the_command_compares_policies_over_seeds(tmp_path, capsys):
    cli.main(["--pool", "llama3", "--workflow", "voting", "--policy", "largest",
              "--policy", "cheapest", "--rate", "10", "--duration", "5", "--seeds", "2",
              "--gpus-for-slo", "0.9", "--plan-instances", "64", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert "EMULATED pool llama3: 8 GPUs" in out and "means over seeds" in out
    assert "GPUs to serve 90%" in out and "instances per model to serve 95%" in out
    res = json.loads((tmp_path / "results.json").read_text())
    assert {(s["policy"], s["seed"]) for s in res["summaries"]} == {
        (p, s) for p in ("largest", "cheapest") for s in (0, 1)}
    by = {s["policy"]: s for s in res["summaries"] if s["seed"] == 0}
    assert by["largest"]["gpu_seconds_per_request"] > by["cheapest"]["gpu_seconds_per_request"]
    assert all(s["coherent"] for s in res["summaries"])
    assert set(res["gpus_for_slo"]) == set(res["planned_instances"]) == {"largest", "cheapest"}


def test_a_sweep_gives_maxima_ratios_and_bounds(artifacts_dir, tmp_path, capsys):
    """Several rates: each policy's maximum over them, the first policy's ratios to the
    others paired by seed, and the fluid capacity bound beside each (from the artifacts)."""
    cli.main(["--pool", "llama3", "--workflow", "voting", "--policy", "aragog",
              "--policy", "largest", "--rate", "2", "--rate", "8", "--duration", "10",
              "--seeds", "2", "--bounds", "--artifacts", artifacts_dir, "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert "aragog / largest: max throughput" in out and "bound ratio" in out
    res = json.loads((tmp_path / "results.json").read_text())
    assert {s["offered_rate"] for s in res["summaries"]} == {2.0, 8.0}
    curves, bound = res["comparison"]["curves"], res["capacity_bound"]
    for pol in ("aragog", "largest"):
        seeds = curves[pol]["seeds"]
        assert [x["max_throughput"] for x in seeds] == [
            max(s["throughput"] for s in res["summaries"]
                if s["policy"] == pol and s["seed"] == x["seed"]) for x in seeds]
        assert curves[pol]["max_throughput"] <= 1.1 * bound[pol], (pol, curves[pol], bound)
    ratio = res["comparison"]["ratios"]["largest"]
    assert ratio["n_seeds"] == 2 and ratio["throughput_ratio"] > 1.0  # aragog serves more


def test_a_bigger_cluster_is_the_same_models_more_instances():
    big = cli.scaled(POOL, 16)
    assert cli.gpus(big) == 16 * cli.gpus(POOL)
    assert [m.capacity for m in big.models] == [16 * m.capacity for m in POOL.models]
    with pytest.raises(SystemExit):
        cli.main(["--rate", "0"])


ONE_STAGE = """
id: one
description: one model call
stages:
  - name: answer
    kind: llm
    prompt: "{input}"
    candidates: [llama3-8b]
    output_tokens: 64
"""


def one_model_pool(saturation_batch: int):
    import dataclasses

    m = dataclasses.replace(POOL.model("llama3-8b"), instances=1,
                            saturation_batch=saturation_batch)
    return dataclasses.replace(POOL, models=(m,))


def test_a_full_batch_goes_at_once_and_a_partial_one_after_the_queue_delay():
    """Triton's dynamic batcher: two calls that fill the batch leave together at once; with
    room for a third, they leave when the oldest has waited max_queue_delay."""
    from aragog.common.workflow import parse_workflow

    for batch, waits in ((2, False), (3, True)):
        pool = one_model_pool(batch)
        sim = Simulator(pool, [parse_workflow(ONE_STAGE, pool.names)])
        recs = sim.run([Arrival(0.0, "one", "a b c"), Arrival(0.0, "one", "a b c")],
                       "largest").records
        m = pool.models[0]
        expected = m.batch_latency_s(2, 3, 64) * pool.time_scale + (sim.queue_delay_s if waits
                                                                   else 0.0)
        assert [r.latency_s for r in recs] == pytest.approx([expected] * 2), batch


def test_a_client_that_waits_past_its_timeout_is_recorded_as_one():
    pool = one_model_pool(1)
    from aragog.common.workflow import parse_workflow

    sim = Simulator(pool, [parse_workflow(ONE_STAGE, pool.names)], timeout_s=0.2)
    recs = sim.run([Arrival(0.0, "one", "x")] * 20, "largest").records
    statuses = sorted(r.status for r in recs)
    assert len(recs) == 20 and {"ok", "timeout"} == set(statuses)
    assert all(r.latency_s == pytest.approx(0.2) for r in recs if r.status == "timeout")


def test_settings_that_would_stall_the_clock_are_refused():
    wf = shipped.load("voting", POOL.names)
    assert Simulator(POOL, [wf], time_scale=0).scale == POOL.time_scale  # 0: the pool's own
    for bad in ({"time_scale": -1.0}, {"timeout_s": 0}):
        with pytest.raises(ValueError):
            Simulator(POOL, [wf], **bad)
    for bad in ({"stage_s": -0.001}, {"jitter": 1.5}, {"jitter": -0.1}, {"before": 1.2},
                {"release_s": -0.001}, {"call_s": -0.001}, {"call_jitter": 2.0},
                {"call_before": 1.5}, {"hop_s": -0.001}, {"hop_before": -0.1},
                {"together": -0.5}, {"batch_late_s": -0.001}, {"round_s": -1.0},
                {"round_wait_s": -1.0}):
        with pytest.raises(ValueError):
            ControlPath(**bad)


def test_the_fewest_gpus_that_meet_the_slo():
    """Capacity planning: the smallest instance scale whose run serves the share within the
    SLO, and one less does not; the cheap policy needs no more GPUs than the largest."""
    wf = shipped.load("voting", POOL.names)

    def make(p):
        return Simulator(p, [wf], occupancy_timeline=False)

    arr = arrivals("voting", 50.0, 6.0)
    slo = {"voting": 3 * make(POOL).idle_latency("voting", arr[0].input)}

    def share_ok(k: int, policy: str) -> float:
        recs = make(cli.scaled(POOL, k)).run(arr, policy).records
        return sum(r.status == "ok" and r.latency_s <= slo["voting"] for r in recs) / len(recs)

    k_largest = cli.gpus_for_slo(POOL, make, arr, "largest", slo, 0.9)
    k_cheapest = cli.gpus_for_slo(POOL, make, arr, "cheapest", slo, 0.9)
    assert k_largest is not None and k_cheapest is not None
    assert k_largest > 1 and k_cheapest <= k_largest
    assert share_ok(k_largest, "largest") >= 0.9 > share_ok(k_largest - 1, "largest")


def test_long_runs_draw_poisson_arrivals_window_by_window(monkeypatch):
    """More arrivals than the load generator draws in one call (its bound for live runs):
    the simulator draws them window by window, sorted, over the whole duration."""
    from aragog.loadgen import arrivals as arrivals_mod

    monkeypatch.setattr(arrivals_mod, "MAX_ARRIVALS", 1000)
    arr, how = cli.make_arrivals(["voting"], 100.0, 30.0, seed=1)
    offsets = [a.offset for a in arr]
    assert 2700 < len(arr) < 3300 and offsets == sorted(offsets)
    assert 0 <= offsets[0] and offsets[-1] < 30.0 and offsets[-1] > 29.0
    assert "poisson, mean 100/s over 30 s" in how


def test_the_oracle_knows_what_is_coming(artifacts_dir):
    """`oracle:<h>`: the profiled F(r), and its escalations leave alone the models that
    requests arriving within h seconds want first. Horizon 0 is aragog-profiled exactly;
    a horizon changes what escalates, and every request still runs a configuration of its
    profiled F(r)."""
    from aragog.common.settings import RouterSettings
    from aragog.routing.context import Routing
    from aragog.sim.oracle import OraclePolicy

    assert policies.make("oracle:2.5").horizon_s == 2.5
    with pytest.raises(policies.PolicyError, match="horizon in seconds"):
        policies.make("oracle:-1")
    routing = Routing(RouterSettings(artifacts_dir=artifacts_dir))
    wf = shipped.load("voting", POOL.names)
    cw = CompiledWorkflow.build(wf, POOL)
    sim = Simulator(POOL, [wf], routing=routing)
    arr = arrivals("voting", 250.0, 4.0)  # the 3B overloaded: stages escalate to the 8B

    def run(policy):
        return sorted(sim.run(arr, policy).records, key=lambda r: r.index)

    profiled, blind, seeing = run("aragog-profiled"), run("oracle:0"), run("oracle:2")
    def ran(recs):
        return [{k: v for k, v in r.to_dict().items() if k != "policy"} for r in recs]

    assert ran(blind) == ran(profiled)
    assert [[s.model for s in r.stages] for r in seeing] != [
        [s.model for s in r.stages] for r in profiled]
    ids = {m.name: i for i, m in enumerate(POOL.models)}
    for rec, a in zip(seeing, arr, strict=True):
        assert rec.status == "ok"
        f_r = set(OraclePolicy().admit(wf, POOL, a.input, routing).tolist())
        models = {s.stage: s.model for s in rec.stages}
        assert sum(int(list(cw.space.stage_models[i]).index(ids[models[st.name]]))
                   * int(cw.space.strides[i]) for i, st in enumerate(wf.llm_stages)) in f_r


def test_instances_planned_per_model_meet_the_slo_from_the_fluid_floor():
    """Per model, from the fluid floor up: the plan meets the SLO when simulated again, puts
    no model below its floor, and needs no more GPUs than scaling every model alike."""
    from aragog.sim.planning import plan_instances, provisioned

    arr = arrivals("self-refine", 12.0, 20.0)
    wf = shipped.load("self-refine", POOL.names)

    def make(pool):
        return Simulator(pool, [wf])

    slo = {"self-refine": 5 * make(POOL).idle_latency("self-refine", arr[0].input)}
    plan = plan_instances(POOL, make, arr, "largest", slo, 0.9, budget_gpus=64)
    assert plan.met and plan.within_slo >= 0.9 and plan.runs >= 2
    assert all(plan.instances[m] >= plan.floor[m] for m in plan.instances)
    assert plan.instances["llama3-3b"] == plan.instances["llama3-8b"] == 1  # largest: unused
    recs = make(provisioned(POOL, list(plan.instances.values()))).run(arr, "largest").records
    good = sum(r.status == "ok" and r.latency_s <= slo["self-refine"] for r in recs)
    assert good >= 0.9 * len(arr)
    k = cli.gpus_for_slo(POOL, make, arr, "largest", slo, 0.9)
    assert plan.gpus <= cli.gpus(cli.scaled(POOL, k))
    short = plan_instances(POOL, make, arr, "largest", slo, 0.9, budget_gpus=2)
    assert not short.met


@pytest.mark.parametrize("pattern", ["square", "bursts"])
def test_square_waves_and_bursts_keep_their_mean_rate(pattern, monkeypatch):
    """The load generator's square wave and Markov-modulated bursts, at the mean --rate,
    drawn window by window past its bound on one call."""
    from aragog.loadgen import arrivals as arrivals_mod

    monkeypatch.setattr(arrivals_mod, "MAX_ARRIVALS", 4000)
    arr, how = cli.make_arrivals(["voting"], 100.0, 200.0, seed=2, pattern=pattern,
                                 period=20.0)
    offsets = np.array([a.offset for a in arr])
    assert (np.diff(offsets) >= 0).all() and offsets[-1] < 200.0
    assert 0.85 * 20_000 < len(arr) < 1.15 * 20_000, len(arr)
    per_10s = np.histogram(offsets, bins=20, range=(0, 200))[0]
    if pattern == "square":  # low (0.5x) in each period's first half, high (1.5x) after
        assert (per_10s[0::2] < 700).all() and (per_10s[1::2] > 1300).all(), per_10s
        assert "square wave" in how
    else:
        assert per_10s.max() > 2 * per_10s.min() and "bursts" in how


def stage(name: str, model: str, placed: float, sent: float, answered: float):
    from aragog.loadgen.client import StageRecord

    return StageRecord(name, model, 0, 0, 0, "e", placed_at=placed, call_started_at=sent,
                       call_ended_at=answered)


def request(*stages) -> object:
    from aragog.loadgen.client import RequestRecord

    return RequestRecord("r", "voting", "largest", 0.0, 0.0, 0.0, 0.0, "ok", stages=list(stages))


def test_calls_answered_together_and_sent_together_shared_a_batch():
    """validate.shared_batches reads batches from the executors' timings alone: answered
    within 1.5 ms and sent within 8 ms of each other, on one model."""
    from aragog.sim.validate import shared_batches

    records = [request(stage("vote", "m", 9.99, 10.000, 10.4),
                       stage("aggregate", "m", 9.99, 10.001, 10.4004)),  # one batch
               request(stage("vote", "m", 11.0, 11.000, 11.4),
                       stage("aggregate", "other", 11.0, 11.000, 11.4)),  # other model
               # answered together, but sent 0.3 s apart: ran side by side, not one batch
               request(stage("vote", "m", 12.0, 12.000, 12.4),
                       stage("aggregate", "m", 12.3, 12.300, 12.4005)),
               request(stage("tool", "", 0, 0, 0))]
    assert shared_batches(records) == {"aggregate": 1 / 3, "vote": 1 / 3}


def test_how_calls_meet_reads_each_timing_from_the_records():
    """validate.how_calls_meet: one batch's answers apart, one round's sends apart, where
    consecutive sends stop sharing a batch, the rounds' least gap, whether a shared batch's
    next two placements came from one round, and an answer's lease placed again."""
    from aragog.sim.validate import how_calls_meet

    calls = []
    t = 0.0
    for _ in range(20):  # pairs placed by one round, sent 0.5 ms apart, one batch each
        calls += [stage("v", "m", t, t + 0.003, t + 0.4), stage("a", "m", t, t + 0.0035,
                                                                t + 0.4002)]
        t += 0.4 + 0.002  # the next pair placed 2 ms after the answers, by one round
    for _ in range(20):  # pairs sent 5 ms apart: two batches
        calls += [stage("v", "m", t, t + 0.003, t + 0.4), stage("a", "m", t + 0.005,
                                                                t + 0.008, t + 0.3)]
        t += 1.0
    got = how_calls_meet([request(*calls)])
    assert got["answers_apart_ms"] == pytest.approx(0.2)
    assert got["sent_apart_ms"] == pytest.approx(0.5)
    assert 1.0 < got["meet_ms"] < 5.0
    assert got["rounds_apart_ms"] == pytest.approx(5.0, abs=0.01)
    assert got["placed_together"] == pytest.approx(19 / 20)
    assert got["freed_to_placed_ms"] == pytest.approx(1.9, abs=0.01)  # 2.0 and 1.8 ms
    empty = how_calls_meet([request(stage("tool", "", 0, 0, 0))])
    assert all(np.isnan(v) for v in empty.values())


def one_call_each(control: ControlPath, *offsets: float, batch: int = 4):
    """One single-stage request at each offset on a one-model pool (batches of `batch`)."""
    from aragog.common.workflow import parse_workflow

    pool = one_model_pool(batch)
    sim = Simulator(pool, [parse_workflow(ONE_STAGE, pool.names)], control=control)
    recs = sim.run([Arrival(t, "one", "a b c") for t in offsets], "largest").records
    return sorted((r.stages[0] for r in recs), key=lambda st: st.placed_at)


def test_a_batcher_that_closes_late_takes_a_call_that_came_later():
    """ControlPath.batch_late_s: live, a call sent up to the batcher's delay plus its
    lateness after another still shares its batch (and a lone call waits that long)."""
    fixed = ControlPath(jitter=0, call_jitter=0)
    apart = one_call_each(fixed, 0.0, 0.0025)
    assert apart[0].call_ended_at != apart[1].call_ended_at
    late = one_call_each(dataclasses.replace(fixed, batch_late_s=0.001), 0.0, 0.0025)
    assert late[0].call_ended_at == late[1].call_ended_at
    alone = one_call_each(dataclasses.replace(fixed, batch_late_s=0.001), 0.0)[0]
    assert alone.call_ended_at - one_call_each(fixed, 0.0)[0].call_ended_at \
        == pytest.approx(0.001)


def test_changes_close_together_are_placed_by_one_round_and_rounds_keep_apart():
    """ControlPath.round_wait_s: a change waits that long for its round, so changes closer
    together are placed together; round_s: no round sooner than that after the last."""
    fixed = ControlPath(jitter=0, call_jitter=0)
    at_once = one_call_each(fixed, 0.0, 0.0003)
    assert [st.placed_at for st in at_once] == pytest.approx([0.0, 0.0003])
    waits = one_call_each(dataclasses.replace(fixed, round_wait_s=0.0006), 0.0, 0.0003)
    assert [st.placed_at for st in waits] == pytest.approx([0.0006, 0.0006])
    commits = one_call_each(dataclasses.replace(fixed, round_s=0.001), 0.0, 0.0003, 0.0004)
    assert [st.placed_at for st in commits] == pytest.approx([0.0, 0.001, 0.001])


def test_only_one_requests_calls_draw_their_control_paths_together():
    """ControlPath.together: the parallel stages of one request placed by one round share
    their draw; another request's are drawn on their own (live, one request's executor
    runs its parallel stages side by side; two requests' calls share batches no more often
    on one executor than on two)."""
    from aragog.common.workflow import parse_workflow

    control = ControlPath(stage_s=0.009, before=0.35, jitter=0.5, together=1.0)
    wf = parse_workflow(TOOL_SINK, POOL.names)
    recs = Simulator(POOL, [wf], control=control).run(
        [Arrival(0.0, "fan-in", "q0", None), Arrival(0.0, "fan-in", "q1", None)],
        "largest").records
    sent = [{st.stage: st.call_started_at for st in r.stages if st.model} for r in recs]
    assert sent[0]["a"] == sent[0]["b"] and sent[1]["a"] == sent[1]["b"]
    assert sent[0]["a"] != sent[1]["a"]


def test_the_calls_way_is_drawn_on_its_own_within_call_jitter():
    """ControlPath.call_jitter: each half of the call's way is drawn within +-call_jitter of
    its mean, on its own whatever `together` is (live, one batch's answers reach their
    executors ~0.4 ms apart)."""
    base = ControlPath(stage_s=0.009, before=0.35, call_s=0.008, jitter=0.5, call_jitter=0)
    spread = dataclasses.replace(base, together=1.0, call_jitter=0.2)
    calls = one_call_each(spread, *[0.5 * k for k in range(10)], batch=1)
    lone = one_call_each(dataclasses.replace(spread, call_jitter=0), 0.0, batch=1)[0]
    model = lone.call_ended_at - lone.call_started_at - 0.008
    ways = [st.call_ended_at - st.call_started_at - model for st in calls]
    assert len(set(ways)) > 1 and all(0.008 * 0.8 <= w <= 0.008 * 1.2 for w in ways)


def test_the_simulator_times_each_model_call_after_its_control_path():
    """A stage's record carries when its call reached the model and when it answered (as
    the executor's StageResult does live): after the placement by the first half of the
    control path, before the answer."""
    rec = one_self_refine(ControlPath(0.012, jitter=0)).records[0]
    for st in rec.stages:
        assert st.call_started_at == pytest.approx(st.started_at + 0.006)
        assert st.call_ended_at == pytest.approx(st.finished_at)
        assert st.call_ended_at > st.call_started_at


def test_a_lease_is_held_until_its_release_reaches_the_scheduler():
    """ControlPath.release_s: the lease stays taken from the answer until the release arrives
    (live, the executor's ReleaseStage), and the request moves on only then (the executor
    waits for it before it records the stage and asks for the next)."""
    at_once = one_self_refine()
    held = one_self_refine(ControlPath(release_s=0.003, jitter=0))
    assert held.records[0].latency_s == pytest.approx(at_once.records[0].latency_s + 3 * 0.003)
    last_call = held.records[0].stages[-1].call_ended_at
    assert last_freed(held) == pytest.approx(last_call + 0.003)
    assert last_freed(at_once) == pytest.approx(at_once.records[0].stages[-1].call_ended_at)


def test_a_calls_way_to_the_model_and_back_holds_the_lease_and_times_the_call():
    """ControlPath.call_s: the executor times the call from sending it to the answer, the
    model's time plus its way there and back; the lease is held all along."""
    bare = one_self_refine()
    way = one_self_refine(ControlPath(call_s=0.008, jitter=0, call_jitter=0))
    assert way.records[0].latency_s == pytest.approx(bare.records[0].latency_s + 3 * 0.008)
    for b, w in zip(bare.records[0].stages, way.records[0].stages, strict=True):
        assert (w.call_ended_at - w.call_started_at) == pytest.approx(
            b.call_ended_at - b.call_started_at + 0.008)
    assert last_freed(way) == pytest.approx(way.records[0].stages[-1].call_ended_at)


class Timed(Simulator):
    """The simulator, noting when each call reached Triton's queue (after its send) and
    when each batch reached its engine (after it took its slot)."""

    def run(self, *args, **kw):
        self.reached, self.engine_after = [], []
        return super().run(*args, **kw)

    def _submit(self, call):
        self.reached.append(self._now - call.sent_at)
        super()._submit(call)

    def _decode(self, m, e, batch, out, taken):
        self.engine_after.append(self._now - taken)
        super()._decode(m, e, batch, out, taken)


def test_the_calls_way_is_split_around_the_batcher():
    """ControlPath.call_before: the share of the call's way before it reaches Triton's
    queue; the rest comes after the answers leave, and the executor times the whole."""
    from aragog.common.workflow import parse_workflow

    pool = one_model_pool(4)
    fixed = ControlPath(jitter=0, call_jitter=0)
    bare = one_call_each(fixed, 0.0)[0]
    model = bare.call_ended_at - bare.call_started_at
    for before in (0.0, 0.65, 1.0):
        sim = Timed(pool, [parse_workflow(ONE_STAGE, pool.names)],
                    control=dataclasses.replace(fixed, call_s=0.004, call_before=before))
        st = sim.run([Arrival(0.0, "one", "a b c")], "largest").records[0].stages[0]
        assert sim.reached == pytest.approx([0.004 * before])
        assert st.call_ended_at - st.call_started_at == pytest.approx(model + 0.004)


def test_tritons_hop_holds_the_slot_and_moves_the_engine():
    """ControlPath.hop_s: the batch holds its Triton slot from leaving the batcher, through
    the hop to the handler (`hop_before` of it: the engine starts that much later), the
    engine and the hop back; with one slot, the next batch starts only when the last one's
    hop back has ended."""
    from aragog.common.settings import PoolSettings
    from aragog.common.workflow import parse_workflow

    pool = one_model_pool(2)  # two leases, one slot: the second call waits at the batcher
    one_slot = PoolSettings(batches_per_instance=1)
    fixed = ControlPath(jitter=0, call_jitter=0)

    def run(control: ControlPath):
        sim = Timed(pool, [parse_workflow(ONE_STAGE, pool.names)], control=control,
                    pool_settings=one_slot)
        result = sim.run([Arrival(0.0, "one", "a b c"), Arrival(0.003, "one", "a b c")],
                         "largest")
        return (sorted(r.latency_s for r in result.records), result.batchers[pool.names[0]],
                sim.engine_after)

    (first, second), stats, prefill = run(fixed)
    (hop_first, hop_second), hop_stats, engine_after = run(
        dataclasses.replace(fixed, hop_s=0.005, hop_before=0.4))
    assert engine_after == pytest.approx([p + 0.002 for p in prefill])
    assert hop_first == pytest.approx(first + 0.005)
    assert hop_second == pytest.approx(second + 2 * 0.005)  # waited for the first's slot
    # as Triton's statistics count it: two batches of one, each computing hop and model
    assert hop_stats.calls == 2 and hop_stats.batches == {1: 2}
    assert hop_stats.compute_s[1] == pytest.approx(stats.compute_s[1] + 2 * 0.005)
    assert hop_stats.queue_s == pytest.approx(stats.queue_s + 0.005)


def test_the_simulated_pool_counts_batches_as_tritons_statistics_do():
    """Result.batchers: per model, calls, their wait at the batcher, batches by size and
    their compute time, as Triton's statistics API gives them for the live pool."""
    fixed = ControlPath(jitter=0, call_jitter=0)
    from aragog.common.workflow import parse_workflow

    pool = one_model_pool(3)
    sim = Simulator(pool, [parse_workflow(ONE_STAGE, pool.names)], control=fixed)
    result = sim.run([Arrival(0.0, "one", "a b c"), Arrival(0.0005, "one", "a b c"),
                      Arrival(1.0, "one", "a b c")], "largest")
    stats = result.batchers[pool.names[0]]
    m = pool.models[0]
    assert stats.calls == 3 and stats.batches == {1: 1, 2: 1}
    # the pair left when the first had waited the queue delay; the lone one likewise
    assert stats.queue_s == pytest.approx(3 * sim.queue_delay_s - 0.0005)
    assert stats.compute_s[2] == pytest.approx(m.batch_latency_s(2, 3, 64) * pool.time_scale)
    assert stats.compute_s[1] == pytest.approx(m.batch_latency_s(1, 3, 64) * pool.time_scale)


def test_tritons_statistics_are_read_per_model_and_between_two_readings():
    """validate.batchers_of reads Triton's statistics response (as JSON: counts and ns as
    strings; a batch's compute is its input, infer and output parts); since() gives what was
    counted between two readings; batcher_figures the shares and means."""
    from aragog.sim.validate import batcher_figures, batchers_of, since

    def reading(calls: int, queue_ns: int, **by_size: tuple[int, int]):
        def part(count: int, ns: int) -> dict:
            return {"count": str(count), "ns": str(ns)} if count else {}

        sizes = [{"batch_size": name[-1], "compute_input": part(n, ns // 10),
                  "compute_infer": part(n, ns - ns // 5), "compute_output": part(n, ns // 10)}
                 for name, (n, ns) in by_size.items()]
        return {"model_stats": [
            {"name": "m", "version": "1", "inference_stats": {
                "success": part(calls, 1), "queue": part(calls, queue_ns)},
             "batch_stats": sizes},
            {"name": "idle", "version": "1", "inference_stats": {"success": {}}}]}

    before = batchers_of(reading(1, 2_000_000, of1=(1, 300_000_000)))
    after = batchers_of(reading(7, 14_000_000, of1=(3, 900_000_000), of2=(2, 800_000_000)))
    assert before["idle"].calls == 0 and before["m"].batches == {1: 1}
    assert after["m"].compute_s == pytest.approx({1: 0.9, 2: 0.8})
    run = since(after, before)
    assert set(run) == {"m"}  # a model with no call in between is left out
    assert run["m"].calls == 6 and run["m"].batches == {1: 2, 2: 2}
    got = batcher_figures([run, run])["m"]
    assert got["calls"] == 6  # per run
    assert got["shared"] == pytest.approx(4 / 6)
    assert got["queue_ms"] == pytest.approx(2.0)
    assert got["compute_ms"] == pytest.approx({1: 300.0, 2: 400.0})
    # a model loaded again between the readings counts from 0: its later reading alone
    reloaded = since(before, after)
    assert reloaded["m"].calls == 1 and reloaded["m"].batches == {1: 1}


def test_the_control_paths_command_line_settings_round_trip():
    import argparse

    ap = argparse.ArgumentParser()
    default = ControlPath(0.009, before=0.35, release_s=0.003, call_s=0.008, call_before=0.6,
                          hop_s=0.005, hop_before=0.4, jitter=0.2, call_jitter=0.19,
                          together=0.5, batch_late_s=0.0012, round_s=0.001,
                          round_wait_s=0.0006)
    default.add_arguments(ap)
    got = ControlPath.from_arguments(ap.parse_args([]))
    assert dataclasses.astuple(got) == pytest.approx(dataclasses.astuple(default))
    with pytest.raises(ValueError, match="before the call"):
        ControlPath.from_arguments(ap.parse_args(["--control-before", "2"]))


def test_the_validation_reports_how_far_the_live_stack_is_from_itself():
    from aragog.sim.validate import render, render_seeds

    def result(p50s: list[float], sim: float) -> dict:
        summary = {"throughput": 1.0, "latency_p50_s": sum(p50s) / len(p50s),
                   "latency_p95_s": 2.0, "by_status": {"ok": 10}, "model_shares": {"m": 1.0}}
        return {"workflow": "w", "policy": "p", "requests": 10,
                "live": summary, "sim": {**summary, "latency_p50_s": sim},
                "live_each": {"throughput": [1.0] * len(p50s), "latency_p50_s": p50s,
                              "latency_p95_s": [2.0] * len(p50s)},
                "live_ok": [10] * len(p50s),
                "difference": {"throughput": 0.0, "latency_p95_s": 0.0,
                               "latency_p50_s": sim / (sum(p50s) / len(p50s)) - 1}}

    one = render(result([0.8, 1.2], 1.0))
    assert "live 1.000 (mean of 2 runs: 0.800 to 1.200), simulated 1.000 (+0.0%)" in one
    both = render_seeds({0: result([0.8, 1.2], 1.0), 1: result([1.0, 1.1], 1.05)})
    assert "live's own runs apart by x1.50, x1.10" in both
