"""The caps `rtmp2flvdemux` gives each track, as plain data (no GStreamer import here).

This module owns the mapping from a codec configuration (`protocol.media`) to the media type
and fields that GStreamer 1.22's parsers and decoders accept, read from what gst-plugins-good's
flvdemux, qtdemux and matroskademux produce for the same codecs:

- H.264 / HEVC: `stream-format=avc` / `hvc1`, `alignment=au`, the decoder configuration record
  as `codec_data` (h264parse / h265parse convert from there).
- AV1: `stream-format=obu-stream, alignment=tu` and av1C as `codec_data` (qtdemux's form).
  av1parse 1.22 ignores codec_data; the demuxer makes sure the sequence header OBU is also
  in-band.
- VP9: `video/x-vp9` with profile, bit depths, chroma format and size where known
  (matroskademux's fields from vpcC).
- AAC: `stream-format=raw` with the AudioSpecificConfig as `codec_data`, rate and channels.
- Opus: channel-mapping-family, rate, channels, stream-count and coupled-count (and the
  channel-mapping for families other than 0, as `gst_codec_utils_opus_create_caps` writes
  it), and a `streamheader` of OpusHead plus a minimal OpusTags, which opusdec reads.
- FLAC: `framed=true` and a `streamheader` in the Ogg FLAC mapping's form (the one flacparse
  itself outputs: `0x7F FLAC`, version 1.0, 0 further headers, `fLaC`, the STREAMINFO block);
  flacdec refuses caps without a streamheader.
- AC-3 / E-AC-3: `framed=true` (ac3parse checks the frames anyway), rate and channels.
- MP3: `mpegversion=1, layer=3, parsed=false` (mpegaudioparse frames it).

`caps_for` returns `(media type, [(field, value), ...])` with values of type bool, int, str,
bytes (a buffer) or a list of bytes or ints (an array); the element turns them into GstCaps.
"""

from __future__ import annotations

import struct

from ..protocol.media import AudioConfig, VideoConfig

__all__ = ["CapsValue", "caps_for", "caps_string", "opus_tags"]

CapsValue = bool | int | str | bytes | list[bytes] | list[int]

OPUS_VENDOR = b"rtmp2flvdemux"


def opus_tags(vendor: bytes = OPUS_VENDOR) -> bytes:
    """An OpusTags comment header with a vendor string and no comments (RFC 7845 5.2)."""
    return b"OpusTags" + struct.pack("<I", len(vendor)) + vendor + struct.pack("<I", 0)


def _flac_streamheader(streaminfo: bytes) -> list[bytes]:
    block = b"\x80" + len(streaminfo).to_bytes(3, "big") + streaminfo  # last block: STREAMINFO
    return [b"\x7fFLAC\x01\x00\x00\x00fLaC" + block]


def caps_for(config: VideoConfig | AudioConfig) -> tuple[str, list[tuple[str, CapsValue]]]:
    """The media type and fields for a track of `config`; ValueError for a codec without any."""
    codec = config.codec
    fields: list[tuple[str, CapsValue]] = []
    if isinstance(config, VideoConfig):
        if codec == "avc1":
            return "video/x-h264", [
                ("stream-format", "avc"),
                ("alignment", "au"),
                ("codec_data", config.record),
            ]
        if codec == "hvc1":
            return "video/x-h265", [
                ("stream-format", "hvc1"),
                ("alignment", "au"),
                ("codec_data", config.record),
            ]
        if codec == "av01":
            fields = [("stream-format", "obu-stream"), ("alignment", "tu")]
            if config.record:
                fields.append(("codec_data", config.record))
            return "video/x-av1", fields
        if codec == "vp09":
            if config.profile is not None:
                fields.append(("profile", config.profile))
            if config.bit_depth is not None:
                fields += [
                    ("bit-depth-luma", config.bit_depth),
                    ("bit-depth-chroma", config.bit_depth),
                ]
            if config.chroma_format is not None:
                fields.append(("chroma-format", config.chroma_format))
            if config.width and config.height:
                fields += [("width", config.width), ("height", config.height)]
            return "video/x-vp9", fields
        raise ValueError(f"video codec {codec!r} has no GStreamer caps here")
    if config.rate:
        fields.append(("rate", config.rate))
    if config.channels:
        fields.append(("channels", config.channels))
    if codec == "mp4a":
        return "audio/mpeg", [
            ("mpegversion", 4),
            ("stream-format", "raw"),
            ("framed", True),
            ("codec_data", config.record),
            *fields,
        ]
    if codec == ".mp3":
        return "audio/mpeg", [("mpegversion", 1), ("layer", 3), ("parsed", False), *fields]
    if codec == "Opus":
        fields = [
            ("channel-mapping-family", config.mapping_family or 0),
            *fields,
            ("stream-count", config.stream_count or 1),
            ("coupled-count", config.coupled_count or 0),
        ]
        if config.mapping_family:  # family 0's mapping is implied by the channel count
            fields.append(("channel-mapping", list(config.channel_mapping)))
        return "audio/x-opus", [*fields, ("streamheader", [config.record, opus_tags()])]
    if codec == "fLaC":
        return "audio/x-flac", [
            ("framed", True),
            *fields,
            ("streamheader", _flac_streamheader(config.record)),
        ]
    if codec == "ac-3":
        return "audio/x-ac3", [("framed", True), *fields]
    if codec == "ec-3":
        return "audio/x-eac3", [("framed", True), *fields]
    raise ValueError(f"audio codec {codec!r} has no GStreamer caps here")


def caps_string(media_type: str, fields: list[tuple[str, CapsValue]]) -> str:
    """The caps in GStreamer's string form (buffers as `(buffer)` hex), for Gst.Caps.from_string."""
    parts = [media_type]
    for name, value in fields:
        parts.append(f"{name}={_value(value)}")
    return ", ".join(parts)


def _value(value: CapsValue | int | bytes) -> str:
    if isinstance(value, bool):
        return "(boolean)true" if value else "(boolean)false"
    if isinstance(value, int):
        return f"(int){value}"
    if isinstance(value, str):
        return '(string)"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, bytes):
        return f"(buffer){value.hex()}"
    return "< " + ", ".join(_value(v) for v in value) + " >"
