"""gst-rtmp2-server: an RTMP server in Python that hands on every frame.

The public API: `RTMPServer` and `ServerConfig` (an asyncio server that records and relays),
`Stream` and `Sink` (attach your own consumer to a publish), and the sans-IO core in
`rtmp2server.protocol`. The GStreamer element lives in `rtmp2server.gst`.
"""

from .server import RTMPServer, ServerConfig, Sink, Stream, StreamRegistry

__version__ = "0.1.0"

__all__ = ["RTMPServer", "ServerConfig", "Sink", "Stream", "StreamRegistry", "__version__"]
