"""asyncio RTMP server: sockets, sessions, the stream registry, recording, the live relay."""

from .recorder import Recorder
from .registry import Sink, Stream, StreamRegistry
from .relay import Relay, RelayConfig
from .server import RTMPServer, ServerConfig, Session

__all__ = [
    "RTMPServer",
    "Recorder",
    "Relay",
    "RelayConfig",
    "ServerConfig",
    "Session",
    "Sink",
    "Stream",
    "StreamRegistry",
]
