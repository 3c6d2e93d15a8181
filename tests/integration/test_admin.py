"""Admin calls on the live stack: a tenant's requests listed page by page, a workflow
deprecated (new requests refused, admitted ones untouched)."""

from __future__ import annotations

import uuid

import grpc
import pytest
from aragog.client import AragogError
from aragog.stack import shipped_workflow
from aragog.v1 import common_pb2

pytestmark = pytest.mark.integration


def code(call) -> grpc.StatusCode:
    with pytest.raises(AragogError) as err:
        call()
    return err.value.code


def test_a_tenants_requests_are_listed_newest_first_a_page_at_a_time(stack):
    tenant = f"t{uuid.uuid4().hex[:8]}"
    with stack.client() as c:
        c.register_workflow(shipped_workflow("chain3"))
        ids = [f"{tenant}-{i}" for i in range(5)]
        for rid in ids:
            c.run("chain3", f"listed {rid}", policy="cheapest", tenant=tenant, request_id=rid)
        c.run("chain3", "someone else's", policy="cheapest", tenant=tenant + "x")
        seen, token = [], ""
        while True:
            page = c.list_requests(tenant, limit=2, page_token=token)
            assert len(page.requests) <= 2
            seen += page.requests
            token = page.next_page_token
            if not token:
                break
        assert [r.request_id for r in seen] == ids[::-1]
        assert all(r.state == common_pb2.REQUEST_STATE_SUCCEEDED and r.workflow_id == "chain3"
                   and r.policy == "cheapest" for r in seen)
        assert [r.created_at for r in seen] == sorted((r.created_at for r in seen), reverse=True)
        assert code(lambda: c.list_requests(tenant, limit=1001)) == grpc.StatusCode.INVALID_ARGUMENT
        assert code(lambda: c.list_requests(tenant, page_token="nope")) \
            == grpc.StatusCode.INVALID_ARGUMENT
        assert code(lambda: c.list_requests("bad:tenant")) == grpc.StatusCode.INVALID_ARGUMENT
        assert not c.list_requests(f"nobody{uuid.uuid4().hex[:6]}").requests


def test_a_deprecated_workflow_takes_no_new_requests_and_keeps_its_old_ones(stack):
    wid = f"old-{uuid.uuid4().hex[:6]}"
    with stack.client() as c:
        c.register_workflow(shipped_workflow("chain3").replace("id: chain3", f"id: {wid}"))
        before = c.run(wid, "admitted before", policy="cheapest", request_id=f"{wid}-0")
        assert c.deprecate_workflow(wid).deprecated
        assert c.deprecate_workflow(wid).deprecated, "idempotent"
        assert {w.id: w.deprecated for w in c.list_workflows()}[wid]
        assert code(lambda: c.run(wid, "after", policy="cheapest")) \
            == grpc.StatusCode.FAILED_PRECONDITION
        again = c.run(wid, "re-attach", request_id=f"{wid}-0")
        assert again.answer == before.answer, "an admitted request is still answered"
        assert code(lambda: c.deprecate_workflow("no-such-workflow")) == grpc.StatusCode.NOT_FOUND
        assert code(lambda: c.register_workflow(shipped_workflow("chain3").replace(
            "id: chain3", f"id: {wid}").replace("output_tokens: ", "output_tokens: 1", 1))) \
            == grpc.StatusCode.ALREADY_EXISTS, "its id stays taken"
