"""Bearer tokens on the router: callers are authenticated and see only their tenant's
requests, through gRPC and the HTTP front door. A stack of its own (sharing the session's
Redis, under its own namespace, and Triton), its router given a tokens file."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid

import grpc
import pytest
from aragog.client import AragogError
from aragog.router.auth import AuthError, Tokens
from aragog.stack import Stack, shipped_workflow
from aragog.v1 import common_pb2

pytestmark = pytest.mark.integration
ACME, GLOBEX = "acme-" + "a" * 20, "globex-" + "b" * 20  # tokens


@pytest.fixture(scope="module")
def auth_stack(stack, tmp_path_factory, tls_env):
    tokens = tmp_path_factory.mktemp("auth") / "tokens"
    tokens.write_text(f"# token tenant\n{ACME} acme\n{GLOBEX} globex  # a comment\n")
    s = Stack(
        redis_url=stack.redis_url, triton_url=stack.triton_url,
        triton_metrics_url=stack.triton_metrics_url, executors=1,
        namespace=f"a{uuid.uuid4().hex[:8]}", log_dir=str(tmp_path_factory.mktemp("auth-stack")),
        extra_env={"ARAGOG_AUTH_TOKENS_FILE": str(tokens), "ARAGOG_DEFAULT_POLICY": "largest",
                   **tls_env},
    )
    s.start(timeout_s=120)
    yield s
    s.stop()


def code(call) -> grpc.StatusCode:
    with pytest.raises(AragogError) as err:
        call()
    return err.value.code


def test_a_call_without_a_valid_token_is_refused(auth_stack):
    for token in (None, "not-a-token-we-know-of"):
        with auth_stack.client(token=token) as c:
            assert code(c.list_workflows) == grpc.StatusCode.UNAUTHENTICATED
            assert code(lambda: list(c.submit("chain3", "hi"))) == grpc.StatusCode.UNAUTHENTICATED
            assert code(lambda: c.status("x")) == grpc.StatusCode.UNAUTHENTICATED


def test_a_tenant_sees_and_cancels_only_its_own_requests(auth_stack):
    with auth_stack.client(token=ACME) as acme, \
            auth_stack.client(token=GLOBEX) as globex:
        acme.register_workflow(shipped_workflow("chain3"))
        assert "chain3" in [w.id for w in globex.list_workflows()], "workflows are shared"
        status = acme.run("chain3", "acme's secret input", request_id="acme-1")
        assert status.state == common_pb2.REQUEST_STATE_SUCCEEDED and status.tenant == "acme"
        assert acme.status("acme-1").answer == status.answer
        # to another tenant it does not exist, and its id cannot be taken over
        assert code(lambda: globex.status("acme-1")) == grpc.StatusCode.NOT_FOUND
        assert code(lambda: globex.cancel("acme-1")) == grpc.StatusCode.NOT_FOUND
        assert code(lambda: list(globex.submit("chain3", "mine now", request_id="acme-1"))) \
            == grpc.StatusCode.ALREADY_EXISTS
        assert code(lambda: list(globex.submit("chain3", "as acme", tenant="acme"))) \
            == grpc.StatusCode.PERMISSION_DENIED
        own = globex.run("chain3", "globex's input", tenant="globex")
        assert own.state == common_pb2.REQUEST_STATE_SUCCEEDED and own.tenant == "globex"
        assert acme.status("acme-1").state == common_pb2.REQUEST_STATE_SUCCEEDED
        # listings: one's own tenant only
        assert "acme-1" in [r.request_id for r in acme.list_requests().requests]
        assert "acme-1" not in [r.request_id for r in globex.list_requests().requests]
        assert code(lambda: globex.list_requests("acme")) == grpc.StatusCode.PERMISSION_DENIED


def http(s: Stack, path: str, token: str | None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    req = urllib.request.Request(f"http://{s.http_addr}{path}", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            json.loads(r.read())
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def test_the_http_front_door_passes_the_token_on(auth_stack):
    with auth_stack.client(token=ACME) as acme:
        acme.register_workflow(shipped_workflow("chain3"))
        acme.run("chain3", "over http", request_id="acme-http")
    assert http(auth_stack, "/v1/requests/acme-http", ACME) == 200
    assert http(auth_stack, "/v1/requests/acme-http", GLOBEX) == 404
    assert http(auth_stack, "/v1/requests/acme-http", None) == 401
    assert http(auth_stack, "/v1/workflows", None) == 401


@pytest.mark.parametrize("text, message", [
    ("", "no tokens in it"),
    ("short acme\n", "at least 16 characters"),
    (f"{ACME}\n", "expected `<token> <tenant>`"),
    (f"{ACME} acme\n{ACME} globex\n", "listed twice"),
    (f"{ACME} ac:me\n", "tenant"),
])
def test_a_bad_tokens_file_is_refused_with_the_line(tmp_path, text, message):
    path = tmp_path / "tokens"
    path.write_text(text)
    with pytest.raises(AuthError, match=message):
        Tokens.load(str(path))
    with pytest.raises(AuthError, match="No such file"):
        Tokens.load(str(tmp_path / "missing"))
