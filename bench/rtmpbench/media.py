"""The test media (generated once with ffmpeg and cached) and packet counting with ffprobe.

- `ingest`: 30 s of 1280x720 30 fps H.264 (x264 ultrafast, CBR 20 Mbit/s with filler, a
  keyframe every 2 s) + 48 kHz AAC 128 kbit/s, FLV: the "20 Mbit/s file" of issue 5.
- `live`: the same picture at 3 Mbit/s CBR, for the real-time (`-re`) publishers and the
  fan-out; one file per duration, so a short run compares against its own source.
"""

from __future__ import annotations

import json
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Counts:
    video: int
    audio: int

    @property
    def total(self) -> int:
        return self.video + self.audio

    def __str__(self) -> str:
        return f"{self.video}v+{self.audio}a"


def _generate(out: Path, seconds: float, mbit: int) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".part.flv")
    rate = f"{mbit}M"
    subprocess.run(
        [
            "ffmpeg",
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=1280x720:rate=30,noise=alls=30:allf=t",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=48000",
            "-t",
            f"{seconds:g}",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-tune",
            "zerolatency",
            "-g",
            "60",
            "-b:v",
            rate,
            "-minrate",
            rate,
            "-maxrate",
            rate,
            "-bufsize",
            f"{mbit // 2 or 1}M",
            "-x264-params",
            "nal-hrd=cbr",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            "-b:a",
            "128k",
            "-ar",
            "48000",
            "-f",
            "flv",
            str(tmp),
        ],
        check=True,
    )
    tmp.rename(out)


def media(cache: Path, seconds: float, mbit: int) -> Path:
    """The cached `seconds`-long `mbit` Mbit/s test file, made on first use."""
    out = cache / f"testsrc-{seconds:g}s-{mbit}M.flv"
    if not out.exists():
        _generate(out, seconds, mbit)
    return out


def count_packets(path: Path, timeout: float = 120.0) -> Counts | None:
    """Video and audio packets ffprobe reads from `path` (None if it cannot read it)."""
    try:
        probe = subprocess.run(
            [
                "ffprobe",
                "-v",
                "error",
                "-count_packets",
                "-show_entries",
                "stream=codec_type,nb_read_packets",
                "-of",
                "json",
                str(path),
            ],
            capture_output=True,
            check=False,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return None
    if probe.returncode != 0:
        return None
    video = audio = 0
    for stream in json.loads(probe.stdout or b"{}").get("streams", []):
        n = int(stream.get("nb_read_packets", 0))
        if stream.get("codec_type") == "video":
            video += n
        elif stream.get("codec_type") == "audio":
            audio += n
    return Counts(video, audio)


def from_first_keyframe(path: Path) -> Counts:
    """The packets of `path` from its first video keyframe on (a player that starts at a
    keyframe, as live relays do, gets at least these)."""
    probe = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-show_entries",
            "packet=codec_type,dts,flags",
            "-of",
            "csv=p=0",
            str(path),
        ],
        capture_output=True,
        check=True,
        text=True,
        timeout=120,
    )
    packets = [line.split(",") for line in probe.stdout.splitlines() if line]
    key_dts = min(
        (int(dts) for kind, dts, flags in packets if kind == "video" and "K" in flags),
        default=0,
    )
    video = sum(1 for kind, dts, _ in packets if kind == "video" and int(dts) >= key_dts)
    audio = sum(1 for kind, dts, _ in packets if kind == "audio" and int(dts) >= key_dts)
    return Counts(video, audio)


def wait_stable(paths: list[Path], settle: float = 0.5, timeout: float = 15.0) -> None:
    """Wait until none of `paths` has grown for `settle` seconds (the server closed them)."""
    import time

    deadline = time.monotonic() + timeout
    last: list[int] = []
    stable_since = time.monotonic()
    while time.monotonic() < deadline:
        sizes = [p.stat().st_size if p.exists() else -1 for p in paths]
        if sizes != last:
            last = sizes
            stable_since = time.monotonic()
        elif time.monotonic() - stable_since >= settle:
            return
        time.sleep(0.1)


_TAG = struct.Struct(">B3s3sB3s")


def codec_headers(path: Path) -> list[tuple[int, bytes]]:
    """The (tag type, payload) of the AVC and AAC sequence headers at the start of an FLV."""
    out: list[tuple[int, bytes]] = []
    with open(path, "rb") as f:
        header = f.read(9)
        f.seek(int.from_bytes(header[5:9], "big") + 4)
        for _ in range(16):
            raw = f.read(11)
            if len(raw) < 11:
                break
            tag_type, size, _ts, _ext, _sid = _TAG.unpack(raw)
            payload = f.read(int.from_bytes(size, "big"))
            f.read(4)
            if (tag_type == 9 and payload[:2] == b"\x17\x00") or (
                tag_type == 8 and payload[1:2] == b"\x00" and payload[0] >> 4 == 10
            ):
                out.append((tag_type, payload))
            if len(out) == 2:
                break
    return out
