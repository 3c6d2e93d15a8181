"""Open-loop driver: send requests at their scheduled times, whatever the stack's state.

Closed-loop clients (Locust users) wait for an answer before sending again, so a slow
policy slows its own load and hides its queueing; an evaluation needs arrivals fixed in
advance. `run_schedule` sends each arrival at its offset from one gevent greenlet per
request, at most `max_in_flight` at once: an arrival beyond that is recorded as "rejected"
by the load generator (never dropped), so the records always number the arrivals.

gRPC must be initialised for gevent in the process that drives it (ENV-NOTES), which would
disturb an asyncio or pytest caller, so `run_schedule` runs the driver in a subprocess,
`python -m aragog.loadgen.runner SPEC.json OUT.jsonl`, and exchanges JSON files with it.
Bounded: at most max_requests arrivals within max_duration_s, and the subprocess is killed
if it outlives the last arrival by timeout_s plus a grace.
"""

from __future__ import annotations

if __name__ == "__main__":  # the driver subprocess: gevent for gRPC before grpc is imported
    from gevent import monkey

    monkey.patch_all()
    import grpc.experimental.gevent

    grpc.experimental.gevent.init_gevent()

import importlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from collections import defaultdict  # noqa: E402
from collections.abc import Callable, Iterable, Sequence  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
from aragog.loadgen.arrivals import Trace  # noqa: E402
from aragog.loadgen.workload import WorkItem  # noqa: E402

MAX_REQUESTS = 50_000
MAX_DURATION_S = 3_600.0
GRACE_S = 30.0
LEAD_S = 0.2
"""Offset 0 is this long after the driver is ready, so the first arrivals are not late."""


def plan(schedule: Sequence[float] | np.ndarray | Trace | Iterable[tuple], workload: Sequence[Any],
         policy: str | None, run_id: str) -> list[dict[str, Any]]:
    """Pair arrivals with workload items: arrival k gets item k mod len(workload); an arrival
    that names its workflow (a trace) gets that workflow's items in turn. `policy` None lets
    each item's own policy (or the router's default) apply."""
    items = [WorkItem.of(w) for w in workload]
    if not items:
        raise ValueError("the workload is empty")
    if isinstance(schedule, Trace):
        rows = list(zip(schedule.offsets.tolist(), schedule.workflows, schedule.request_ids,
                        strict=True))
    elif isinstance(schedule, np.ndarray):
        rows = [(t, None, "") for t in schedule.tolist()]
    else:
        rows = [(a, None, "") if np.ndim(a) == 0 else (*a, "")[:3] for a in schedule]
    by_wf: dict[str, list[WorkItem]] = defaultdict(list)
    for it in items:
        by_wf[it.workflow].append(it)
    used: dict[str, int] = defaultdict(int)
    out = []
    for k, (offset, wf, rid) in enumerate(rows):
        offset = float(offset)
        if not (np.isfinite(offset) and offset >= 0):
            raise ValueError(f"arrival {k}: offset {offset!r} must be finite and >= 0")
        if wf is None:
            it = items[k % len(items)]
        elif wf in by_wf:
            it = by_wf[wf][used[wf] % len(by_wf[wf])]
            used[wf] += 1
        else:
            raise ValueError(f"arrival {k} names workflow {wf!r}, which the workload has no item "
                             f"for (it has: {', '.join(sorted(by_wf))})")
        out.append({"index": k, "offset": offset, "workflow": it.workflow, "input": it.input,
                    "expected": it.expected,
                    "policy": policy if policy is not None else (it.policy or ""),
                    "request_id": f"{run_id}-{rid or f'{k:06d}'}"})
    out.sort(key=lambda a: (a["offset"], a["index"]))
    return out


def _callable_path(fn: Callable | str | None) -> str:
    """A GPU-seconds function crosses into the subprocess as 'module:qualname'."""
    if fn is None or isinstance(fn, str):
        return fn or ""
    path = f"{fn.__module__}:{fn.__qualname__}"
    if fn.__module__ == "__main__" or "<" in fn.__qualname__:
        raise ValueError(f"gpu_seconds must be an importable module-level function, not {path}")
    return path


def _import(path: str) -> Callable:
    module, _, name = path.partition(":")
    obj: Any = importlib.import_module(module)
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


def read_records(path: str | Path) -> list:
    from aragog.loadgen.client import RequestRecord

    with open(path, encoding="utf-8") as f:
        return [RequestRecord.from_dict(json.loads(line)) for line in f if line.strip()]


def run_schedule(router_addr: str, schedule: Any, workload: Sequence[Any],
                 policy: str | None = None, max_in_flight: int = 256, timeout_s: float = 120.0,
                 *, out_path: str | Path | None = None, tenant: str = "loadgen",
                 gpu_seconds: Callable | str | None = None,
                 max_requests: int = MAX_REQUESTS, max_duration_s: float = MAX_DURATION_S,
                 run_id: str | None = None, root_certificates: bytes | None = None,
                 report_outcomes: bool = False) -> list:
    """Send `schedule`'s arrivals open-loop to the router at `router_addr` (loopback only);
    return one RequestRecord per arrival, in schedule order, also written to `out_path` as
    JSONL if given (records are appended as they finish, then rewritten in order).

    schedule: offsets in seconds (array or list), an arrivals.Trace, or (offset, workflow
    [, request_id]) tuples. workload: WorkItems, dicts or (workflow, input[, expected
    [, policy]]) tuples. Request ids are '<run_id>-<index or trace id>', new per run, so a
    rerun never re-attaches to an earlier run's finished requests. `root_certificates`: the
    router speaks TLS, its certificate signed by these (PEM). `report_outcomes`: each
    graded answer's outcome goes back to the router (ReportOutcome).
    """
    from aragog.loadgen.client import check_loopback

    router_addr = check_loopback(router_addr)
    if max_in_flight < 1 or timeout_s <= 0:
        raise ValueError("max_in_flight must be >= 1 and timeout_s > 0")
    run_id = run_id or f"lg{uuid.uuid4().hex[:8]}"
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,15}", run_id):
        raise ValueError(f"run_id {run_id!r} must be 1-15 of [A-Za-z0-9_.-] (request id prefix)")
    arrivals = plan(schedule, workload, policy, run_id)
    if len(arrivals) > max_requests:
        raise ValueError(f"{len(arrivals)} arrivals; the limit is max_requests={max_requests}")
    span = arrivals[-1]["offset"] if arrivals else 0.0
    if span > max_duration_s:
        raise ValueError(f"the schedule spans {span:.0f}s; the limit is "
                         f"max_duration_s={max_duration_s:g}")
    if not arrivals:
        return []
    with tempfile.TemporaryDirectory(prefix="aragog-loadgen-") as tmp:
        out = Path(out_path) if out_path else Path(tmp) / "records.jsonl"
        spec = Path(tmp) / "spec.json"
        spec.write_text(json.dumps({
            "router_addr": router_addr, "arrivals": arrivals, "max_in_flight": max_in_flight,
            "timeout_s": timeout_s, "tenant": tenant, "gpu_seconds": _callable_path(gpu_seconds),
            "root_certificates": root_certificates.decode("ascii") if root_certificates else "",
            "report_outcomes": report_outcomes,
        }))
        log = Path(tmp) / "driver.log"
        with log.open("wb") as logf:
            argv = [sys.executable, "-m", "aragog.loadgen.runner", str(spec), str(out)]
            proc = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT)
            code: int | None = None
            try:
                code = proc.wait(LEAD_S + span + timeout_s + GRACE_S)
            except subprocess.TimeoutExpired:
                pass
            finally:  # also when the caller is interrupted: never leave the driver running
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        if code != 0:
            tail = log.read_text(errors="replace")[-3000:]
            how = "timed out" if code is None else f"exited {code}"
            done = sum(1 for _ in out.open()) if out.exists() else 0
            raise RuntimeError(f"load generator driver {how} after {done} of {len(arrivals)} "
                               f"records:\n{tail}")
        records = sorted(read_records(out), key=lambda r: r.index)
        if [r.index for r in records] != list(range(len(arrivals))):
            raise RuntimeError(f"driver wrote {len(records)} records for {len(arrivals)} arrivals")
        write_records(out, records)
        return records


def write_records(path: str | Path, records: Iterable) -> None:
    tmp = Path(f"{path}.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r.to_dict()) + "\n")
    os.replace(tmp, path)


def drive(spec: dict[str, Any], out_path: str) -> None:
    """The subprocess side: one greenlet per admitted arrival, records appended as they end."""
    import gevent
    from aragog.loadgen.client import RequestRecord, RouterClient

    gpu = _import(spec["gpu_seconds"]) if spec["gpu_seconds"] else None
    client = RouterClient(spec["router_addr"], timeout_s=spec["timeout_s"], tenant=spec["tenant"],
                          gpu_seconds=gpu,
                          root_certificates=spec["root_certificates"].encode("ascii") or None,
                          report_outcomes=spec.get("report_outcomes", False))
    cap, in_flight, greenlets = spec["max_in_flight"], 0, []
    out = open(out_path, "w", encoding="utf-8")  # noqa: SIM115 - closed below

    def bare(a: dict[str, Any], status: str, error: str, lag: float) -> RequestRecord:
        now = time.time()
        return RequestRecord(a["request_id"], a["workflow"], a["policy"], a["offset"], now, now,
                             0.0, status, error=error, expected=a["expected"],
                             tenant=spec["tenant"], index=a["index"], send_lag_s=lag,
                             correct=False if a["expected"] is not None else None)

    def write(rec: RequestRecord) -> None:
        out.write(json.dumps(rec.to_dict()) + "\n")
        out.flush()

    def one(a: dict[str, Any]) -> None:
        nonlocal in_flight
        lag = time.monotonic() - start - a["offset"]  # how late it is actually sent
        try:
            rec = client.submit(a["workflow"], a["input"], policy=a["policy"],
                                request_id=a["request_id"], expected=a["expected"],
                                arrival=a["offset"], index=a["index"])
        except gevent.GreenletExit:
            rec = bare(a, "timeout", "load generator: still running at the driver's hard deadline",
                       lag)
        except Exception as e:  # a bug must not lose the request
            rec = bare(a, "error", f"load generator: {type(e).__name__}: {e}", lag)
        finally:
            in_flight -= 1
        rec.send_lag_s = lag
        write(rec)

    start = time.monotonic() + LEAD_S
    for a in spec["arrivals"]:
        delay = start + a["offset"] - time.monotonic()
        if delay > 0:
            gevent.sleep(delay)
        lag = time.monotonic() - start - a["offset"]
        if in_flight >= cap:
            why = f"load generator: max_in_flight={cap} requests in flight"
            write(bare(a, "rejected", why, lag))
            continue
        in_flight += 1
        greenlets.append(gevent.spawn(one, a))
    gevent.joinall(greenlets, timeout=spec["timeout_s"] + 5)
    gevent.killall([g for g in greenlets if not g.dead], block=True, timeout=5)
    client.close()
    out.close()


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        sys.exit("usage: python -m aragog.loadgen.runner SPEC.json OUT.jsonl "
                 "(written by aragog.loadgen.runner.run_schedule)")
    drive(json.loads(Path(args[0]).read_text()), args[1])


if __name__ == "__main__":
    main()
