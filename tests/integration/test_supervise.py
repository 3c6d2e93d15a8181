"""`aragog-stack up` starts again what dies (Stack.supervise), on a stack of its own that
shares the session's Redis (its own namespace) and Triton."""

from __future__ import annotations

import signal
import threading
import time
import uuid

import pytest
from aragog.stack import Stack, shipped_workflow, wait_healthy
from aragog.v1 import common_pb2

pytestmark = pytest.mark.integration


def test_a_service_that_dies_is_started_again(stack, tmp_path, tls_env):
    s = Stack(redis_url=stack.redis_url, triton_url=stack.triton_url,
              triton_metrics_url=stack.triton_metrics_url, executors=1,
              namespace=f"v{uuid.uuid4().hex[:8]}", log_dir=str(tmp_path),
              extra_env={"ARAGOG_DEFAULT_POLICY": "largest", **tls_env})
    s.start(timeout_s=120)
    stop, said = threading.Event(), []
    watcher = threading.Thread(target=s.supervise, args=(stop,),
                               kwargs={"say": said.append, "period_s": 0.2})
    watcher.start()
    try:
        for name in ("executor-0", "scheduler"):
            old = next(p for p in s.procs if p.name == name)
            old.popen.send_signal(signal.SIGKILL)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                new = next((p for p in s.procs if p.name == name), None)
                if new is not None and new is not old:
                    break
                time.sleep(0.1)
            assert new is not old, said
            wait_healthy(new.addr, 60, new.popen, new.log_path, credentials=s.credentials)
        assert [m.split(" exited")[0] for m in said] == ["executor-0", "scheduler"], said
        wid = s.register(shipped_workflow("chain3")).workflow.id
        events, _ = s.submit(wid, "after two restarts")
        assert events[-1].completed.state == common_pb2.REQUEST_STATE_SUCCEEDED
    finally:
        stop.set()
        watcher.join(timeout=10)
        s.stop()
