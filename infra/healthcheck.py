#!/usr/bin/env python3
"""`aragog-healthcheck TARGET [TIMEOUT_S]`: exit 0 when TARGET is healthy, 1 otherwise.

TARGET `host:port`: gRPC health checking (grpc.health.v1, service ""), healthy when the
answer is SERVING; every Aragog service serves it. TARGET `http://...`: healthy on HTTP 200
(Triton's `/v2/health/ready`). The image installs it as /opt/aragog/bin/aragog-healthcheck
for docker-compose's healthchecks (Kubernetes probes gRPC natively).
"""

from __future__ import annotations

import sys
import urllib.request


def healthy(target: str, timeout_s: float = 3.0) -> tuple[bool, str]:
    if target.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(target, timeout=timeout_s) as resp:
                return resp.status == 200, f"HTTP {resp.status}"
        except OSError as e:
            return False, str(e)
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(target) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=timeout_s)
        except grpc.RpcError as e:
            return False, f"{e.code().name}: {e.details()}"
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    return reply.status == health_pb2.HealthCheckResponse.SERVING, status


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3):
        print(__doc__.strip().splitlines()[0], file=sys.stderr)
        return 2
    ok, why = healthy(argv[1], float(argv[2]) if len(argv) == 3 else 3.0)
    print(f"{argv[1]}: {why}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
