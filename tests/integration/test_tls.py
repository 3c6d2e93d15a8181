"""TLS on every service's port and mutual TLS between the services, from settings.

A stack of its own (sharing the session's Redis, under its own namespace, and Triton) whose
services all get a certificate for 127.0.0.1 signed by a test CA (trustme), and the CA: the
router speaks TLS, the scheduler, load-monitor and executors want client certificates.
"""

from __future__ import annotations

import json
import urllib.request
import uuid

import grpc
import pytest
import trustme
from aragog.client import Client, Unavailable
from aragog.stack import Stack, shipped_workflow
from aragog.v1 import common_pb2, scheduler_pb2, scheduler_pb2_grpc

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def tls_stack(stack, ca, tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.private_key_pem.write_to_path(str(d / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(d / "cert.pem"))
    ca.cert_pem.write_to_path(str(d / "ca.pem"))
    s = Stack(
        redis_url=stack.redis_url, triton_url=stack.triton_url,
        triton_metrics_url=stack.triton_metrics_url, executors=1,
        namespace=f"t{uuid.uuid4().hex[:8]}", log_dir=str(tmp_path_factory.mktemp("tls-stack")),
        extra_env={"ARAGOG_TLS_CERT_FILE": str(d / "cert.pem"),
                   "ARAGOG_TLS_KEY_FILE": str(d / "key.pem"),
                   "ARAGOG_TLS_CA_FILE": str(d / "ca.pem"),
                   "ARAGOG_DEFAULT_POLICY": "largest"},
    )
    s.start(timeout_s=120)
    yield s
    s.stop()


def test_requests_run_over_tls_end_to_end(tls_stack, ca):
    """Client -> router over TLS; executors -> scheduler over mutual TLS."""
    with Client(tls_stack.router_addr, root_certificates=ca.cert_pem.bytes()) as c:
        c.register_workflow(shipped_workflow("chain3"))
        status = c.run("chain3", "over TLS")
    assert status.state == common_pb2.REQUEST_STATE_SUCCEEDED
    assert [st.stage for st in status.stages] == ["draft", "critique", "refine"]


def test_a_plaintext_or_untrusting_client_gets_nothing(tls_stack):
    with Client(tls_stack.router_addr) as c, pytest.raises(Unavailable):
        c.list_workflows()
    with Client(tls_stack.router_addr, tls=True) as c, pytest.raises(Unavailable):
        c.list_workflows()  # the system's roots do not know the test CA


def scheduler_state(addr: str, creds: grpc.ChannelCredentials):
    with grpc.secure_channel(addr, creds) as ch:
        return scheduler_pb2_grpc.SchedulerServiceStub(ch).GetSchedulerState(
            scheduler_pb2.GetSchedulerStateRequest(), timeout=5)


def test_the_scheduler_wants_a_client_certificate_its_ca_signed(tls_stack, ca):
    root = ca.cert_pem.bytes()
    with pytest.raises(grpc.RpcError) as err:
        scheduler_state(tls_stack.scheduler_addr, grpc.ssl_channel_credentials(root))
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    stranger = trustme.CA().issue_cert("127.0.0.1")
    with pytest.raises(grpc.RpcError):
        scheduler_state(tls_stack.scheduler_addr, grpc.ssl_channel_credentials(
            root, stranger.private_key_pem.bytes(), stranger.cert_chain_pems[0].bytes()))
    ours = ca.issue_cert("executor.example")
    state = scheduler_state(tls_stack.scheduler_addr, grpc.ssl_channel_credentials(
        root, ours.private_key_pem.bytes(), ours.cert_chain_pems[0].bytes()))
    assert state.capacity


def test_the_http_front_door_reaches_its_router_over_tls(tls_stack):
    with urllib.request.urlopen(f"http://{tls_stack.http_addr}/v1/workflows", timeout=30) as r:
        assert r.status == 200 and "workflows" in json.loads(r.read())


def test_the_images_health_probe_speaks_the_services_tls(tls_stack, ca, tmp_path):
    """infra/healthcheck.py, run with a service's TLS settings (as an exec probe in its
    container): plaintext gets nothing from a TLS port; with the settings, it presents the
    certificate the scheduler requires and verifies the server's, by the name it is told
    when the certificate does not hold the address dialled."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    probe = Path(__file__).resolve().parents[2] / "infra" / "healthcheck.py"
    ours = ca.issue_cert("scheduler.aragog.svc")
    for name, pem in (("key", ours.private_key_pem), ("cert", ours.cert_chain_pems[0]),
                      ("ca", ca.cert_pem)):
        pem.write_to_path(str(tmp_path / f"{name}.pem"))
    tls = {f"ARAGOG_TLS_{k.upper()}_FILE": str(tmp_path / f"{k}.pem") for k in ("ca", "cert", "key")}

    def run(env: dict[str, str]) -> subprocess.CompletedProcess:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("ARAGOG_TLS_")}
        return subprocess.run([sys.executable, str(probe), tls_stack.scheduler_addr, "3"],
                              env={**clean, **env}, capture_output=True, text=True, timeout=30)

    assert run({}).returncode == 1  # plaintext
    ok = run({**tls, "ARAGOG_TLS_SERVER_NAME": "localhost"})  # the stack's cert holds it
    assert ok.returncode == 0 and "SERVING" in ok.stdout, ok
    wrong = run({**tls, "ARAGOG_TLS_SERVER_NAME": "elsewhere.example"})
    assert wrong.returncode == 1, wrong
    missing = run({**tls, "ARAGOG_TLS_CA_FILE": str(tmp_path / "nope.pem")})
    assert missing.returncode == 1 and "TLS setting" in missing.stdout, missing


def test_the_session_stack_speaks_as_the_suite_was_told(stack, tls_env):
    """`pytest --tls` (`make test-tls`) runs every test on stacks that speak TLS; without
    it, on plaintext ones: this checks which way the session's stack really went."""
    with Client(stack.router_addr) as plain:
        if tls_env:
            with pytest.raises(Unavailable):
                plain.list_workflows()
        else:
            plain.list_workflows()
    with stack.client() as c:  # the harness's client, trusting the stack's CA if it has one
        c.list_workflows()
    with stack.channel(stack.scheduler_addr) as ch:  # and a service's certificate, if any
        scheduler_pb2_grpc.SchedulerServiceStub(ch).GetSchedulerState(
            scheduler_pb2.GetSchedulerStateRequest(), timeout=5)
