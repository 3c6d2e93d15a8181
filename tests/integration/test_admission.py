"""Admission bounds through a router: refused with RESOURCE_EXHAUSTED and a retry hint,
nothing written, and admitted again once requests have finished."""

from __future__ import annotations

import concurrent.futures
import time

import grpc
import pytest
import redis
from aragog.v1 import common_pb2, router_pb2, router_pb2_grpc

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def bounded(stack, slow_workflow):
    """A second router on the session stack's Redis: 4 unfinished requests, 2 per tenant;
    the fixture gives a function that opens a channel to it."""
    proc = stack.add_router({"ARAGOG_MAX_QUEUED_REQUESTS": "4",
                             "ARAGOG_MAX_QUEUED_PER_TENANT": "2",
                             "ARAGOG_RETRY_AFTER_MS": "250"})
    yield lambda: stack.channel(proc.addr)
    proc.popen.terminate()
    proc.popen.wait(30)


def submit(channel, tenant: str, rid: str) -> list[router_pb2.SubmitRequestResponse]:
    with channel() as ch:
        return list(router_pb2_grpc.RouterServiceStub(ch).SubmitRequest(
            router_pb2.SubmitRequestRequest(workflow_id="slow", input=f"{rid} input",
                                            tenant=tenant, request_id=rid), timeout=120))


def wait_admitted(client: redis.Redis, ns: str, *rids: str) -> None:
    deadline = time.monotonic() + 30
    while not all(client.exists(f"{ns}:req:{rid}") for rid in rids):
        assert time.monotonic() < deadline, rids
        time.sleep(0.02)


def refused(channel, tenant: str, rid: str, client: redis.Redis, ns: str) -> grpc.RpcError:
    """Submit, expect a refusal that writes nothing; return the error."""
    before = (client.xlen(f"{ns}:work"), client.hgetall(f"{ns}:tenants"))
    with pytest.raises(grpc.RpcError) as err:
        submit(channel, tenant, rid)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, err.value.details()
    assert dict(err.value.trailing_metadata())["retry-after-ms"] == "250"
    assert "retry-after-ms" in err.value.details() and len(err.value.details()) <= 500
    assert (client.xlen(f"{ns}:work"), client.hgetall(f"{ns}:tenants")) == before
    assert not list(client.scan_iter(match=f"{ns}:req:{rid}*"))
    return err.value


def test_bounds_refuse_then_admit_again(stack, bounded):
    client = redis.Redis.from_url(stack.redis_url)
    ns = stack.namespace
    try:
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            acme = [pool.submit(submit, bounded, "acme", f"acme-{i}") for i in range(2)]
            wait_admitted(client, ns, "acme-0", "acme-1")
            err = refused(bounded, "acme", "acme-2", client, ns)
            assert "tenant 'acme' has 2 unfinished requests" in err.details()
            assert "ARAGOG_MAX_QUEUED_PER_TENANT=2" in err.details()

            bravo = [pool.submit(submit, bounded, "bravo", f"bravo-{i}") for i in range(2)]
            wait_admitted(client, ns, "bravo-0", "bravo-1")
            err = refused(bounded, "charlie", "charlie-0", client, ns)
            assert "ARAGOG_MAX_QUEUED_REQUESTS=4" in err.details()
            assert all(not f.done() for f in acme + bravo), "the bounds held while all ran"

            for f in acme:
                assert f.result()[-1].completed.state == common_pb2.REQUEST_STATE_SUCCEEDED
            again = submit(bounded, "acme", "acme-2")  # acme's requests ended: room again
            assert again[0].WhichOneof("event") == "admitted"
            assert again[-1].completed.state == common_pb2.REQUEST_STATE_SUCCEEDED
            for f in bravo:
                assert f.result()[-1].completed.state == common_pb2.REQUEST_STATE_SUCCEEDED
        assert client.hgetall(f"{ns}:tenants") == {} and client.xlen(f"{ns}:work") == 0
    finally:
        client.close()
