"""Who is calling the router: bearer tokens, each naming its tenant.

With ARAGOG_AUTH_TOKENS_FILE set, every router call needs `authorization: Bearer <token>`
metadata (the HTTP front door forwards its Authorization header): a missing or unknown
token gets UNAUTHENTICATED. The token's tenant is the tenant of what the caller submits
(a SubmitRequest naming another gets PERMISSION_DENIED), and a caller sees and cancels
only its tenant's requests: another tenant's request answers as if it did not exist.
Workflows are a catalog every authenticated caller reads and adds to.

The file holds one `<token> <tenant>` per line (`#` starts a comment); it is read at start,
so rotating a token means restarting the routers (they share nothing else). Tokens are kept
as SHA-256 digests, never logged.
"""

from __future__ import annotations

import hashlib

from aragog.common.bounds import id_error

MIN_TOKEN_CHARS = 16


class AuthError(Exception):
    """The tokens file is unusable; the message says where and why."""


class Tokens:
    def __init__(self, tenants_by_digest: dict[bytes, str]):
        self._tenants = tenants_by_digest

    @classmethod
    def load(cls, path: str) -> Tokens:
        try:
            with open(path, encoding="utf-8") as f:
                lines = f.read().splitlines()
        except OSError as e:
            raise AuthError(f"ARAGOG_AUTH_TOKENS_FILE={path}: {e.strerror}") from None
        tenants: dict[bytes, str] = {}
        for n, line in enumerate(lines, 1):
            fields = line.split("#", 1)[0].split()
            if not fields:
                continue
            where = f"ARAGOG_AUTH_TOKENS_FILE={path}, line {n}"
            if len(fields) != 2:
                raise AuthError(f"{where}: expected `<token> <tenant>`")
            token, tenant = fields
            if len(token) < MIN_TOKEN_CHARS:
                raise AuthError(f"{where}: a token needs at least {MIN_TOKEN_CHARS} characters")
            bad = id_error("tenant", tenant)
            if bad:
                raise AuthError(f"{where}: {bad}")
            digest = _digest(token)
            if digest in tenants:
                raise AuthError(f"{where}: this token is listed twice")
            tenants[digest] = tenant
        if not tenants:
            raise AuthError(f"ARAGOG_AUTH_TOKENS_FILE={path}: no tokens in it")
        return cls(tenants)

    def tenant(self, metadata: tuple[tuple[str, str | bytes], ...] | None) -> str | None:
        """The tenant of the call's bearer token; None if it has none or an unknown one."""
        for key, value in metadata or ():
            if key == "authorization" and isinstance(value, str):
                scheme, _, token = value.partition(" ")
                if scheme.lower() == "bearer" and token:
                    return self._tenants.get(_digest(token.strip()))
        return None


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()
