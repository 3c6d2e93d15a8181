"""Bounds on what clients send and on what errors say back.

One rule for every id a client names (request, workflow, tenant, executor, lease), because
ids end up inside Redis keys (`{ns}:req:{id}:...`) and paths: an id holding the key
separator ':' would name another request's record (`<id>:chosen` is a hash of its own),
and control characters break logs. `fullmatch`, never `match` with `$`: Python's `$` also
matches before a trailing newline.

Error messages that cross a gRPC boundary are clipped: they may quote what a client sent.
"""

from __future__ import annotations

import re

ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
ID_RULE = "1-64 characters of letters, digits, '_', '.', '-', starting with a letter or digit"
MAX_MESSAGE = 500  # characters of an error message
MAX_QUOTE = 60  # characters of a client's value quoted inside a message


def clip(text: str, limit: int = MAX_MESSAGE) -> str:
    """`text`, cut to at most `limit` characters with an ellipsis where it was cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def quote(value: object) -> str:
    """A client's value as a message shows it: repr, clipped to MAX_QUOTE."""
    return clip(repr(value), MAX_QUOTE)


def is_id(value: object) -> bool:
    return isinstance(value, str) and ID_RE.fullmatch(value) is not None


def id_error(what: str, value: str, optional: bool = False) -> str | None:
    """None if `value` is a valid id (or empty and `optional`), else a message saying why."""
    if (optional and not value) or is_id(value):
        return None
    return f"{what} must be {ID_RULE}; got {quote(value)}"
