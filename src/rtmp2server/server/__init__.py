"""asyncio RTMP server: sockets, sessions, the stream registry, recording, the live relay."""

from .recorder import Recorder, RecordingError
from .registry import Sink, Stream, StreamRegistry
from .relay import Relay, RelayConfig
from .server import RTMPServer, ServerConfig, Session

__all__ = [
    "RTMPServer",
    "Recorder",
    "RecordingError",
    "Relay",
    "RelayConfig",
    "ServerConfig",
    "Session",
    "Sink",
    "Stream",
    "StreamRegistry",
]
