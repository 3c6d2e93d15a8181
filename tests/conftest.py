"""Fixtures: real servers, started on free loopback ports unless given by option.

--redis-url URL     use a running Redis (tests use their own namespace and clean it)
--triton-url H:P    use a running Triton serving the pool's models (with --triton-metrics-url)
--tls               every stack the tests start speaks TLS on each port and mutual TLS among
                    its services (certificates from a test CA); `make test-tls`
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid

import pytest
import redis
from aragog.stack import Stack, free_port, redis_server_binary


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--redis-url", default=os.environ.get("ARAGOG_TEST_REDIS_URL", ""))
    parser.addoption("--triton-url", default=os.environ.get("ARAGOG_TEST_TRITON_URL", ""))
    parser.addoption("--tls", action="store_true",
                     default=os.environ.get("ARAGOG_TEST_TLS", "") not in ("", "0"))


@pytest.fixture(scope="session")
def tls_env(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
            ) -> dict[str, str]:
    """The settings that switch a stack to TLS (a certificate for 127.0.0.1 from a test CA),
    under --tls; else none. Every stack a test starts takes them, so the suite runs both ways."""
    if not request.config.getoption("--tls"):
        return {}
    import trustme

    ca = trustme.CA()
    d = tmp_path_factory.mktemp("tls-session")
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.private_key_pem.write_to_path(str(d / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(d / "cert.pem"))
    ca.cert_pem.write_to_path(str(d / "ca.pem"))
    return {"ARAGOG_TLS_CERT_FILE": str(d / "cert.pem"), "ARAGOG_TLS_KEY_FILE": str(d / "key.pem"),
            "ARAGOG_TLS_CA_FILE": str(d / "ca.pem")}


@pytest.fixture(scope="session")
def redis_url(request: pytest.FixtureRequest):
    """A real Redis: the given one, or a redis-server child on a free port."""
    given = request.config.getoption("--redis-url")
    if given:
        yield given
        return
    port = free_port()
    proc = subprocess.Popen(
        [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + 20
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                proc.kill()
                raise
            time.sleep(0.05)
    client.close()
    yield url
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def namespace(redis_url: str):
    """A fresh key namespace, deleted afterwards."""
    ns = f"t{uuid.uuid4().hex[:10]}"
    yield ns
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"{ns}:*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def one_slot_pool(tmp_path):
    """The default pool with one slot per model, so a single stage fills a model."""
    import importlib.resources

    import yaml
    from aragog.common.pool import load_pool

    spec = yaml.safe_load(
        importlib.resources.files("aragog.pool").joinpath("pool.yaml").read_text("utf-8"))
    for m in spec["models"]:
        m["instances"], m["saturation_batch"] = 1, 1
    path = tmp_path / "pool.yaml"
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    return load_pool(str(path))


ROUTED = ("llama3", "voting")
"""The (pool family, workflow) the session stack has a trained router for. Voting's four
voters start together, which exercises the scheduler's placeholder F(r) under concurrency."""


@pytest.fixture(scope="session")
def artifacts_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Routing artifacts (profile + trained router) for ROUTED, built once per session
    from the generated benchmark and real MiniLM embeddings (~1-2 min: 5 trainings)."""
    from aragog.routing.embedding import Embedder
    from aragog.training.build import build_benchmark

    root = str(tmp_path_factory.mktemp("artifacts"))
    build_benchmark(root, *ROUTED, Embedder(), say=lambda m: None)
    return root


@pytest.fixture(scope="session")
def stack(request: pytest.FixtureRequest, redis_url: str, artifacts_dir: str,
          tls_env: dict[str, str]):
    """The whole stack: Redis, Triton with the emulated pool, scheduler, load-monitor,
    router and two executors, each its own process, on free loopback ports.

    Leases and idle claims are short so that fault tests finish quickly. The router has the
    session's routing artifacts; its default policy is `largest`, since most tests run
    workflows without artifacts (for which `aragog` refuses: tests name it where they mean it).
    """
    s = Stack(
        redis_url=redis_url,
        triton_url=request.config.getoption("--triton-url"),
        executors=2,
        namespace=f"s{uuid.uuid4().hex[:8]}",
        extra_env={
            "ARAGOG_LEASE_TTL_S": "3",
            "ARAGOG_CLAIM_IDLE_S": "1.5",
            "ARAGOG_SHUTDOWN_GRACE_S": "8",
            "ARAGOG_LOG_LEVEL": "info",
            "ARAGOG_ARTIFACTS_DIR": artifacts_dir,
            "ARAGOG_DEFAULT_POLICY": "largest",
            "ARAGOG_LLM_WORKFLOW": "chat",  # the front door's single-model route
            **tls_env,
        },
    )
    s.start(timeout_s=180)
    yield s
    s.stop()


SLOW = """\
id: slow
description: A long first stage on the largest model, then a short one.
stages:
  - name: think
    kind: llm
    prompt: "{input}"
    candidates: [llama3-70b]
    output_tokens: 5000
  - name: answer
    kind: llm
    depends_on: [think]
    prompt: "{think}"
    candidates: [llama3-70b]
    output_tokens: 16
"""


@pytest.fixture(scope="session")
def slow_workflow(stack) -> str:
    """A workflow whose requests stay unfinished a while (~5 s, most of it in their first
    stage, on llama3-70b), for tests that act on requests while they wait or run."""
    return stack.register(SLOW).workflow.id
