"""GStreamer Python plugin loader shim for `rtmp2serversrc`.

GStreamer's Python loader (gst-python) imports every `*.py` in `$GST_PLUGIN_PATH/python/`
and in `~/.local/share/gstreamer-1.0/plugins/python/`, inside the interpreter it embeds
(Debian's /usr/bin/python3), and registers what `__gstelementfactory__` names. That
interpreter does not see our venv, so when `rtmp2server` is not importable this shim adds
the repository's `src/` directory, found from its own real path (it may be a symlink).
"""

import os
import sys

try:
    import rtmp2server  # noqa: F401
except ImportError:
    _src = os.path.join(os.path.dirname(os.path.realpath(__file__)), "..", "..", "src")
    sys.path.insert(0, os.path.normpath(_src))

import gi

gi.require_version("Gst", "1.0")
from gi.repository import Gst  # noqa: E402

from rtmp2server.gst.element import ELEMENT_NAME, RTMP2ServerSrc  # noqa: E402

__gstelementfactory__ = (ELEMENT_NAME, Gst.Rank.NONE, RTMP2ServerSrc)
