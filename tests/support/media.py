"""The source FLV every end-to-end publish sends, made once per test session with ffmpeg.

Two seconds of 30 fps H.264 (one keyframe a second) and 44.1 kHz AAC. ffprobe's packet counts of
the source are the reference a recording must match exactly. Under pytest-xdist the workers share
one copy: the first to take the lock makes it, the others wait and reuse it.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .probe import av_counts

FFMPEG = shutil.which("ffmpeg") or "ffmpeg"

DURATION = 2.0
FPS = 30
SAMPLE_RATE = 44100
_NAME = "source-h264-aac-2s.flv"


@dataclass(frozen=True, slots=True)
class SourceMedia:
    path: Path
    video: int
    audio: int
    duration: float

    @property
    def counts(self) -> dict[str, int]:
        return {"video": self.video, "audio": self.audio}


def _generate(out: Path) -> None:
    tmp = out.with_suffix(f".{os.getpid()}.tmp")
    subprocess.run(
        [
            FFMPEG,
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            f"testsrc=size=320x240:rate={FPS}",
            "-f",
            "lavfi",
            "-i",
            f"sine=frequency=440:sample_rate={SAMPLE_RATE}",
            "-t",
            str(DURATION),
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-g",
            str(FPS),
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            "-b:a",
            "64k",
            "-f",
            "flv",
            str(tmp),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    os.replace(tmp, out)


def source_media(cache_dir: Path) -> SourceMedia:
    """The source file in `cache_dir` (made on first use) and its exact packet counts."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / _NAME
    meta = cache_dir / (_NAME + ".json")
    with open(cache_dir / (_NAME + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (path.exists() and meta.exists()):
            _generate(path)
            counts = av_counts(path)
            meta.write_text(json.dumps(counts))
        counts = json.loads(meta.read_text())
    media = SourceMedia(path, int(counts["video"]), int(counts["audio"]), DURATION)
    # The reference itself must be sane, or every comparison against it means nothing.
    assert media.video == round(DURATION * FPS), media
    assert media.audio >= int(DURATION * SAMPLE_RATE / 1024), media
    return media
