"""One typed error per gRPC status code a caller can act on."""

from __future__ import annotations

import grpc


class AragogError(Exception):
    """A call the router refused or could not complete: `code` (grpc.StatusCode) and the
    server's `details`, which say what to change."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, details: str, code: grpc.StatusCode | None = None):
        super().__init__(details)
        self.details = details
        if code is not None:
            self.code = code


class InvalidArgument(AragogError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(AragogError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(AragogError):
    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(AragogError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class ResourceExhausted(AragogError):
    """Over a queue bound: retry after `retry_after_s` (from the `retry-after-ms` trailer,
    None if the server gave none)."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED

    def __init__(self, details: str, retry_after_s: float | None = None):
        super().__init__(details)
        self.retry_after_s = retry_after_s


class Unavailable(AragogError):
    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(AragogError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Unauthenticated(AragogError):
    """No bearer token, or one the router does not know."""

    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(AragogError):
    code = grpc.StatusCode.PERMISSION_DENIED


_BY_CODE = {
    c.code: c
    for c in (
        InvalidArgument,
        NotFound,
        AlreadyExists,
        FailedPrecondition,
        ResourceExhausted,
        Unavailable,
        DeadlineExceeded,
        Unauthenticated,
        PermissionDenied,
    )
}


def _retry_after(metadata) -> float | None:
    for key, value in metadata or ():
        if key == "retry-after-ms":
            try:
                return float(value) / 1000.0
            except ValueError:
                return None
    return None


def translate(e: grpc.RpcError) -> AragogError:
    """The typed error for a failed call."""
    code, details = e.code(), e.details() or ""
    cls = _BY_CODE.get(code)
    if cls is ResourceExhausted:
        return ResourceExhausted(details, _retry_after(e.trailing_metadata()))
    if cls is None:
        return AragogError(details, code)
    return cls(details)
