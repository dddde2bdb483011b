"""The GStreamer front-end: the live source element `rtmp2serversrc`.

This package owns everything GStreamer-facing. `element.py` is the element itself,
`shared.py` the RTMP server that the elements of one process share per host:port, and
`feed.py` the hand-over from that server's event loop to the element's streaming thread
(lossless, with back-pressure on the publisher) plus the FLV framing. Only `element.py`
imports GStreamer (`gi`); importing this package does not.

Two ways to get the element:

- GStreamer's Python plugin loader: point `GST_PLUGIN_PATH` at the repository's
  `gst-plugins/` directory (or run `scripts/setup.sh`, which links the loader shim into
  `~/.local/share/gstreamer-1.0/plugins/python/`); then `gst-inspect-1.0 rtmp2serversrc`
  and `gst-launch-1.0 rtmp2serversrc port=1935 ! ...` find it.
- In-process, from a Python application: `rtmp2server.gst.register()`.
"""

from __future__ import annotations

ELEMENT_NAME = "rtmp2serversrc"

__all__ = ["ELEMENT_NAME", "register"]


def register() -> bool:
    """Register `rtmp2serversrc` with GStreamer in this process (initialising it if needed).

    Returns True on success. No plugin path or registry is involved; calling it again is
    harmless.
    """
    import gi

    gi.require_version("Gst", "1.0")
    from gi.repository import Gst

    if not Gst.is_initialized():
        Gst.init(None)
    from .element import RTMP2ServerSrc

    return bool(Gst.Element.register(None, ELEMENT_NAME, Gst.Rank.NONE, RTMP2ServerSrc))
