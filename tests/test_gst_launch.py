"""`rtmp2serversrc` as users run it: gst-launch-1.0 loading it through GStreamer's Python plugin
loader, fed by real RTMP clients (Debian ffmpeg, ffmpeg 9, rtmp2sink, librtmp's rtmpsink).

Each run gets a fresh registry and GST_PLUGIN_PATH=gst-plugins/ (see gst_support.gst_env).
ffprobe counts the packets of what gst-launch wrote; the publish must arrive whole and
gst-launch must end by itself (EOS when the publisher leaves).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from gst_support import GstLaunch, Pipeline, free_port, gst_inspect, wait_listening
from rtmp2server.protocol import flv
from support.clients import CLIENTS, FFMPEG_DEBIAN, publish
from support.media import SourceMedia, source_media
from support.probe import av_counts

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="session")
def media(tmp_path_factory: pytest.TempPathFactory) -> SourceMedia:
    return source_media(tmp_path_factory.getbasetemp().parent / "media")


def header_flags(path: Path) -> tuple[bool, bool]:
    """(audio, video) of an FLV file's header."""
    header, _tags, _rest = flv.parse_flv(path.read_bytes())
    return header.audio, header.video


def test_gst_inspect_lists_the_element_and_its_properties() -> None:
    proc = gst_inspect("rtmp2serversrc")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "video/x-flv" in out
    assert "Source/Network" in out
    for prop in ("host", "port", "application", "stream-key", "timeout", "loop"):
        line = next((ln for ln in out.splitlines() if ln.strip().startswith(prop + " ")), "")
        assert ":" in line and len(line.split(":", 1)[1].strip()) > 20, f"{prop}: {line!r}"


def test_the_documented_command_gets_all_60_frames(tmp_path: Path) -> None:
    port = free_port()
    out = tmp_path / "out.flv"
    gst = GstLaunch("rtmp2serversrc", f"port={port}", "!", "filesink", f"location={out}")
    try:
        wait_listening(port, proc=gst.proc)
        # the README's ffmpeg line, only quieter
        ffmpeg = subprocess.run(
            [FFMPEG_DEBIAN, "-hide_banner", "-nostdin", "-loglevel", "error",
             "-re", "-f", "lavfi", "-i", "testsrc=size=320x240:rate=30", "-t", "2",
             "-c:v", "libx264", "-preset", "ultrafast", "-g", "30",
             "-f", "flv", f"rtmp://localhost:{port}/live/test"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert ffmpeg.returncode == 0, ffmpeg.stderr
        assert gst.wait(20) == 0, gst.output
    finally:
        gst.kill()
    assert "Got EOS" in gst.output
    counts = av_counts(out)
    print(f"documented command: {counts}")
    assert counts == {"video": 60, "audio": 0}
    assert header_flags(out) == (False, True), "the header says video only, as published"


@pytest.mark.parametrize("client", CLIENTS)
def test_every_frame_from_each_client(client: str, media: SourceMedia, tmp_path: Path) -> None:
    port = free_port()
    out = tmp_path / "out.flv"
    gst = GstLaunch("rtmp2serversrc", f"port={port}", "!", "filesink", f"location={out}")
    try:
        wait_listening(port, proc=gst.proc)
        result = publish(client, media.path, f"rtmp://localhost:{port}/live/test", timeout=60)
        assert result.returncode == 0, result.stdout
        assert gst.wait(20) == 0, gst.output
    finally:
        gst.kill()
    counts = av_counts(out)
    print(f"{client}: {counts} of {media.counts}")
    assert counts == media.counts, f"{client}: {gst.output}"
    assert header_flags(out) == (True, True)


def test_a_publish_nobody_wants_is_refused(media: SourceMedia) -> None:
    p = Pipeline("rtmp2serversrc name=src port=0 stream-key=wanted ! fakesink")
    p.play()
    try:
        port = p["src"].get_property("port")
        result = publish("ffmpeg-debian", media.path, f"rtmp://localhost:{port}/live/other")
    finally:
        p.stop()
    assert result.returncode != 0
