"""ffprobe as the independent judge of an FLV file: packet counts per kind and demux errors."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

FFPROBE = shutil.which("ffprobe") or "ffprobe"


def count_packets(path: Path, timeout: float = 30.0) -> dict[str, int]:
    """Packets per codec type ("video", "audio", and any other kind ffprobe sees).

    ffprobe demuxes the whole file; sequence headers (AVC/AAC config) are not counted, so the
    numbers compare directly with those of the source file.
    """
    out = subprocess.run(
        [
            FFPROBE,
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
        text=True,
        timeout=timeout,
        check=True,
    )
    counts: dict[str, int] = {"video": 0, "audio": 0}
    for stream in json.loads(out.stdout).get("streams", []):
        kind = str(stream.get("codec_type", "unknown"))
        counts[kind] = counts.get(kind, 0) + int(stream.get("nb_read_packets", 0))
    return counts


def av_counts(path: Path) -> dict[str, int]:
    """Only the video and audio packet counts."""
    counts = count_packets(path)
    return {"video": counts["video"], "audio": counts["audio"]}


def probe_errors(path: Path, timeout: float = 30.0) -> str:
    """Everything ffprobe complains about while demuxing every packet: "" for a clean file."""
    proc = subprocess.run(
        [
            FFPROBE,
            "-v",
            "error",
            "-count_packets",
            "-show_entries",
            "stream=nb_read_packets",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    problems = proc.stderr.strip()
    if proc.returncode != 0:
        problems = f"ffprobe exited {proc.returncode}: {problems}"
    return problems


Packet = tuple[int | None, int | None, int, str]  # pts, dts, size, MD5 of the payload


def packets(path: Path, timeout: float = 30.0) -> dict[str, list[Packet]]:
    """Every video and audio packet in file order, per kind: timestamps (ms), size, MD5."""
    out = subprocess.run(
        [
            FFPROBE,
            "-v",
            "error",
            "-show_data_hash",
            "md5",
            "-show_entries",
            "packet=codec_type,pts,dts,size,data_hash",
            "-of",
            "json",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
    )
    found: dict[str, list[Packet]] = {"video": [], "audio": []}
    for p in json.loads(out.stdout).get("packets", []):
        kind = p.get("codec_type")
        if kind in found:
            pts, dts = p.get("pts"), p.get("dts")
            found[kind].append(
                (
                    None if pts is None else int(pts),
                    None if dts is None else int(dts),
                    int(p["size"]),
                    str(p["data_hash"]),
                )
            )
    return found


def first_difference(expected: list[Packet], got: list[Packet]) -> str:
    """Where two packet lists part, in words; "" if they are equal."""
    for i, (a, b) in enumerate(zip(expected, got, strict=False)):
        if a != b:
            return f"packet {i}: expected pts/dts/size/hash {a}, got {b}"
    if len(expected) != len(got):
        return f"{len(expected)} packets expected, {len(got)} found"
    return ""
