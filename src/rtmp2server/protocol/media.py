"""Codec configuration: what a decoder configuration record or a first frame says about a track.

This module owns the parsing of the codec headers that FLV and Enhanced RTMP carry in a
sequence-start packet (or, for codecs that have none, in the first frame): the AVC and HEVC
decoder configuration records with their SPS (ISO/IEC 14496-15, H.264 7.3.2.1, H.265
7.3.2.2), the AV1 codec configuration record and sequence header OBU (AV1-ISOBMFF, AV1 spec
5.5), the VP9 codec configuration record (vpcC) and a VP9 keyframe's uncompressed header,
the AAC AudioSpecificConfig (ISO/IEC 14496-3 1.6.2.1), the Opus identification header
(RFC 7845 5.1), FLAC STREAMINFO (RFC 9639 8.2) and the AC-3 / E-AC-3 sync frame (ATSC A/52
5.3, annex E).

Each parser returns a `VideoConfig` or `AudioConfig`: the facts a player or an HTTP API
reports (size, frame rate, profile, level, bit depth; sample rate, channels) and the bytes a
decoder needs (`record`). Everything is pure; malformed input raises `CodecConfigError`.
Fields that the header does not carry are None rather than guessed.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Final

from .errors import RemoteProtocolError

__all__ = [
    "AudioConfig",
    "CodecConfigError",
    "VideoConfig",
    "aac_config",
    "ac3_config",
    "audio_config",
    "av1_config",
    "av1_has_sequence_header",
    "avc_config",
    "flac_config",
    "hevc_config",
    "opus_config",
    "video_config",
    "vp9_config",
    "vp9_frame_config",
]


class CodecConfigError(RemoteProtocolError):
    """A codec header that cannot be parsed."""


@dataclass(frozen=True, slots=True)
class VideoConfig:
    """A video track's configuration. `codec` is the E-RTMP FourCC ("avc1", "hvc1", ...)."""

    codec: str
    record: bytes = b""  # the decoder configuration record as it arrived (codec_data)
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    profile: str | None = None
    level: str | None = None
    bit_depth: int | None = None
    chroma_format: str | None = None  # "4:2:0", "4:2:2", "4:4:4", "4:0:0"
    tier: str | None = None  # HEVC "main"/"high"
    sequence_header: bytes = b""  # AV1: the sequence header OBU of the record
    nal_length_size: int | None = None  # AVC/HEVC


@dataclass(frozen=True, slots=True)
class AudioConfig:
    """An audio track's configuration. `codec` is the E-RTMP FourCC ("mp4a", "Opus", ...)."""

    codec: str
    record: bytes = b""  # AudioSpecificConfig, OpusHead, STREAMINFO; b"" for AC-3 and MP3
    rate: int | None = None
    channels: int | None = None
    profile: str | None = None  # AAC object type name
    bit_depth: int | None = None
    # Opus: RFC 7845 channel mapping family, stream and coupled counts, channel mapping
    mapping_family: int | None = None
    stream_count: int | None = None
    coupled_count: int | None = None
    channel_mapping: tuple[int, ...] = field(default=())
    pre_skip: int | None = None


# --- bits ------------------------------------------------------------------------------------


class _Bits:
    """A big-endian bit reader that raises CodecConfigError past the end."""

    __slots__ = ("_data", "_pos", "_what")

    def __init__(self, data: bytes, what: str) -> None:
        self._data = data
        self._pos = 0
        self._what = what

    def u(self, n: int) -> int:
        pos = self._pos
        if pos + n > len(self._data) * 8:
            raise CodecConfigError(
                f"{self._what} of {len(self._data)} bytes ends inside a field at bit {pos}, "
                "expected a complete header"
            )
        value = 0
        for _ in range(n):
            value = (value << 1) | ((self._data[pos >> 3] >> (7 - (pos & 7))) & 1)
            pos += 1
        self._pos = pos
        return value

    def skip(self, n: int) -> None:
        if self._pos + n > len(self._data) * 8:
            self.u(len(self._data) * 8 - self._pos + 1)  # raises, naming the position
        self._pos += n

    def ue(self) -> int:
        zeros = 0
        while self.u(1) == 0:
            zeros += 1
            if zeros > 31:
                raise CodecConfigError(f"{self._what}: Exp-Golomb code longer than 32 bits")
        return (1 << zeros) - 1 + self.u(zeros)

    def se(self) -> int:
        k = self.ue()
        return (k + 1) // 2 if k & 1 else -(k // 2)


def _unescape(nal: bytes) -> bytes:
    """Remove H.264/H.265 emulation prevention bytes (00 00 03 -> 00 00)."""
    return nal.replace(b"\x00\x00\x03", b"\x00\x00") if b"\x00\x00\x03" in nal else nal


def _need(data: bytes, n: int, what: str) -> None:
    if len(data) < n:
        raise CodecConfigError(f"{what} of {len(data)} bytes, expected at least {n}")


_CHROMA: Final = {0: "4:0:0", 1: "4:2:0", 2: "4:2:2", 3: "4:4:4"}


# --- AVC -------------------------------------------------------------------------------------

_AVC_PROFILES: Final = {
    66: "baseline",
    77: "main",
    88: "extended",
    100: "high",
    110: "high-10",
    122: "high-4:2:2",
    244: "high-4:4:4",
    44: "cavlc-4:4:4-intra",
}
_AVC_HIGH: Final = frozenset({100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135})


def _avc_sps(sps: bytes, config: dict[str, object]) -> None:
    b = _Bits(_unescape(sps[1:]), "H.264 SPS")
    profile_idc = b.u(8)
    b.u(8)
    b.u(8)
    b.ue()
    chroma = 1
    separate = 0
    depth = 8
    if profile_idc in _AVC_HIGH:
        chroma = b.ue()
        if chroma == 3:
            separate = b.u(1)
        depth = b.ue() + 8
        b.ue()
        b.u(1)
        if b.u(1):  # seq_scaling_matrix_present_flag
            for i in range(12 if chroma == 3 else 8):
                if b.u(1):
                    last = nxt = 8
                    for _ in range(16 if i < 6 else 64):
                        if nxt:
                            nxt = (last + b.se() + 256) % 256
                        last = nxt or last
    b.ue()  # log2_max_frame_num_minus4
    poc_type = b.ue()
    if poc_type == 0:
        b.ue()
    elif poc_type == 1:
        b.u(1)
        b.se()
        b.se()
        for _ in range(b.ue()):
            b.se()
    b.ue()
    b.u(1)
    width_mbs = b.ue() + 1
    height_units = b.ue() + 1
    frame_mbs_only = b.u(1)
    if not frame_mbs_only:
        b.u(1)
    b.u(1)
    crop = (0, 0, 0, 0)
    if b.u(1):
        crop = (b.ue(), b.ue(), b.ue(), b.ue())
    if chroma == 0 or separate:
        unit_x, unit_y = 1, 2 - frame_mbs_only
    else:
        unit_x = 1 if chroma == 3 else 2
        unit_y = (2 if chroma == 1 else 1) * (2 - frame_mbs_only)
    config["width"] = width_mbs * 16 - unit_x * (crop[0] + crop[1])
    config["height"] = (2 - frame_mbs_only) * height_units * 16 - unit_y * (crop[2] + crop[3])
    config["bit_depth"] = depth
    config["chroma_format"] = _CHROMA.get(chroma)
    if b.u(1):  # vui_parameters_present_flag
        if b.u(1) and b.u(8) == 255:  # aspect_ratio_info_present, Extended_SAR
            b.u(32)
        if b.u(1):
            b.u(1)
        if b.u(1):  # video_signal_type_present_flag
            b.u(4)
            if b.u(1):
                b.u(24)
        if b.u(1):
            b.ue()
            b.ue()
        if b.u(1):  # timing_info_present_flag
            units, scale = b.u(32), b.u(32)
            if units:
                config["fps"] = scale / (2 * units)


def avc_config(record: bytes) -> VideoConfig:
    """An AVCDecoderConfigurationRecord (the H.264 sequence header's body)."""
    _need(record, 7, "AVCDecoderConfigurationRecord")
    if record[0] != 1:
        raise CodecConfigError(f"AVCDecoderConfigurationRecord version {record[0]}, expected 1")
    profile_idc, level_idc = record[1], record[3]
    facts: dict[str, object] = {}
    pos = 6
    for _ in range(record[5] & 0x1F):
        _need(record, pos + 2, "AVCDecoderConfigurationRecord SPS")
        n = struct.unpack_from(">H", record, pos)[0]
        sps = record[pos + 2 : pos + 2 + n]
        _need(sps, n, "AVCDecoderConfigurationRecord SPS")
        pos += 2 + n
        if not facts and n > 4:
            _avc_sps(sps, facts)
    _need(record, pos + 1, "AVCDecoderConfigurationRecord PPS count")
    level = f"{level_idc // 10}.{level_idc % 10}" if level_idc % 10 else str(level_idc // 10)
    if level_idc == 9:
        level = "1b"
    return VideoConfig(
        "avc1",
        record,
        profile=_AVC_PROFILES.get(profile_idc, str(profile_idc)),
        level=level,
        nal_length_size=(record[4] & 3) + 1,
        **facts,  # type: ignore[arg-type]
    )


# --- HEVC ------------------------------------------------------------------------------------

_HEVC_PROFILES: Final = {1: "main", 2: "main-10", 3: "main-still-picture", 4: "rext"}


def _hevc_sps(sps: bytes, config: dict[str, object]) -> None:
    b = _Bits(_unescape(sps[2:]), "H.265 SPS")
    b.u(4)
    max_sub_layers = b.u(3)
    b.u(1)
    b.skip(88)  # general profile space .. general constraint flags
    b.u(8)  # general_level_idc
    present = [(b.u(1), b.u(1)) for _ in range(max_sub_layers)]
    if max_sub_layers > 0:
        b.skip(2 * (8 - max_sub_layers))
    for profile_present, level_present in present:
        if profile_present:
            b.skip(88)
        if level_present:
            b.u(8)
    b.ue()
    chroma = b.ue()
    if chroma == 3:
        b.u(1)
    width, height = b.ue(), b.ue()
    if b.u(1):  # conformance_window_flag
        left, right, top, bottom = b.ue(), b.ue(), b.ue(), b.ue()
        unit_x = 2 if chroma in (1, 2) else 1
        unit_y = 2 if chroma == 1 else 1
        width -= unit_x * (left + right)
        height -= unit_y * (top + bottom)
    config["width"], config["height"] = width, height
    config["bit_depth"] = b.ue() + 8
    config["chroma_format"] = _CHROMA.get(chroma)


def hevc_config(record: bytes) -> VideoConfig:
    """An HEVCDecoderConfigurationRecord (hvcC)."""
    _need(record, 23, "HEVCDecoderConfigurationRecord")
    if record[0] != 1:
        raise CodecConfigError(f"HEVCDecoderConfigurationRecord version {record[0]}, expected 1")
    profile_idc = record[1] & 0x1F
    level_idc = record[12]
    avg_rate = struct.unpack_from(">H", record, 19)[0]
    facts: dict[str, object] = {}
    pos = 23
    for _ in range(record[22]):
        _need(record, pos + 3, "HEVCDecoderConfigurationRecord array")
        nal_type = record[pos] & 0x3F
        count = struct.unpack_from(">H", record, pos + 1)[0]
        pos += 3
        for _ in range(count):
            _need(record, pos + 2, "HEVCDecoderConfigurationRecord NAL unit")
            n = struct.unpack_from(">H", record, pos)[0]
            nal = record[pos + 2 : pos + 2 + n]
            _need(nal, n, "HEVCDecoderConfigurationRecord NAL unit")
            pos += 2 + n
            if nal_type == 33 and not facts and n > 3:
                _hevc_sps(nal, facts)
    level = f"{level_idc // 30}.{level_idc % 30 // 3}" if level_idc % 30 else str(level_idc // 30)
    if avg_rate and "fps" not in facts:
        facts["fps"] = avg_rate / 256
    return VideoConfig(
        "hvc1",
        record,
        profile=_HEVC_PROFILES.get(profile_idc, str(profile_idc)),
        level=level,
        tier="high" if record[1] & 0x20 else "main",
        nal_length_size=(record[21] & 3) + 1,
        **facts,  # type: ignore[arg-type]
    )


# --- AV1 -------------------------------------------------------------------------------------

_AV1_PROFILES: Final = {0: "main", 1: "high", 2: "professional"}
OBU_SEQUENCE_HEADER: Final = 1
OBU_TEMPORAL_DELIMITER: Final = 2


def _leb128(data: bytes, pos: int) -> tuple[int, int]:
    value = 0
    for i in range(8):
        if pos >= len(data):
            raise CodecConfigError("AV1 OBU: leb128 size runs past the end")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return value, pos
    raise CodecConfigError("AV1 OBU: leb128 size longer than 8 bytes")


def av1_obus(data: bytes) -> list[tuple[int, int, int]]:
    """The OBUs of a low-overhead bitstream: (type, start, end) with the header included."""
    out = []
    pos = 0
    while pos < len(data):
        start = pos
        header = data[pos]
        pos += 1 + ((header >> 2) & 1)  # obu_extension_flag
        if header & 0x02:  # obu_has_size_field
            size, pos = _leb128(data, pos)
        else:
            size = len(data) - pos
        end = pos + size
        if end > len(data):
            raise CodecConfigError(
                f"AV1 OBU of {size} bytes at offset {start} runs past the end ({len(data)})"
            )
        out.append(((header >> 3) & 0x0F, start, end))
        pos = end
    return out


def av1_has_sequence_header(data: bytes) -> bool:
    """The temporal unit carries a sequence header OBU (a decoder can start from it)."""
    try:
        return any(t == OBU_SEQUENCE_HEADER for t, _, _ in av1_obus(data))
    except CodecConfigError:
        return False


def _av1_sequence_header(obu: bytes, config: dict[str, object]) -> None:
    header = obu[0]
    pos = 1 + ((header >> 2) & 1)
    if header & 0x02:
        _, pos = _leb128(obu, pos)
    b = _Bits(obu[pos:], "AV1 sequence header")
    b.u(3)
    b.u(1)
    if b.u(1):  # reduced_still_picture_header
        b.u(5)
    else:
        decoder_model = 0
        delay_length = 0
        if b.u(1):  # timing_info_present_flag
            units, scale = b.u(32), b.u(32)
            if b.u(1):  # equal_picture_interval
                b.ue()  # uvlc: the same leading-zeros code as Exp-Golomb for our purpose
            if units:
                config["fps"] = scale / units
            decoder_model = b.u(1)
            if decoder_model:
                delay_length = b.u(5) + 1
                b.u(32)
                b.u(10)
        initial_delay = b.u(1)
        for _ in range(b.u(5) + 1):
            b.u(12)
            if b.u(5) > 7:
                b.u(1)
            if decoder_model and b.u(1):
                b.skip(2 * delay_length + 1)
            if initial_delay and b.u(1):
                b.u(4)
    width_bits, height_bits = b.u(4) + 1, b.u(4) + 1
    config["width"] = b.u(width_bits) + 1
    config["height"] = b.u(height_bits) + 1


def av1_config(record: bytes) -> VideoConfig:
    """An AV1CodecConfigurationRecord (av1C) with its sequence header OBU."""
    _need(record, 4, "AV1CodecConfigurationRecord")
    if record[0] != 0x81:
        raise CodecConfigError(
            f"AV1CodecConfigurationRecord starts {record[0]:#04x}, expected 0x81 "
            "(marker 1, version 1)"
        )
    profile = record[1] >> 5
    level_idx = record[1] & 0x1F
    flags = record[2]
    depth = 12 if flags & 0x20 else 10 if flags & 0x40 else 8
    if flags & 0x10:
        chroma = "4:0:0"
    else:
        chroma = {(1, 1): "4:2:0", (1, 0): "4:2:2", (0, 0): "4:4:4"}.get(
            ((flags >> 3) & 1, (flags >> 2) & 1), "4:2:0"
        )
    facts: dict[str, object] = {}
    sequence_header = b""
    obus = record[4:]
    for obu_type, start, end in av1_obus(obus):
        if obu_type == OBU_SEQUENCE_HEADER:
            sequence_header = obus[start:end]
            _av1_sequence_header(sequence_header, facts)
            break
    return VideoConfig(
        "av01",
        record,
        profile=_AV1_PROFILES.get(profile, str(profile)),
        level=f"{2 + (level_idx >> 2)}.{level_idx & 3}" if level_idx < 31 else None,
        bit_depth=depth,
        chroma_format=chroma,
        sequence_header=sequence_header,
        **facts,  # type: ignore[arg-type]
    )


# --- VP9 -------------------------------------------------------------------------------------

_VPC_CHROMA: Final = {0: "4:2:0", 1: "4:2:0", 2: "4:2:2", 3: "4:4:4"}


def vp9_config(record: bytes) -> VideoConfig:
    """A VPCodecConfigurationRecord (vpcC, version 1: 4 bytes of version and flags first)."""
    _need(record, 12, "VPCodecConfigurationRecord")
    if record[0] != 1:
        raise CodecConfigError(f"VPCodecConfigurationRecord version {record[0]}, expected 1")
    level = record[5]
    return VideoConfig(
        "vp09",
        record,
        profile=str(record[4]),
        level=f"{level // 10}.{level % 10}" if level else None,
        bit_depth=record[6] >> 4,
        chroma_format=_VPC_CHROMA.get((record[6] >> 1) & 7),
    )


def vp9_frame_config(frame: bytes) -> VideoConfig | None:
    """What a VP9 keyframe's uncompressed header says (VP9 6.2); None for other frames."""
    b = _Bits(frame, "VP9 frame header")
    if b.u(2) != 2:
        raise CodecConfigError("VP9 frame: frame_marker is not 2, expected a VP9 frame")
    profile = b.u(1) | (b.u(1) << 1)
    if profile == 3:
        b.u(1)
    if b.u(1):  # show_existing_frame
        return None
    if b.u(1):  # frame_type 1: not a keyframe
        return None
    b.u(2)
    if b.u(24) != 0x498342:
        raise CodecConfigError("VP9 keyframe: sync code is not 49 83 42")
    depth = 8
    if profile >= 2:
        depth = 12 if b.u(1) else 10
    chroma = "4:2:0"
    if b.u(3) != 7:  # color_space other than CS_RGB
        b.u(1)
        if profile in (1, 3):
            sub_x, sub_y = b.u(1), b.u(1)
            b.u(1)
            chroma = {(1, 1): "4:2:0", (1, 0): "4:2:2", (0, 1): "4:4:0"}.get(
                (sub_x, sub_y), "4:4:4"
            )
    else:
        chroma = "4:4:4"
        if profile in (1, 3):
            b.u(1)
    width, height = b.u(16) + 1, b.u(16) + 1
    return VideoConfig(
        "vp09",
        b"",
        width=width,
        height=height,
        profile=str(profile),
        bit_depth=depth,
        chroma_format=chroma,
    )


def video_config(codec: str, record: bytes) -> VideoConfig:
    """The configuration a sequence-start packet of `codec` carries."""
    parser = _VIDEO.get(codec)
    if parser is None:
        return VideoConfig(codec, record)
    return parser(record)


_VIDEO: Final = {"avc1": avc_config, "hvc1": hevc_config, "av01": av1_config, "vp09": vp9_config}


# --- AAC -------------------------------------------------------------------------------------

AAC_RATES: Final = (
    96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
)  # fmt: skip
_AAC_OBJECTS: Final = {1: "main", 2: "lc", 3: "ssr", 4: "ltp", 5: "he-aac", 29: "he-aac-v2"}


def aac_config(asc: bytes) -> AudioConfig:
    """An AudioSpecificConfig (the AAC sequence header's body)."""
    b = _Bits(asc, "AudioSpecificConfig")
    obj = b.u(5)
    if obj == 31:
        obj = 32 + b.u(6)
    index = b.u(4)
    rate = b.u(24) if index == 15 else AAC_RATES[index] if index < len(AAC_RATES) else None
    if rate is None:
        raise CodecConfigError(
            f"AudioSpecificConfig: sampling frequency index {index}, expected 0-12 or 15"
        )
    chan_config = b.u(4)
    channels = {7: 8}.get(chan_config, chan_config) if chan_config < 8 else None
    return AudioConfig(
        "mp4a", asc, rate=rate, channels=channels or None, profile=_AAC_OBJECTS.get(obj, str(obj))
    )


# --- Opus ------------------------------------------------------------------------------------


def opus_config(head: bytes) -> AudioConfig:
    """An Opus identification header ("OpusHead", RFC 7845 section 5.1)."""
    _need(head, 19, "OpusHead")
    if head[:8] != b"OpusHead":
        raise CodecConfigError(f"Opus header starts {head[:8]!r}, expected b'OpusHead'")
    channels = head[9]
    pre_skip = struct.unpack_from("<H", head, 10)[0]
    family = head[18]
    if family == 0:
        streams, coupled = 1, 1 if channels == 2 else 0
        mapping: tuple[int, ...] = (0, 1) if channels == 2 else (0,)
    else:
        _need(head, 21 + channels, f"OpusHead of mapping family {family}")
        streams, coupled = head[19], head[20]
        mapping = tuple(head[21 : 21 + channels])
    if not channels:
        raise CodecConfigError("OpusHead: 0 channels, expected 1 or more")
    return AudioConfig(
        "Opus",
        head,
        rate=48000,  # Opus always decodes at 48 kHz; the header's rate is the input's
        channels=channels,
        mapping_family=family,
        stream_count=streams,
        coupled_count=coupled,
        channel_mapping=mapping,
        pre_skip=pre_skip,
    )


# --- FLAC ------------------------------------------------------------------------------------


def flac_config(data: bytes) -> AudioConfig:
    """FLAC STREAMINFO: the bare 34 bytes (as ffmpeg's FLV muxer sends them), or a stream
    header `fLaC` + metadata blocks whose first block is STREAMINFO. `record` is always the
    bare 34 bytes."""
    if data[:4] == b"fLaC":
        _need(data, 8 + 34, "FLAC stream header")
        if data[4] & 0x7F != 0:
            raise CodecConfigError(
                f"FLAC stream header: first metadata block type {data[4] & 0x7F}, "
                "expected 0 (STREAMINFO)"
            )
        data = data[8:42]
    _need(data, 34, "FLAC STREAMINFO")
    data = data[:34]
    b = _Bits(data[10:18], "FLAC STREAMINFO")
    rate = b.u(20)
    channels = b.u(3) + 1
    depth = b.u(5) + 1
    if not rate:
        raise CodecConfigError("FLAC STREAMINFO: sample rate 0, expected 1-655350 Hz")
    return AudioConfig("fLaC", data, rate=rate, channels=channels, bit_depth=depth)


# --- AC-3 / E-AC-3 ---------------------------------------------------------------------------

_AC3_CHANNELS: Final = (2, 1, 2, 3, 3, 4, 4, 5)  # by acmod
_AC3_RATES: Final = (48000, 44100, 32000)
_EAC3_REDUCED_RATES: Final = (24000, 22050, 16000)


def ac3_config(frame: bytes) -> AudioConfig:
    """The first sync frame of an AC-3 or E-AC-3 stream (there is no sequence header)."""
    _need(frame, 7, "AC-3 frame")
    if frame[:2] != b"\x0b\x77":
        raise CodecConfigError(f"AC-3 frame starts {frame[:2].hex()}, expected 0b77")
    bsid = frame[5] >> 3
    if bsid <= 10:
        b = _Bits(frame[4:], "AC-3 frame")
        fscod = b.u(2)
        b.u(6)
        b.u(5)
        b.u(3)
        acmod = b.u(3)
        if acmod & 1 and acmod != 1:
            b.u(2)
        if acmod & 4:
            b.u(2)
        if acmod == 2:
            b.u(2)
        lfe = b.u(1)
        if fscod == 3:
            raise CodecConfigError("AC-3 frame: fscod 3 (reserved), expected 0-2")
        return AudioConfig("ac-3", b"", rate=_AC3_RATES[fscod], channels=_AC3_CHANNELS[acmod] + lfe)
    b = _Bits(frame[2:], "E-AC-3 frame")
    b.u(2)
    b.u(3)
    b.u(11)
    fscod = b.u(2)
    if fscod == 3:
        rate = _EAC3_REDUCED_RATES[min(b.u(2), 2)]
    else:
        b.u(2)
        rate = _AC3_RATES[fscod]
    acmod = b.u(3)
    lfe = b.u(1)
    return AudioConfig("ec-3", b"", rate=rate, channels=_AC3_CHANNELS[acmod] + lfe)


def audio_config(codec: str, record: bytes) -> AudioConfig:
    """The configuration a sequence-start packet (or, for AC-3, a first frame) of `codec`."""
    parser = _AUDIO.get(codec)
    if parser is None:
        return AudioConfig(codec, record)
    return parser(record)


_AUDIO: Final = {
    "mp4a": aac_config,
    "Opus": opus_config,
    "fLaC": flac_config,
    "ac-3": ac3_config,
    "ec-3": ac3_config,
}
