"""The router's HTTP/JSON front door and its OpenAI-compatible endpoint, on the live stack,
called with plain HTTP and with the official OpenAI Python SDK."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
from aragog.stack import shipped_workflow

pytestmark = pytest.mark.integration


def call(stack, method: str, path: str, body: dict | None = None, accept: str = ""):
    req = urllib.request.Request(
        f"http://{stack.http_addr}{path}",
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **({"Accept": accept} if accept else {})},
    )
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_json_front_door_registers_submits_and_streams(stack):
    code, text = call(stack, "POST", "/v1/workflows", {"yaml": shipped_workflow("chain3")})
    assert code == 200 and json.loads(text)["configurations"] == "27"  # uint64 as JSON string
    code, text = call(
        stack,
        "POST",
        "/v1/requests",
        {
            "workflow_id": "chain3",
            "input": "What is HTTP?",
            "policy": "cheapest",
            "request_id": "http-1",
        },
    )
    status = json.loads(text)
    assert code == 200 and status["state"] == "REQUEST_STATE_SUCCEEDED" and status["answer"]
    assert [s["model"] for s in status["stages"]] == ["llama3-3b"] * 3
    code, text = call(stack, "GET", "/v1/requests/http-1")
    assert code == 200 and json.loads(text)["answer"] == status["answer"]
    code, text = call(stack, "POST", "/v1/requests/http-1/outcome", {"reward": "yes"})
    assert code == 400 and "reward" in json.loads(text)["error"]["message"]
    code, text = call(stack, "POST", "/v1/requests/http-1/outcome", {"reward": 1})
    assert code == 200 and json.loads(text) == {"request_id": "http-1", "model": "llama3-3b"}
    code, text = call(stack, "POST", "/v1/requests/http-1/outcome", {"reward": 0})
    assert code == 409 and json.loads(text)["error"]["code"] == "already_exists"
    code, text = call(
        stack,
        "POST",
        "/v1/requests",
        {"workflow_id": "chain3", "input": "Stream me", "policy": "largest"},
        accept="text/event-stream",
    )
    kinds = [
        line.removeprefix("event: ") for line in text.splitlines() if line.startswith("event:")
    ]
    assert code == 200 and kinds[0] == "admitted" and kinds[-1] == "completed"
    assert kinds.count("stage_finished") == 3
    # errors: the gRPC code as an HTTP status, OpenAI's error shape
    code, text = call(stack, "POST", "/v1/requests", {"workflow_id": "nope", "input": "x"})
    assert code == 400 and "unknown workflow" in json.loads(text)["error"]["message"]
    assert call(stack, "GET", "/v1/requests/no-such-id")[0] == 404
    code, text = call(
        stack, "POST", "/v1/requests", {"workflow_id": "chain3", "input": "x", "policy": "aragog"}
    )
    assert code == 412 and "routing artifacts" in json.loads(text)["error"]["message"]
    assert call(stack, "POST", "/v1/requests", {"workflow_id": "chain3"})[0] == 400


def test_openai_sdk_gets_answers_routed_by_a_policy(stack):
    import openai

    client = openai.OpenAI(base_url=f"http://{stack.http_addr}/v1", api_key="unused")
    assert "aragog/largest" in [m.id for m in client.models.list().data]
    reply = client.chat.completions.create(
        model="aragog/cheapest", messages=[{"role": "user", "content": "Say hi."}]
    )
    assert reply.choices[0].message.content and reply.choices[0].finish_reason == "stop"
    assert reply.system_fingerprint == "llama3-3b"  # the pool model that answered
    largest = client.chat.completions.create(
        model="aragog/largest", messages=[{"role": "user", "content": "Say hi."}]
    )
    assert largest.system_fingerprint == "llama3-70b"
    chunks = list(
        client.chat.completions.create(
            model="aragog/cheapest",
            messages=[{"role": "user", "content": "Stream hi."}],
            stream=True,
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.BadRequestError, match="unknown policy"):
        client.chat.completions.create(
            model="aragog/fastest", messages=[{"role": "user", "content": "x"}]
        )
