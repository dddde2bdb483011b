"""GStreamer Python plugin loader shim for `rtmp2flvdemux`.

Like `rtmp2serversrc.py` beside it: gst-python imports this file inside the interpreter it
embeds (Debian's /usr/bin/python3), so when `rtmp2server` is not importable the shim adds the
repository's `src/` directory, found from its own real path (it may be a symlink). The rank
is above flvdemux's PRIMARY, so decodebin, uridecodebin and playbin pick this demuxer.
"""

import os
import sys

try:
    import rtmp2server  # noqa: F401
except ImportError:
    _src = os.path.join(os.path.dirname(os.path.realpath(__file__)), "..", "..", "src")
    sys.path.insert(0, os.path.normpath(_src))

from rtmp2server.gst.demux import ELEMENT_NAME, RANK, RTMP2FLVDemux

__gstelementfactory__ = (ELEMENT_NAME, RANK, RTMP2FLVDemux)
