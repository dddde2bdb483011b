"""The GStreamer element `rtmp2flvdemux`: FLV (legacy and Enhanced RTMP) in, elementary streams out.

This module owns only the GStreamer side: pads, caps, buffers, segments and bus messages. The
demuxing is `protocol.flvdemux` (sans-IO) and the caps are `caps.py`; this element feeds the
sink pad's bytes to an `FLVDemuxer` and maps its events:

- `TrackConfigured` -> a sometimes pad (`video`/`audio` for track 0, `video_%u`/`audio_%u`
  for further Enhanced RTMP tracks, the names flvdemux 1.28 uses) with stream-start, caps
  and segment; a changed configuration of the same codec (a resolution change) is a new
  caps event on the same pad. A different codec on a track after a new FLV header (the next
  publisher behind `rtmp2serversrc loop=true`) replaces the pad: EOS and removal of the old
  one, a new one in a new group, so decodebin builds a new chain as it does for chained Ogg.
- `Frame` -> a buffer: PTS = DTS + composition time, `DELTA_UNIT` on non-keyframes, DISCONT
  on the first buffer of each pad and stream.
- `TracksComplete` -> no-more-pads.
- `TagSkipped` -> one warning message (STREAM DEMUX) on the bus; the stream goes on.

Segments: an upstream TIME segment (a live `rtmp2serversrc`) is passed on, and times then
count from each stream's first tag, as the source's own buffer times do; with a BYTES
segment (a file) the element sends its own TIME segment from 0 and uses tag times as they are,
as flvdemux does.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Final

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstBase", "1.0")
from gi.repository import GObject, Gst, GstBase  # noqa: E402

if not Gst.is_initialized():  # imported by an application rather than the plugin loader
    Gst.init(None)

from ..logs import get_logger  # noqa: E402
from ..protocol import flvdemux  # noqa: E402
from ..protocol.media import AudioConfig, VideoConfig  # noqa: E402
from .caps import caps_for, caps_string  # noqa: E402

log = get_logger("rtmp2server.gst.demux")

ELEMENT_NAME: Final = "rtmp2flvdemux"
# Above flvdemux (PRIMARY), so that decodebin, uridecodebin and playbin pick this element.
RANK: Final = int(Gst.Rank.PRIMARY) + 1

_VIDEO_CAPS = "video/x-h264; video/x-h265; video/x-av1; video/x-vp9"
_AUDIO_CAPS = "audio/mpeg; audio/x-opus; audio/x-flac; audio/x-ac3; audio/x-eac3"
_RW = GObject.ParamFlags.READWRITE | Gst.PARAM_MUTABLE_READY


def _template(name: str, caps: str) -> Gst.PadTemplate:
    return Gst.PadTemplate.new(
        name, Gst.PadDirection.SRC, Gst.PadPresence.SOMETIMES, Gst.Caps.from_string(caps)
    )


def make_caps(config: VideoConfig | AudioConfig) -> Gst.Caps:
    media_type, fields = caps_for(config)
    caps = Gst.Caps.from_string(caps_string(media_type, fields))
    if caps is None:  # pragma: no cover - caps_string writes what from_string reads
        raise ValueError(f"caps for {config.codec} do not parse")
    return caps


@dataclass
class _Out:
    pad: Gst.Pad
    media_type: str
    caps: Gst.Caps
    discont: bool = True


class RTMP2FLVDemux(Gst.Element):  # type: ignore[misc]
    """Demuxes FLV, Enhanced RTMP included, into one elementary stream per track."""

    __gtype_name__ = "GstRTMP2FLVDemux"
    __gstmetadata__ = (
        "FLV demuxer (Enhanced RTMP)",
        "Codec/Demuxer",
        "Demuxes FLV streams and files, legacy and Enhanced RTMP (H.264, HEVC, AV1, VP9, AAC, "
        "MP3, Opus, FLAC, AC-3, E-AC-3, multitrack), into elementary streams",
        "gst-rtmp2-server",
    )
    __gsttemplates__ = (
        Gst.PadTemplate.new(
            "sink",
            Gst.PadDirection.SINK,
            Gst.PadPresence.ALWAYS,
            Gst.Caps.from_string("video/x-flv"),
        ),
        _template("video", _VIDEO_CAPS),
        _template("audio", _AUDIO_CAPS),
        _template("video_%u", _VIDEO_CAPS),
        _template("audio_%u", _AUDIO_CAPS),
    )
    __gproperties__ = {
        "max-tag-size": (
            GObject.TYPE_UINT,
            "Maximum tag size",
            "Largest FLV tag body accepted, in bytes; a larger size means the stream is "
            "corrupt and the demuxer resynchronises",
            1024,
            1 << 24,
            flvdemux.DEFAULT_MAX_TAG_SIZE,
            _RW,
        ),
        "tracks-wait": (
            GObject.TYPE_UINT,
            "Tracks wait",
            "Stream milliseconds to wait for the sequence headers of the tracks the FLV "
            "header announces before signalling no-more-pads",
            0,
            600000,
            flvdemux.DEFAULT_TRACKS_WAIT_MS,
            _RW,
        ),
    }

    def __init__(self) -> None:
        super().__init__()
        self._max_tag_size = flvdemux.DEFAULT_MAX_TAG_SIZE
        self._tracks_wait = flvdemux.DEFAULT_TRACKS_WAIT_MS
        self.sinkpad = Gst.Pad.new_from_template(self.get_pad_template("sink"), "sink")
        self.sinkpad.set_chain_function_full(self._chain)
        self.sinkpad.set_event_function_full(self._sink_event)
        self.add_pad(self.sinkpad)
        self._combiner = GstBase.FlowCombiner.new()
        self._outs: dict[tuple[str, int], _Out] = {}
        self._reset()

    def _reset(self) -> None:
        self._demuxer = flvdemux.FLVDemuxer(
            max_tag_size=self._max_tag_size, tracks_wait_ms=self._tracks_wait
        )
        segment = Gst.Segment()
        segment.init(Gst.Format.TIME)
        self._segment = segment
        self._group_id = Gst.util_group_id_next()
        self._new_stream = False  # a second FLV header: tracks may change codec
        self._added_since_no_more_pads = False
        self._no_more_pads_sent = False

    # --- properties ----------------------------------------------------------------------

    def do_get_property(self, prop: GObject.ParamSpec) -> Any:
        if prop.name == "max-tag-size":
            return self._max_tag_size
        if prop.name == "tracks-wait":
            return self._tracks_wait
        raise AttributeError(f"unknown property {prop.name}")

    def do_set_property(self, prop: GObject.ParamSpec, value: Any) -> None:
        if prop.name == "max-tag-size":
            self._max_tag_size = int(value)
        elif prop.name == "tracks-wait":
            self._tracks_wait = int(value)
        else:
            raise AttributeError(f"unknown property {prop.name}")
        self._demuxer.max_tag_size = self._max_tag_size
        self._demuxer.tracks_wait_ms = self._tracks_wait

    # --- states --------------------------------------------------------------------------

    def do_change_state(self, transition: Gst.StateChange) -> Gst.StateChangeReturn:
        if transition == Gst.StateChange.READY_TO_PAUSED:
            self._reset()
        ret = Gst.Element.do_change_state(self, transition)
        if transition == Gst.StateChange.PAUSED_TO_READY:
            self._remove_all()
            self._reset()
        return ret

    def _remove_all(self) -> None:
        for out in list(self._outs.values()):
            self._combiner.remove_pad(out.pad)
            out.pad.set_active(False)
            self.remove_pad(out.pad)
        self._outs.clear()
        self._combiner.reset()

    # --- sink pad ------------------------------------------------------------------------

    def _sink_event(self, pad: Gst.Pad, parent: Any, event: Gst.Event) -> bool:
        kind = event.type
        if kind == Gst.EventType.SEGMENT:
            segment = event.parse_segment()
            if segment.format == Gst.Format.TIME:
                self._segment = segment.copy()
                self._demuxer.rebase = True
            else:
                fresh = Gst.Segment()
                fresh.init(Gst.Format.TIME)
                self._segment = fresh
                self._demuxer.rebase = False
            for out in self._outs.values():
                out.pad.push_event(Gst.Event.new_segment(self._segment))
            return True
        if kind == Gst.EventType.STREAM_START:
            ok, group = event.parse_group_id()
            if ok:  # keep upstream's group, as flvdemux does
                self._group_id = group
            return True
        if kind == Gst.EventType.CAPS:
            return True
        if kind == Gst.EventType.FLUSH_STOP:
            self._demuxer.reset()
            self._combiner.reset()
            for out in self._outs.values():
                out.discont = True
        if kind == Gst.EventType.EOS and not self._outs:
            self._element_error(
                Gst.StreamError.DEMUX,
                "No audio or video track found in the FLV stream",
                "end of stream before any sequence header or frame",
            )
        return self._push_all(event)

    def _push_all(self, event: Gst.Event) -> bool:
        ok = True
        for out in list(self._outs.values()):
            ok = out.pad.push_event(event) and ok
        return ok

    def _chain(self, pad: Gst.Pad, parent: Any, buf: Gst.Buffer) -> Gst.FlowReturn:
        data = buf.extract_dup(0, buf.get_size())
        ret = Gst.FlowReturn.OK
        for event in self._demuxer.receive_data(data):
            if isinstance(event, flvdemux.Frame):
                ret = self._push_frame(event)
                if ret not in (Gst.FlowReturn.OK, Gst.FlowReturn.NOT_LINKED):
                    return ret
            elif isinstance(event, flvdemux.TrackConfigured):
                self._configure(event)
            elif isinstance(event, flvdemux.TracksComplete):
                self._tracks_complete()
            elif isinstance(event, flvdemux.StreamStarted):
                self._stream_started()
            else:
                self._skipped(event)
        return ret

    # --- events to pads ------------------------------------------------------------------

    def _stream_started(self) -> None:
        if self._outs:
            self._new_stream = True
        self._no_more_pads_sent = False
        for out in self._outs.values():
            out.discont = True

    def _configure(self, event: flvdemux.TrackConfigured) -> None:
        key = (event.kind, event.track_id)
        try:
            caps = make_caps(event.config)
        except ValueError as err:
            # One warning per configuration; its frames then have no pad to go to (and a
            # pad this track had for an earlier codec must not get them).
            if key in self._outs:
                self._remove(key)
            reason = f"{event.kind} track {event.track_id}: {err}"
            self._skipped(flvdemux.TagSkipped(0, 0, 0, reason))
            return
        media_type = caps.get_structure(0).get_name()
        out = self._outs.get(key)
        if out is not None and out.media_type != media_type:
            log.debug("%s: %s track %d changes to %s", self.get_name(), *key, media_type)
            self._remove(key)
            out = None
        if out is None:
            if self._new_stream:
                self._group_id = Gst.util_group_id_next()
                self._new_stream = False
            self._add(key, caps, media_type)
            return
        if not out.caps.is_equal(caps):
            out.caps = caps
            out.pad.push_event(Gst.Event.new_caps(caps))

    def _add(self, key: tuple[str, int], caps: Gst.Caps, media_type: str) -> None:
        kind, track_id = key
        name = kind if track_id == 0 else f"{kind}_{track_id}"
        template = self.get_pad_template(kind if track_id == 0 else f"{kind}_%u")
        pad = Gst.Pad.new_from_template(template, name)
        pad.use_fixed_caps()
        pad.set_active(True)
        start = Gst.Event.new_stream_start(pad.create_stream_id(self, name))
        start.set_group_id(self._group_id)
        pad.push_event(start)
        pad.push_event(Gst.Event.new_caps(caps))
        pad.push_event(Gst.Event.new_segment(self._segment))
        self._outs[key] = _Out(pad, media_type, caps)
        self.add_pad(pad)
        self._combiner.add_pad(pad)
        self._added_since_no_more_pads = True

    def _remove(self, key: tuple[str, int]) -> None:
        out = self._outs.pop(key)
        out.pad.push_event(Gst.Event.new_eos())
        self._combiner.remove_pad(out.pad)
        out.pad.set_active(False)
        self.remove_pad(out.pad)

    def _tracks_complete(self) -> None:
        if self._added_since_no_more_pads or not self._no_more_pads_sent:
            self._added_since_no_more_pads = False
            self._no_more_pads_sent = True
            self.no_more_pads()

    def _push_frame(self, frame: flvdemux.Frame) -> Gst.FlowReturn:
        out = self._outs.get((frame.kind, frame.track_id))
        if out is None:
            return Gst.FlowReturn.OK
        buf = Gst.Buffer.new_wrapped(frame.data)
        buf.dts = frame.dts * Gst.MSECOND
        buf.pts = frame.pts * Gst.MSECOND
        if not frame.keyframe:
            buf.set_flags(Gst.BufferFlags.DELTA_UNIT)
        if out.discont:
            buf.set_flags(Gst.BufferFlags.DISCONT)
            out.discont = False
        ret = out.pad.push(buf)
        result: Gst.FlowReturn = self._combiner.update_pad_flow(out.pad, ret)
        return result

    # --- bus -----------------------------------------------------------------------------

    def _skipped(self, event: flvdemux.TagSkipped) -> None:
        where = f" at byte {event.offset}" if event.offset else ""
        text = f"Skipped FLV data{where}: {event.reason}"
        log.warning("%s: %s", self.get_name(), text)
        self._message(Gst.MessageType.WARNING, Gst.StreamError.DEMUX, text, event.reason)

    def _element_error(self, code: Any, text: str, debug: str) -> None:
        self._message(Gst.MessageType.ERROR, code, text, debug)

    def _message(self, kind: Gst.MessageType, code: Any, text: str, debug: str) -> None:
        caller = sys._getframe(2)
        self.message_full(
            kind,
            Gst.stream_error_quark(),
            code,
            text,
            debug,
            caller.f_code.co_filename,
            caller.f_code.co_name,
            caller.f_lineno,
        )
