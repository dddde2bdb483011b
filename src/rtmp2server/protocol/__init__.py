"""Sans-IO RTMP protocol core: bytes in, events and bytes out.

Nothing here imports asyncio, sockets or threads. The hot-path modules run compiled when the
install built them, pure-Python with `RTMP2_PURE=1` (see `_compiled.py`).
"""

from . import _compiled

_compiled.install()
