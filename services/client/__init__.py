"""The Python SDK for Aragog's router: `Client` (blocking) and `AsyncClient` (asyncio).

    from aragog.client import Client

    with Client("127.0.0.1:50051") as aragog:
        aragog.register_workflow(open("my-workflow.yaml").read())
        for event in aragog.submit("my-workflow", "How many orders shipped in May?"):
            print(event)                       # admitted, stage_started, stage_finished, completed
        status = aragog.run("my-workflow", "...", policy="largest")   # just the final status

Any address; TLS with `tls=True` (system roots) or `root_certificates=` (PEM bytes), and a
bearer token sent as `authorization` metadata when given. Every failure is one typed
`AragogError` subclass chosen by the gRPC status code (`InvalidArgument`, `NotFound`,
`FailedPrecondition`, `ResourceExhausted` with `retry_after_s`, ...). The SDK imports only
the generated protocol code and grpc.
"""

from aragog.client._client import AsyncClient, Client
from aragog.client._errors import (
    AlreadyExists,
    AragogError,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)

__all__ = [
    "AlreadyExists",
    "AragogError",
    "AsyncClient",
    "Client",
    "DeadlineExceeded",
    "FailedPrecondition",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "ResourceExhausted",
    "Unauthenticated",
    "Unavailable",
]
