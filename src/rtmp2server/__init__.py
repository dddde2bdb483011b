"""gst-rtmp2-server: an RTMP server in Python that hands on every frame.

The public API: `RTMPServer` and `ServerConfig` (an asyncio server that records and relays),
`Stream` and `Sink` (attach your own consumer to a publish), and the sans-IO core in
`rtmp2server.protocol`. The GStreamer element lives in `rtmp2server.gst`.

The names are imported when first used (PEP 562), so that `import rtmp2server.protocol.chunk`
loads neither asyncio nor the server.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["RTMPServer", "ServerConfig", "Sink", "Stream", "StreamRegistry", "__version__"]

if TYPE_CHECKING:
    from .server import RTMPServer, ServerConfig, Sink, Stream, StreamRegistry


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import server

        return getattr(server, name)
    raise AttributeError(f"module 'rtmp2server' has no attribute {name!r}")
