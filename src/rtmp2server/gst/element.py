"""The GStreamer element `rtmp2serversrc`: RTMP publishes in, a live `video/x-flv` stream out.

This module owns the GObject side of the element: its properties, its states and the
streaming thread's `create()`. The RTMP server it listens with is shared with the other
elements on the same host:port (`shared.py`); what a publish delivers reaches `create()`
through a `Feed` and is framed as FLV by an `FLVFramer` (`feed.py`).

What goes downstream, per publish: the FLV header (flagged DISCONT and HEADER, buffer
offset 0, so `flvdemux` starts over), then one buffer per RTMP message (tag header, the
message body unchanged, PreviousTagSize). Buffer PTS/DTS are the message timestamps relative
to the first message of the publish; each publish opens a new TIME segment whose base is the
running time at which it began, so downstream sinks (and `flvdemux`, which passes the
segment on) play it in sync with the pipeline clock.

Element messages on the bus: `rtmp2serversrc-publish-start` (application, stream-key,
query, peer, flash-ver, tc-url) when a publish begins, and `rtmp2serversrc-publish-stop`
(the same, plus video-frames, audio-frames, data-messages, bytes, duration) after its last
buffer went downstream.

The `publish-accept` signal (a GstStructure with the same fields as publish-start; return
TRUE to accept) lets an application accept or refuse each publish, as srtsrc's
`caller-connecting` does for callers; it is emitted from the server's thread, and with no
handler every publish this element's routing selects is accepted. The read-only `stats`
property is a GstStructure (like rtmp2src's): the peer, whether a publish is on, bytes,
frames by kind, the bitrate over the last second and the codecs, read as the element
outputs the messages.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import deque
from typing import Any, Final

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstBase", "1.0")
from gi.repository import GLib, GObject, Gst, GstBase  # noqa: E402

if not Gst.is_initialized():  # imported by an application rather than the plugin loader
    Gst.init(None)

from ..config import ServerConfig  # noqa: E402
from ..logs import get_logger  # noqa: E402
from ..protocol import enhanced  # noqa: E402
from ..protocol.messages import Message  # noqa: E402
from . import shared  # noqa: E402
from .feed import (  # noqa: E402
    Chunk,
    Feed,
    Flushing,
    FLVFramer,
    PublishEnded,
    PublishInfo,
    PublishStarted,
)

log = get_logger("rtmp2server.gst")

ELEMENT_NAME: Final = "rtmp2serversrc"
START_MESSAGE: Final = "rtmp2serversrc-publish-start"
STOP_MESSAGE: Final = "rtmp2serversrc-publish-stop"

# From the configuration tree, where every default lives.
DEFAULT_HOST: Final = ServerConfig().host
DEFAULT_PORT: Final = ServerConfig().port

_RW = GObject.ParamFlags.READWRITE | Gst.PARAM_MUTABLE_READY
_EOS = object()  # in the output queue: end of stream after what came before


class RTMP2ServerSrc(GstBase.BaseSrc):  # type: ignore[misc]
    """Receives RTMP publishes and outputs each as a live FLV stream."""

    __gtype_name__ = "GstRTMP2ServerSrc"
    __gstmetadata__ = (
        "RTMP server source",
        "Source/Network",
        "Listens for RTMP publishers (ffmpeg, OBS, GStreamer, librtmp) and outputs the "
        "published stream as FLV, every frame of it",
        "gst-rtmp2-server",
    )
    __gsttemplates__ = (
        Gst.PadTemplate.new(
            "src", Gst.PadDirection.SRC, Gst.PadPresence.ALWAYS, Gst.Caps.from_string("video/x-flv")
        ),
    )
    __gproperties__ = {
        "host": (
            str,
            "Host",
            "Address to listen on (0.0.0.0: every IPv4 interface; empty: every interface, "
            "IPv4 and IPv6). Elements with the same host and port share one server",
            DEFAULT_HOST,
            _RW,
        ),
        "port": (
            int,
            "Port",
            "TCP port to listen on (0: pick a free port, and set this property to it "
            "once the element is started; such a server is never shared)",
            0,
            65535,
            DEFAULT_PORT,
            _RW,
        ),
        "application": (
            str,
            "Application",
            "RTMP application to accept publishes for, the first path component of the "
            "publisher's URL (rtmp://host/APPLICATION/key); unset: any application",
            None,
            _RW,
        ),
        "stream-key": (
            str,
            "Stream key",
            "Stream key (name) to accept, the last component of the publisher's URL; "
            "unset: the first publisher that no other element on this port asked for",
            None,
            _RW,
        ),
        "timeout": (
            GObject.TYPE_UINT,
            "Timeout",
            "Seconds to wait for a publisher, or for data from it, before posting an "
            "error (0: wait forever)",
            0,
            GLib.MAXUINT,
            0,
            _RW,
        ),
        "loop": (
            bool,
            "Loop",
            "When the publisher leaves, wait for the next one and continue with a fresh "
            "FLV stream (new header, discontinuity) instead of ending the stream (EOS)",
            False,
            _RW,
        ),
        "stats": (
            Gst.Structure,
            "Statistics",
            "The current publish: peer, application, stream-key, publishing, bytes, "
            "video-frames, audio-frames, data-messages, bitrate (bit/s over the last "
            "second), video-codec, audio-codec (FourCCs), and publishes (how many so far)",
            GObject.ParamFlags.READABLE,
        ),
    }
    __gsignals__ = {
        # Return TRUE to accept the publish described by the structure, FALSE to refuse it
        # (the publisher gets NetStream.Publish.BadName). Emitted from the server's thread,
        # whose event loop serves every connection on the port: a handler should be quick.
        "publish-accept": (GObject.SignalFlags.RUN_LAST, bool, (Gst.Structure,)),
    }

    def __init__(self) -> None:
        super().__init__()
        self.set_live(True)
        self.set_format(Gst.Format.TIME)
        self.set_do_timestamp(False)
        self._props_lock = threading.Lock()
        self._host = DEFAULT_HOST
        self._port = DEFAULT_PORT
        self._application: str | None = None
        self._stream_key: str | None = None
        self._timeout = 0
        self._loop = False
        self._feed = Feed()
        self._server: shared.SharedServer | None = None
        self._route: shared.Route | None = None
        self._stats = PublishStats()
        self._reset_stream_state()

    def _reset_stream_state(self) -> None:
        self._framer = FLVFramer()
        self._out: deque[Any] = deque()
        self._publish: PublishInfo | None = None

    # --- properties ----------------------------------------------------------------------

    def do_get_property(self, prop: GObject.ParamSpec) -> Any:
        with self._props_lock:
            name = prop.name
            if name == "host":
                return self._host
            if name == "port":
                return self._port
            if name == "application":
                return self._application
            if name == "stream-key":
                return self._stream_key
            if name == "timeout":
                return self._timeout
            if name == "loop":
                return self._loop
        if name == "stats":
            return self._stats.structure()
        raise AttributeError(f"unknown property {prop.name}")

    def do_set_property(self, prop: GObject.ParamSpec, value: Any) -> None:
        with self._props_lock:
            name = prop.name
            if name == "host":
                self._host = value if value is not None else DEFAULT_HOST
            elif name == "port":
                self._port = int(value)
            elif name == "application":
                self._application = value or None
            elif name == "stream-key":
                self._stream_key = value or None
            elif name == "timeout":
                self._timeout = int(value)
            elif name == "loop":
                self._loop = bool(value)
            else:
                raise AttributeError(f"unknown property {prop.name}")

    # --- states --------------------------------------------------------------------------

    def do_start(self) -> bool:
        with self._props_lock:
            host, port = self._host, self._port
            route = shared.Route(self._application, self._stream_key, self._feed, loop=self._loop)
        route.accept = self._accept_publish
        self._feed.clear()
        self._reset_stream_state()
        try:
            server = shared.acquire(host, port)
        except OSError as err:
            self._error(
                Gst.ResourceError.OPEN_READ,
                f"Could not listen on {host}:{port}: {err.strerror or err}",
                repr(err),
            )
            return False
        server.add_route(route)
        self._server, self._route = server, route
        if port == 0:
            with self._props_lock:
                self._port = server.port
            self.notify("port")
        log.debug("%s: waiting for %s on %s:%d", self.get_name(), route.describe(), host, port)
        return True

    def do_stop(self) -> bool:
        server, route = self._server, self._route
        self._server = self._route = None
        if server is not None and route is not None:
            server.remove_route(route)
            shared.release(server)
        self._feed.clear()
        self._reset_stream_state()
        return True

    def do_unlock(self) -> bool:
        self._feed.set_flushing(True)
        return True

    def do_unlock_stop(self) -> bool:
        self._feed.set_flushing(False)
        return True

    def do_is_seekable(self) -> bool:
        return False

    # --- streaming -----------------------------------------------------------------------

    def do_create(self, offset: int, size: int, buf: Gst.Buffer | None) -> tuple[Any, Any]:
        try:
            return self._create()
        except Flushing:
            return Gst.FlowReturn.FLUSHING, None

    def _create(self) -> tuple[Any, Any]:
        feed = self._feed
        framer = self._framer
        out = self._out
        while True:
            while out:
                action = out.popleft()
                if type(action) is Chunk:
                    return Gst.FlowReturn.OK, self._buffer(action)
                if type(action) is PublishEnded:
                    self._post(STOP_MESSAGE, action.info, _stop_fields(action))
                elif action is _EOS:
                    log.debug("%s: publisher gone, end of stream", self.get_name())
                    return Gst.FlowReturn.EOS, None
            timeout = self._timeout or None
            item = feed.get(timeout)
            if item is None:
                return self._timed_out(timeout or 0)
            if type(item) is Message:
                self._stats.message(item)
                out.extend(framer.push(item, feed.media_types_queued))
            elif type(item) is PublishStarted:
                self._publish = item.info
                self._stats.start(item.info)
                framer.start()
                self._post(START_MESSAGE, item.info, {})
            elif type(item) is PublishEnded:
                self._publish = None
                self._stats.end()
                out.extend(framer.end())
                out.append(item)
                if not self._loop:
                    out.append(_EOS)

    def _timed_out(self, timeout: float) -> tuple[Any, Any]:
        info = self._publish
        if info is None:
            route = self._route
            what = route.describe() if route is not None else "a publish"
            text = f"No RTMP publisher for {what} within {timeout:g} s"
        else:
            text = (
                f"No data from the RTMP publisher of {info.application}/{info.stream_key} "
                f"({info.peer}) for {timeout:g} s"
            )
        self._error(Gst.ResourceError.READ, text, f"timeout={timeout:g}")
        return Gst.FlowReturn.ERROR, None

    def _buffer(self, chunk: Chunk) -> Gst.Buffer:
        buf = Gst.Buffer.new_wrapped(chunk.data)
        buf.pts = buf.dts = chunk.pts
        buf.offset = chunk.offset
        buf.offset_end = chunk.offset + len(chunk.data)
        if chunk.header:
            self._new_segment()
            buf.set_flags(Gst.BufferFlags.DISCONT | Gst.BufferFlags.HEADER)
        elif chunk.delta_unit:
            buf.set_flags(Gst.BufferFlags.DELTA_UNIT)
        return buf

    def _new_segment(self) -> None:
        """A TIME segment for the FLV stream that starts now: buffer time 0 is now."""
        segment = Gst.Segment()
        segment.init(Gst.Format.TIME)
        clock = self.get_clock()
        if clock is not None:
            segment.base = max(0, clock.get_time() - self.get_base_time())
        self.new_segment(segment)

    # --- messages ------------------------------------------------------------------------

    def _accept_publish(self, info: PublishInfo) -> bool:
        """The application's answer through `publish-accept` (server thread); no handler: yes."""
        signal_id = GObject.signal_lookup("publish-accept", self.__gtype__)
        if not GObject.signal_has_handler_pending(self, signal_id, 0, False):
            return True
        accepted = bool(self.emit("publish-accept", _info_structure("publish-accept", info)))
        log.debug("%s: publish-accept for %s: %s", self.get_name(), info.peer, accepted)
        return accepted

    def _post(self, name: str, info: PublishInfo, extra: dict[str, Any]) -> None:
        s = _info_structure(name, info)
        for key, value in extra.items():
            s.set_value(key, value)
        self.post_message(Gst.Message.new_element(self, s))

    def _error(self, code: Any, text: str, debug: str) -> None:
        """Post a resource error naming our caller (what GST_ELEMENT_ERROR does in C)."""
        caller = sys._getframe(1)
        self.message_full(
            Gst.MessageType.ERROR,
            Gst.resource_error_quark(),
            code,
            text,
            debug,
            caller.f_code.co_filename,
            caller.f_code.co_name,
            caller.f_lineno,
        )


def _info_structure(name: str, info: PublishInfo) -> Gst.Structure:
    s = Gst.Structure.new_empty(name)
    s.set_value("application", info.application)
    s.set_value("stream-key", info.stream_key)
    s.set_value("query", info.query)
    s.set_value("peer", info.peer)
    s.set_value("flash-ver", info.flash_ver)
    s.set_value("tc-url", info.tc_url)
    return s


_BITRATE_WINDOW: Final = 1.0  # seconds


class PublishStats:
    """What the `stats` property reports; updated by the streaming thread, read by any."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._info: PublishInfo | None = None
        self._publishing = False
        self._publishes = 0
        self._reset()

    def _reset(self) -> None:
        self._bytes = self._video = self._audio = self._data = 0
        self._video_codec = self._audio_codec = ""
        self._recent: deque[tuple[float, int]] = deque()

    def start(self, info: PublishInfo) -> None:
        with self._lock:
            self._info = info
            self._publishing = True
            self._publishes += 1
            self._reset()

    def end(self) -> None:
        with self._lock:
            self._publishing = False
            self._recent.clear()

    def message(self, msg: Message) -> None:
        size = msg.size
        now = time.monotonic()
        codec = ""
        kind = msg.type_id
        if kind in (8, 9) and size:
            try:
                body = msg.payload
                info = (enhanced.classify_video if kind == 9 else enhanced.classify_audio)(body)
                codec = info.codec
            except enhanced.MediaError:
                codec = ""
        with self._lock:
            self._bytes += size
            recent = self._recent
            recent.append((now, size))
            while recent and recent[0][0] < now - _BITRATE_WINDOW:
                recent.popleft()
            if kind == 9:
                self._video += 1
                self._video_codec = codec or self._video_codec
            elif kind == 8:
                self._audio += 1
                self._audio_codec = codec or self._audio_codec
            else:
                self._data += 1

    def structure(self) -> Gst.Structure:
        with self._lock:
            info = self._info
            now = time.monotonic()
            bits = 8 * sum(n for t, n in self._recent if t >= now - _BITRATE_WINDOW)
            s = Gst.Structure.new_empty("rtmp2serversrc-stats")
            s.set_value("publishing", self._publishing)
            s.set_value("peer", info.peer if info else "")
            s.set_value("application", info.application if info else "")
            s.set_value("stream-key", info.stream_key if info else "")
            for key, value in (
                ("bytes", self._bytes),
                ("video-frames", self._video),
                ("audio-frames", self._audio),
                ("data-messages", self._data),
                ("bitrate", int(bits / _BITRATE_WINDOW) if self._publishing else 0),
                ("publishes", self._publishes),
            ):
                s.set_value(key, GObject.Value(GObject.TYPE_UINT64, value))
            s.set_value("video-codec", self._video_codec)
            s.set_value("audio-codec", self._audio_codec)
            return s


def _stop_fields(ended: PublishEnded) -> dict[str, Any]:
    return {
        "video-frames": GObject.Value(GObject.TYPE_UINT64, ended.video_frames),
        "audio-frames": GObject.Value(GObject.TYPE_UINT64, ended.audio_frames),
        "data-messages": GObject.Value(GObject.TYPE_UINT64, ended.data_messages),
        "bytes": GObject.Value(GObject.TYPE_UINT64, ended.bytes),
        "duration": GObject.Value(GObject.TYPE_DOUBLE, ended.duration),
    }
