"""The README's library example, run as a user would: Ctrl-C finishes the recording."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support.clients import start_looping_publisher
from support.media import SourceMedia
from support.probe import av_counts, probe_errors
from support.server import free_port

README = Path(__file__).resolve().parents[1] / "README.md"

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


def library_example() -> str:
    text = README.read_text()
    section = text[text.index("## As a library") :]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "no python example under 'As a library'"
    return match.group(1)


def test_readme_library_example_finishes_recording_on_ctrl_c(
    tmp_path: Path, source: SourceMedia
) -> None:
    port = free_port()
    code = library_example().replace("port=1935", f"port={port}")
    assert str(port) in code
    script = tmp_path / "example.py"
    script.write_text(code)
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    publisher = None
    try:
        # A publisher still live when Ctrl-C arrives: ffmpeg looping the source in real time.
        deadline = time.monotonic() + 15
        recordings: list[Path] = []
        while not recordings and time.monotonic() < deadline:
            if publisher is None or not publisher.running():
                publisher = start_looping_publisher(
                    source.path, f"rtmp://127.0.0.1:{port}/live/lib"
                )
            time.sleep(0.2)
            recordings = list((tmp_path / "rec" / "live").glob("lib-*.flv"))
        assert recordings, "the example recorded nothing in 15 s"
        time.sleep(2.5)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=15)
    finally:
        proc.kill()
        if publisher is not None:
            publisher.kill()
    assert proc.returncode == 0, out
    assert "Traceback" not in out, out
    (path,) = recordings
    assert probe_errors(path) == ""
    counts = av_counts(path)
    # 2.5 s of media at least, the whole source (2 s) and then some: nothing lost at Ctrl-C.
    assert counts["video"] >= source.video and counts["audio"] >= source.audio, counts
