"""OpenTelemetry traces: a stack whose services send spans to an OTLP/gRPC collector (here a
real gRPC server in the test, speaking the OTLP trace service) puts one request's spans from
the router, the executor and the scheduler in one trace, and logs carry its trace id."""

from __future__ import annotations

import json
import threading
import time
import uuid
from concurrent import futures

import grpc
import pytest
from aragog.stack import Stack, free_port, shipped_workflow
from aragog.v1 import common_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

pytestmark = pytest.mark.integration


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """Keeps every span exported to it: (service name, span name, trace id, parent span id,
    span id)."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, str, str, str, str]] = []
        self.lock = threading.Lock()

    def Export(self, request, context):  # noqa: N802
        with self.lock:
            for rs in request.resource_spans:
                service = next((a.value.string_value for a in rs.resource.attributes
                                if a.key == "service.name"), "")
                for ss in rs.scope_spans:
                    for sp in ss.spans:
                        self.spans.append((service, sp.name, sp.trace_id.hex(),
                                           sp.parent_span_id.hex(), sp.span_id.hex()))
        return trace_service_pb2.ExportTraceServiceResponse()


@pytest.fixture(scope="module")
def collector():
    c = Collector()
    server = grpc.server(futures.ThreadPoolExecutor(4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(c, server)
    port = free_port()
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    yield c, f"127.0.0.1:{port}"
    server.stop(0)


@pytest.fixture(scope="module")
def traced_stack(stack, collector, tmp_path_factory, tls_env):
    s = Stack(
        redis_url=stack.redis_url, triton_url=stack.triton_url,
        triton_metrics_url=stack.triton_metrics_url, executors=1,
        namespace=f"o{uuid.uuid4().hex[:8]}", log_dir=str(tmp_path_factory.mktemp("otel")),
        extra_env={"ARAGOG_OTEL_ENDPOINT": collector[1], "ARAGOG_DEFAULT_POLICY": "largest",
                   "OTEL_BSP_SCHEDULE_DELAY": "100", **tls_env},  # export every 0.1 s
    )
    s.start(timeout_s=120)
    yield s
    s.stop()


def test_one_request_is_one_trace_across_the_services(traced_stack, collector):
    spans = collector[0].spans
    traced_stack.register(shipped_workflow("chain3"))
    events, _ = traced_stack.submit("chain3", "traced", request_id="traced-1")
    assert events[-1].completed.state == common_pb2.REQUEST_STATE_SUCCEEDED
    root = None
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with collector[0].lock:
            roots = [s for s in spans if s[0] == "aragog-router" and s[1] == "SubmitRequest"]
            if roots:
                root = roots[-1]
                mine = [s for s in spans if s[2] == root[2]]
                names = {(s[0], s[1]) for s in mine}
                if {("aragog-executor", "stage refine"), ("aragog-scheduler", "meta-queue"),
                        ("aragog-executor", "Triton infer")} <= names:
                    break
        time.sleep(0.2)
    assert root is not None, spans
    by_id = {s[4]: s for s in mine}
    request = [s for s in mine if s[1] == "request"]
    assert len(request) == 1 and request[0][3] == root[4], "the executor's span: the router's child"
    stages = [s for s in mine if s[1].startswith("stage ")]
    assert sorted(s[1] for s in stages) == ["stage critique", "stage draft", "stage refine"]
    assert all(s[3] == request[0][4] for s in stages)
    queued = [s for s in mine if s[0] == "aragog-scheduler" and s[1] == "meta-queue"]
    assert len(queued) == 3
    for q in queued:  # each wait in the meta-queue hangs below its stage's AcquireStage span
        acquire = by_id[q[3]]
        assert acquire[1] == "AcquireStage" and by_id[acquire[3]][1].startswith("stage ")
    assert len([s for s in mine if s[1] == "Triton infer"]) == 3
    # the executor's log lines within the request carry its trace id
    log = (traced_stack.executors[0].log_path)
    lines = [json.loads(x) for x in open(log, encoding="utf-8") if x.startswith("{")]
    finished = [x for x in lines if x.get("event") == "request_finished"
                and x.get("request_id") == "traced-1"]
    assert finished and finished[-1].get("trace_id") == root[2]
