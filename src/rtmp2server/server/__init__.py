"""asyncio RTMP server: sockets, sessions, the stream registry, recording."""

from .recorder import Recorder
from .registry import Sink, Stream, StreamRegistry
from .server import RTMPServer, ServerConfig, Session

__all__ = ["RTMPServer", "Recorder", "ServerConfig", "Session", "Sink", "Stream", "StreamRegistry"]
