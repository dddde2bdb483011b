"""`rtmp2-server status`: the live streams table, read from a real server's JSON API.

The server is the command-line one (`python -m rtmp2server --http ...`), the publisher a real
ffmpeg sending the H.264 + AAC source in a loop, and `status` runs as a user runs it, in its
own process; its output is checked against what the source is (codec, size, frame rate).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from rtmp2server.cli import STATUS_COLUMNS, format_table, status_rows
from support.clients import start_looping_publisher
from support.media import FPS, SourceMedia
from support.server import ServerProcess, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}


def status(*args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rtmp2server", "status", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=ENV,
    )


def _live(port: int, token: str) -> list[dict[str, object]]:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/v1/streams", headers={"Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(req, timeout=2) as r:
        return list(json.load(r)["streams"])


def test_status_names_the_stream_its_codecs_size_and_rate(
    tmp_path: Path, source: SourceMedia
) -> None:
    port = free_port()
    token = "t0ken"
    server = ServerProcess(
        tmp_path / "rec",
        tmp_path / "server.log",
        args=["--http", f"127.0.0.1:{port}", "--api-token", token, "--no-record"],
    )
    server.start()
    publisher = None
    try:
        empty = status("--http", f"127.0.0.1:{port}", "--api-token", token)
        assert empty.returncode == 0, empty.stderr
        publisher = start_looping_publisher(source.path, f"rtmp://127.0.0.1:{server.port}/live/cam")
        # Until the stream is there with a measured frame rate (a few seconds of frames).
        deadline = time.monotonic() + 30
        while True:
            streams = _live(port, token)
            if streams and streams[0]["health"]["fps"] is not None:  # type: ignore[index]
                break
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.2)
        done = status("--http", f"127.0.0.1:{port}", "--api-token", token)
        assert done.returncode == 0, done.stderr
        header, *rows = done.stdout.splitlines()
        assert header.split() == list(STATUS_COLUMNS)
        assert len(rows) == 1, done.stdout
        cells = rows[0].split()
        assert cells[:3] == ["live/cam", "avc1+mp4a", "320x240"], done.stdout
        assert float(cells[3]) == pytest.approx(FPS, rel=0.1)
        assert cells[5] == "kb/s" and int(cells[4]) > 0 and cells[6:] == ["0", "-"], done.stdout
    finally:
        if publisher is not None:
            publisher.kill()
        assert server.stop() == 0, server.log()
    assert "no live streams" in empty.stdout


def test_status_without_the_token_and_with_nothing_listening_is_one_line(tmp_path: Path) -> None:
    port = free_port()
    server = ServerProcess(
        tmp_path / "rec",
        tmp_path / "server.log",
        args=["--http", f"127.0.0.1:{port}", "--api-token", "secret", "--no-record"],
    )
    server.start()
    try:
        refused = status("--http", f"127.0.0.1:{port}")
    finally:
        assert server.stop() == 0, server.log()
    assert refused.returncode == 1
    assert refused.stderr.count("\n") == 1 and "--api-token" in refused.stderr
    down = status("--http", f"127.0.0.1:{free_port()}")
    assert down.returncode == 1 and down.stderr.startswith("rtmp2-server status: cannot reach")
    bad = status("--http", "nowhere")
    assert bad.returncode == 2 and "--http 'nowhere'" in bad.stderr


def test_watch_refreshes_until_interrupted(tmp_path: Path) -> None:
    port = free_port()
    server = ServerProcess(
        tmp_path / "rec", tmp_path / "server.log", args=["--http", f"127.0.0.1:{port}"]
    )
    server.start()
    try:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "rtmp2server",
                "status",
                "--watch",
                "--http",
                f"127.0.0.1:{port}",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=ENV,
        )
        assert proc.stdout is not None
        tables = 0
        while tables < 3:  # three refreshes: the header three times
            line = proc.stdout.readline()
            assert line, proc.stderr.read() if proc.stderr else ""
            tables += line.startswith("STREAM")
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=10)
    finally:
        assert server.stop() == 0, server.log()
    assert proc.returncode == 0, err
    assert "Traceback" not in err


def test_rows_escape_what_the_publisher_named() -> None:
    rows = status_rows(
        [
            {
                "app": "live",
                "name": "a\x1b[2Jb",
                "tracks": [],
                "bitrate_in": 0,
                "players": [],
                "warnings": [],
                "health": {"fps": None},
            }
        ]
    )
    assert "\x1b" not in format_table(rows)
    assert rows[0][:3] == (r"live/a\x1b[2Jb", "-", "-")
