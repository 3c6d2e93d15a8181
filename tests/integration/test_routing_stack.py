"""The learned router in the running stack: F(r) at admission, the per-input and per-workflow
baselines from the profile (real MiniLM embeddings, EMULATED model answers)."""

from __future__ import annotations

import concurrent.futures

import grpc
import numpy as np
import pytest
import redis
from aragog.common.pool import load_pool
from aragog.common.workflow import parse_workflow
from aragog.emulation.generate import benchmark
from aragog.routing import artifacts
from aragog.routing.model import cheapest_of
from aragog.stack import shipped_workflow
from aragog.v1 import common_pb2

from tests.conftest import ROUTED

pytestmark = pytest.mark.integration
FAMILY, WORKFLOW = ROUTED


@pytest.fixture(scope="module")
def art(stack, artifacts_dir):
    reg = stack.register(shipped_workflow(WORKFLOW))
    pool = load_pool(FAMILY)
    loaded, why = artifacts.load(artifacts_dir, pool, parse_workflow(shipped_workflow(WORKFLOW),
                                                                      pool.names))
    assert loaded is not None, why
    assert reg.configurations == loaded.space.size
    return loaded


def final(events):
    assert events[-1].WhichOneof("event") == "completed"
    return events[-1].completed


def stored(stack, rid: str) -> tuple[dict, np.ndarray]:
    client = redis.Redis.from_url(stack.redis_url)
    fields = client.hgetall(f"{stack.namespace}:req:{rid}")
    f = np.frombuffer(client.get(f"{stack.namespace}:req:{rid}:f"), dtype=np.int64)
    client.close()
    return fields, f


def test_aragog_routes_each_request_to_a_narrower_f(stack, art):
    items = benchmark(WORKFLOW).split("test")[:8]
    sizes = []
    # concurrently: stages that start together while F(r) is still the placeholder
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        runs = list(pool.map(lambda it: stack.submit(WORKFLOW, it.input, policy="aragog",
                                                     timeout_s=60)[0], items))
    for events in runs:
        status = final(events)
        assert status.state == common_pb2.REQUEST_STATE_SUCCEEDED, status.error
        fields, f = stored(stack, status.request_id)
        assert fields[b"routing"] == b"done"  # the placeholder was replaced
        assert art.space.largest in f and (np.diff(f) > 0).all()
        assert int(fields[b"admitted"]) == len(f)
        # what ran is one configuration of the final F(r), even if its first stage was placed
        # from the placeholder (the largest configuration is in every F(r))
        assert art.space.workflow.config_index([s.model for s in status.stages]) in f
        sizes.append(len(f))
    assert min(sizes) < art.space.size  # the router excluded configurations somewhere


def test_per_input_binds_the_cheapest_configuration_of_the_profiled_f(stack, art):
    it = benchmark(WORKFLOW).split("test")[0]
    truth = art.true_f(it.input)
    cheapest = cheapest_of(art.space, truth)
    status = final(stack.submit(WORKFLOW, it.input, policy="per-input")[0])
    assert [s.model for s in status.stages] == art.space.models(cheapest)
    assert status.admitted_configurations == 1


def test_per_input_from_the_router_binds_one_configuration_of_its_f(stack, art):
    from aragog.routing.embedding import Embedder

    it = benchmark(WORKFLOW).split("test")[3]
    routed = art.router.route(art.features([it.input], Embedder())[0], art.space)
    status = final(stack.submit(WORKFLOW, it.input, policy="per-input:router")[0])
    assert status.state == common_pb2.REQUEST_STATE_SUCCEEDED, status.error
    assert status.admitted_configurations == 1
    ran = art.space.workflow.config_index([s.model for s in status.stages])
    assert ran == cheapest_of(art.space, routed)
    status = final(stack.submit(WORKFLOW, it.input, policy="per-input:load")[0])
    assert status.admitted_configurations == 1
    assert art.space.workflow.config_index([s.model for s in status.stages]) in routed


def test_per_workflow_uses_the_profiled_configuration(stack, art):
    it = benchmark(WORKFLOW).split("test")[1]
    status = final(stack.submit(WORKFLOW, it.input, policy="per-workflow")[0])
    assert [s.model for s in status.stages] == art.summary["per_workflow_models"]


def test_per_input_refuses_an_input_without_a_profile(stack, art):
    with pytest.raises(grpc.RpcError) as e:
        stack.submit(WORKFLOW, "How many orders were placed yesterday?", policy="per-input")
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "profiled F(r)" in e.value.details()


def test_a_request_id_admitted_again_for_another_workflow_runs_that_workflow(stack, art):
    """Ids come back once a request's state is gone (TTL, a reset): the scheduler must not
    serve the new request from its memory of the old one."""
    rid = "reused-id-1"
    stack.register(shipped_workflow("chain3"))
    first = final(stack.submit("chain3", "hello", request_id=rid)[0])
    assert first.state == common_pb2.REQUEST_STATE_SUCCEEDED
    client = redis.Redis.from_url(stack.redis_url)
    client.delete(*client.keys(f"{stack.namespace}:req:{rid}*"))
    client.close()
    it = benchmark(WORKFLOW).split("test")[2]
    again = final(stack.submit(WORKFLOW, it.input, request_id=rid, policy="largest")[0])
    assert again.state == common_pb2.REQUEST_STATE_SUCCEEDED, again.error
    assert [s.stage for s in again.stages] == [s.name for s in art.space.workflow.llm_stages]
