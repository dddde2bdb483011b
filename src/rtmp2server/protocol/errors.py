"""The error types of the sans-IO protocol core.

One base, `ProtocolError`, split the h11 way:

- `RemoteProtocolError`: the peer sent something that breaks the protocol. The message names
  what arrived and what was expected; the owner of the connection logs it with the peer's
  address and closes that connection only.
- `LocalProtocolError`: we misused the API (a bug on our side, not the peer's).

The parsers promise that any byte input either parses or raises `RemoteProtocolError`
(or a subclass); any other exception escaping them is a bug, and a fuzz test checks that.
"""

from __future__ import annotations

from typing import Any


class ProtocolError(Exception):
    """Base class of every error the protocol core raises on purpose."""


class RemoteProtocolError(ProtocolError):
    """The peer sent bytes that break the protocol.

    `partial` holds what the same input completed before the bad bytes (messages and
    events), so the owner can keep everything that arrived intact before closing.
    """

    partial: list[Any]

    def __init__(self, *args: object) -> None:
        super().__init__(*args)
        self.partial = []


class LocalProtocolError(ProtocolError):
    """This side used the API wrongly."""


class AMFError(RemoteProtocolError):
    """AMF0/AMF3 data that cannot be decoded."""


class HandshakeError(RemoteProtocolError):
    """A handshake that does not follow RTMP 1.0 section 5.2."""


class ChunkError(RemoteProtocolError):
    """A chunk stream that cannot be reassembled into messages."""


class BudgetExceeded(ChunkError):
    """The peer went over one of its connection's bounds (chunk streams in use, bytes held in
    unfinished messages, chunk size): not malformed, but more than this server holds for one
    peer. The owner logs the stop reason as "over budget"."""
