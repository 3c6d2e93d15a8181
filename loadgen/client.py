"""A synchronous gRPC client for the router: one request in, one `RequestRecord` out.

Synchronous because Locust and the runner drive it from gevent greenlets (grpc.aio does
not work there; see ENV-NOTES). The caller initialises gevent for gRPC before importing
this module when it runs under gevent; plain threads work too. Every outcome becomes a
record (failed, timed out, rejected, errored): an evaluation that dropped failures would
flatter the policy that causes them. Targets are restricted to loopback: this tool drives
a local stack and must not be pointed at someone else's server.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import time
from collections.abc import Callable
from typing import Any

import grpc
from aragog.v1 import common_pb2, router_pb2, router_pb2_grpc

STATUSES = ("ok", "failed", "timeout", "rejected", "error")


@dataclasses.dataclass
class StageRecord:
    """One finished stage as the router reports it (StageResult), plus when the client saw
    its start and end events (wall clock, 0 if not seen, e.g. on re-attach)."""

    stage: str
    model: str
    schedule_ms: float
    service_ms: float
    release_ms: float
    executor_id: str
    started_at: float = 0.0
    finished_at: float = 0.0
    gpu_seconds: float = 0.0
    call_started_at: float = 0.0  # the model call, as the executor timed it (StageResult)
    call_ended_at: float = 0.0
    placed_at: float = 0.0  # when the scheduler placed it (its clock)


@dataclasses.dataclass
class RequestRecord:
    """What happened to one request. Times: `arrival` is the scheduled offset (s from the
    run's start), sent_at/completed_at are wall clock (Unix s), latency_s is measured on the
    monotonic clock from send to the stream's end (or error). status is one of STATUSES;
    correct is None without an expected answer, False when the request gave no answer."""

    request_id: str
    workflow: str
    policy: str
    arrival: float
    sent_at: float
    completed_at: float
    latency_s: float
    status: str
    grpc_code: str = ""
    grpc_message: str = ""
    error: str = ""
    stages: list[StageRecord] = dataclasses.field(default_factory=list)
    answer: str = ""
    expected: str | None = None
    correct: bool | None = None
    gpu_seconds: float = 0.0
    admitted_configurations: int = 0
    tenant: str = ""
    index: int = -1
    send_lag_s: float = 0.0
    admission_s: float = 0.0  # from sending to the `admitted` event: the policy's overhead
    route: str = ""  # submitted without a workflow: the front door's route (agent, llm)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RequestRecord:
        d = dict(d)
        d["stages"] = [StageRecord(**s) for s in d.get("stages", [])]
        return cls(**d)


GpuSeconds = Callable[[str, StageRecord], float]


def service_seconds(model: str, stage: StageRecord) -> float:
    """Default GPU-seconds of a stage: its model-call time (one GPU-second per second)."""
    return stage.service_ms / 1000.0


def normalize_answer(text: str) -> str:
    """Compare answers leniently: case, surrounding punctuation and spacing do not count."""
    return re.sub(r"\s+", " ", text.casefold()).strip().strip(".!?;:,\"'` ").strip()


def check_loopback(target: str) -> str:
    """Return `target` as host:port if its host is loopback (127.0.0.0/8, ::1, localhost);
    raise ValueError otherwise. A scheme prefix (http://, grpc://) is dropped."""
    addr = re.sub(r"^[a-z][a-z0-9+.-]*://", "", target.strip()).rstrip("/")
    m = re.fullmatch(r"\[([0-9a-fA-F:]+)\]:(\d+)|([^:\[\]]+):(\d+)", addr)
    if not m:
        raise ValueError(f"router target {target!r} must be host:port (e.g. 127.0.0.1:50051)")
    host = m.group(1) or m.group(3)
    loopback = host == "localhost"
    if not loopback:
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
    if not loopback:
        raise ValueError(f"router target {target!r} is not loopback: the load generator only "
                         "drives a local stack (127.0.0.0/8, ::1 or localhost)")
    return addr


def _status_of(code: grpc.StatusCode) -> str:
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return "timeout"
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return "rejected"
    return "error"


class RouterClient:
    """One channel to the router; `submit` is safe to call from many greenlets/threads."""

    def __init__(self, target: str, timeout_s: float = 120.0, tenant: str = "loadgen",
                 gpu_seconds: GpuSeconds | None = None, root_certificates: bytes | None = None,
                 report_outcomes: bool = False):
        """`root_certificates`: the router speaks TLS, its certificate signed by these (PEM).
        `report_outcomes`: tell the router each graded answer's outcome (ReportOutcome), as
        a user grading the answers would, for policies that learn while serving."""
        self.report_outcomes = report_outcomes
        self.target = check_loopback(target)
        self.timeout_s = timeout_s
        self.tenant = tenant
        self.gpu_seconds = gpu_seconds or service_seconds
        self.channel = (grpc.secure_channel(self.target, grpc.ssl_channel_credentials(
            root_certificates)) if root_certificates else grpc.insecure_channel(self.target))
        self.stub = router_pb2_grpc.RouterServiceStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> RouterClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def submit(self, workflow: str, text: str, policy: str = "", request_id: str = "",
               expected: str | None = None, arrival: float = 0.0, index: int = -1,
               timeout_s: float | None = None) -> RequestRecord:
        """Submit one request, follow its stream to the end (or the deadline), record it."""
        rec = RequestRecord(request_id=request_id, workflow=workflow, policy=policy,
                            arrival=arrival, sent_at=time.time(), completed_at=0.0, latency_s=0.0,
                            status="error", expected=expected, tenant=self.tenant, index=index)
        seen: dict[str, StageRecord] = {}
        completed = None
        t0 = time.perf_counter()
        try:
            stream = self.stub.SubmitRequest(router_pb2.SubmitRequestRequest(
                workflow_id=workflow, input=text, tenant=self.tenant, policy=policy,
                request_id=request_id), timeout=timeout_s or self.timeout_s)
            for event in stream:
                rec.request_id = event.request_id or rec.request_id
                kind = event.WhichOneof("event")
                if kind == "admitted":
                    rec.admission_s = time.perf_counter() - t0
                    rec.policy = event.admitted.policy
                    rec.admitted_configurations = event.admitted.configurations
                    rec.workflow = event.admitted.workflow_id or rec.workflow
                    rec.route = event.admitted.intent.route
                elif kind == "stage_started":
                    seen[event.stage_started.stage] = StageRecord(
                        event.stage_started.stage, event.stage_started.model, 0, 0, 0,
                        event.stage_started.executor_id, started_at=time.time())
                elif kind == "stage_finished":
                    st = self._stage(event.stage_finished, seen.get(event.stage_finished.stage))
                    st.finished_at = time.time()
                    seen[st.stage] = st
                elif kind == "completed":
                    completed = event.completed
            if completed is None:
                rec.error = "the stream ended without a completed event"
        except grpc.RpcError as e:
            rec.status = _status_of(e.code())
            rec.grpc_code, rec.grpc_message = e.code().name, e.details() or ""
            rec.error = rec.grpc_message
        rec.latency_s = time.perf_counter() - t0
        rec.completed_at = time.time()
        if completed is not None:
            self._complete(rec, completed, seen)
        else:  # partial: the stages that finished before the failure still used GPUs
            rec.stages = [s for s in seen.values() if s.finished_at]
        for st in rec.stages:
            st.gpu_seconds = float(self.gpu_seconds(st.model, st)) if st.model else 0.0
        rec.gpu_seconds = sum(st.gpu_seconds for st in rec.stages)
        if rec.expected is not None and rec.correct is None:
            rec.correct = False  # no answer is a wrong answer; filter on status to separate them
        if self.report_outcomes and rec.status == "ok" and rec.correct is not None:
            try:
                self.stub.ReportOutcome(router_pb2.ReportOutcomeRequest(
                    request_id=rec.request_id, reward=float(rec.correct)), timeout=self.timeout_s)
            except grpc.RpcError as e:  # the answer stands; the policy learns one outcome less
                rec.error = f"ReportOutcome: {e.code().name}: {e.details()}"
        return rec

    @staticmethod
    def _stage(res: common_pb2.StageResult, started: StageRecord | None) -> StageRecord:
        return StageRecord(res.stage, res.model, res.schedule_ms, res.service_ms, res.release_ms,
                           res.executor_id, started_at=started.started_at if started else 0.0,
                           call_started_at=res.call_started_at, call_ended_at=res.call_ended_at,
                           placed_at=res.placed_at)

    def _complete(self, rec: RequestRecord, status: common_pb2.RequestStatus,
                  seen: dict[str, StageRecord]) -> None:
        rec.request_id = status.request_id or rec.request_id
        rec.policy = status.policy or rec.policy
        rec.admitted_configurations = status.admitted_configurations or rec.admitted_configurations
        rec.stages = []
        for res in status.stages:
            st = self._stage(res, seen.get(res.stage))
            st.finished_at = seen[res.stage].finished_at if res.stage in seen else 0.0
            rec.stages.append(st)
        if status.state == common_pb2.REQUEST_STATE_SUCCEEDED:
            rec.status, rec.answer, rec.error = "ok", status.answer, ""
            if rec.expected is not None:
                rec.correct = normalize_answer(rec.answer) == normalize_answer(rec.expected)
        else:
            rec.status = "failed"
            rec.error = status.error or common_pb2.RequestState.Name(status.state)
