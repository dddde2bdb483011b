"""Logging that a peer cannot forge: escaped arguments, redacted secrets.

Stream names, application names, query strings, flashVer and tcUrl all come from the peer.
Logged raw, a name holding a newline forges whole log lines, and ESC or NUL bytes reach the
operator's terminal. Every logger of the package is made with `get_logger`, which adds a
filter that escapes the string arguments of each record (control characters, line and
paragraph separators, bidirectional overrides, and the backslash itself, so that an escape
in the log is never ambiguous) and shortens very long ones. The format strings are ours and
stay as they are.

Query strings carry stream keys and tokens (`?key=secret`): `redact_query` keeps the names
of the parameters and hides every value.
"""

from __future__ import annotations

import logging

# Code points that never appear raw in a log line.
_ESCAPED = (
    list(range(0x20))
    + list(range(0x7F, 0xA0))
    + [0x2028, 0x2029, 0x061C, 0x200E, 0x200F]
    + list(range(0x202A, 0x202F))
    + list(range(0x2066, 0x206A))
)
_TABLE: dict[int, str] = {c: (f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}") for c in _ESCAPED}
_TABLE[0x5C] = "\\\\"
MAX_LOGGED = 300  # characters of one peer-supplied string in a log line


def escape(text: str, limit: int = MAX_LOGGED) -> str:
    """`text` made safe for one log line: escaped, and cut to `limit` characters."""
    out = text.translate(_TABLE)
    if len(out) > limit:
        out = f"{out[:limit]}...({len(text)} characters)"
    return out


def redact_query(query: str) -> str:
    """`key=secret&x=1` -> `key=***&x=***`; a bare token (OBS's `live?secret`) -> `***`."""
    if not query:
        return ""
    parts = []
    for item in query.split("&"):
        name, eq, _value = item.partition("=")
        parts.append(f"{name}=***" if eq else "***")
    return "&".join(parts)


class _EscapeArguments(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and args:
            record.args = tuple(_safe(a) for a in args)
        return True


def _safe(value: object) -> object:
    if isinstance(value, str):
        return escape(value)
    if isinstance(value, BaseException):
        # Protocol errors quote what arrived; they are ours, but carry peer bytes.
        return escape(str(value), 1000)
    return value


_FILTER = _EscapeArguments()


def get_logger(name: str) -> logging.Logger:
    """The logger `name`, with the escaping filter (added once)."""
    logger = logging.getLogger(name)
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
    return logger
