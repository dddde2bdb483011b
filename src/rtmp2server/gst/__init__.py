"""The GStreamer front-end: the live source `rtmp2serversrc` and the demuxer `rtmp2flvdemux`.

This package owns everything GStreamer-facing. `element.py` is the element itself,
`shared.py` the RTMP server that the elements of one process share per host:port, and
`feed.py` the hand-over from that server's event loop to the element's streaming thread
(lossless, with back-pressure on the publisher) plus the FLV framing. `demux.py` is the FLV
demuxer element over `protocol.flvdemux`, with its caps in `caps.py`. Only `element.py` and
`demux.py` import GStreamer (`gi`); importing this package does not.

Two ways to get the element:

- GStreamer's Python plugin loader: point `GST_PLUGIN_PATH` at the repository's
  `gst-plugins/` directory (or run `scripts/setup.sh`, which links the loader shim into
  `~/.gstreamer-1.0/plugins/python/`); then `gst-inspect-1.0 rtmp2serversrc`
  and `gst-launch-1.0 rtmp2serversrc port=1935 ! rtmp2flvdemux ! ...` find them.
- In-process, from a Python application: `rtmp2server.gst.register()`.
"""

from __future__ import annotations

ELEMENT_NAME = "rtmp2serversrc"
DEMUX_NAME = "rtmp2flvdemux"

__all__ = ["DEMUX_NAME", "ELEMENT_NAME", "register"]


def register() -> bool:
    """Register `rtmp2serversrc` and `rtmp2flvdemux` with GStreamer in this process
    (initialising it if needed); the demuxer is ranked above flvdemux, so decodebin and
    playbin of this process pick it.

    Returns True on success. No plugin path or registry is involved; calling it again is
    harmless.
    """
    import gi

    gi.require_version("Gst", "1.0")
    from gi.repository import Gst

    if not Gst.is_initialized():
        Gst.init(None)
    from .demux import RANK, RTMP2FLVDemux
    from .element import RTMP2ServerSrc

    src = Gst.Element.register(None, ELEMENT_NAME, Gst.Rank.NONE, RTMP2ServerSrc)
    demux = Gst.Element.register(None, DEMUX_NAME, RANK, RTMP2FLVDemux)
    return bool(src and demux)
