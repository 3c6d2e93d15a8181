#!/usr/bin/env python3
"""`aragog-healthcheck TARGET [TIMEOUT_S] [SERVICE]`: exit 0 when TARGET is healthy, 1 otherwise.

TARGET `host:port`: gRPC health checking (grpc.health.v1, SERVICE "" unless given), healthy
when the answer is SERVING; every Aragog service serves it (a standby scheduler answers
SERVING for "liveness" only). TARGET `http://...`: healthy on HTTP 200
(Triton's `/v2/health/ready`). The image installs it as /opt/aragog/bin/aragog-healthcheck
for docker-compose's healthchecks, and for Kubernetes exec probes when the services run
TLS (the kubelet's own gRPC probes speak plaintext only).

TLS: run in the service's container, it reads the service's settings, ARAGOG_TLS_CA_FILE
(trust) and ARAGOG_TLS_CERT_FILE / ARAGOG_TLS_KEY_FILE (the certificate it presents, which
the scheduler, executors and load-monitor require of callers). A probe dials 127.0.0.1, a
name the certificate may not hold: ARAGOG_TLS_SERVER_NAME names the one to verify instead.
"""

from __future__ import annotations

import os
import sys
import urllib.request


def healthy(target: str, timeout_s: float = 3.0, service: str = "") -> tuple[bool, str]:
    if target.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(target, timeout=timeout_s) as resp:
                return resp.status == 200, f"HTTP {resp.status}"
        except OSError as e:
            return False, str(e)
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    try:
        channel = _channel(target)
    except OSError as e:
        return False, f"TLS setting: {e}"
    with channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout_s)
        except grpc.RpcError as e:
            return False, f"{e.code().name}: {e.details()}"
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    return reply.status == health_pb2.HealthCheckResponse.SERVING, status


def _channel(target: str):
    """Plaintext, or TLS when the service's TLS settings are in the environment."""
    import grpc

    files = {k: os.environ.get(f"ARAGOG_TLS_{k.upper()}_FILE", "") for k in ("ca", "cert", "key")}
    if not any(files.values()):
        return grpc.insecure_channel(target)
    read = {k: _read(path) if path else None for k, path in files.items()}
    creds = grpc.ssl_channel_credentials(root_certificates=read["ca"], private_key=read["key"],
                                         certificate_chain=read["cert"])
    name = os.environ.get("ARAGOG_TLS_SERVER_NAME", "")
    options = [("grpc.ssl_target_name_override", name)] if name else []
    return grpc.secure_channel(target, creds, options=options)


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3, 4):
        print(__doc__.strip().splitlines()[0], file=sys.stderr)
        return 2
    ok, why = healthy(argv[1], float(argv[2]) if len(argv) >= 3 else 3.0,
                      argv[3] if len(argv) == 4 else "")
    print(f"{argv[1]}: {why}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
