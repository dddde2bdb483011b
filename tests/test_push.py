"""Push (restream): `server/push.py` against real targets over loopback sockets.

The targets are independent servers: nginx-rtmp (Debian's libnginx-mod-rtmp) and
node-media-server 4 (npm), both recording, and our own server in-process for what needs the
messages themselves (multitrack track selection). ffprobe judges every recording against the
source ffmpeg published: packet-complete. A target restarted mid-stream gets the push again
from a keyframe; a target that stops reading, and one that never even reads the handshake,
leave the publisher, the other target and the local recording complete while the stalled
one's skipped count grows (seen in the API and the metrics). The reconnect delays, the target
forms and the queue bound are unit-tested.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import socket
import ssl
import subprocess
import threading
import time
import urllib.request
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

from rtmp2server import config
from rtmp2server.client import connect
from rtmp2server.config import ConfigError, Listener, PushTarget, ServerConfig
from rtmp2server.protocol import enhanced
from rtmp2server.protocol.messages import AUDIO, VIDEO, Message
from rtmp2server.server import RTMPServer
from rtmp2server.server.push import Backoff, Push, PushOptions, PushOutput, PushState, redact_url
from rtmp2server.server.registry import Stream, StreamRegistry
from rtmp2server.server.relay import Relay, RelayConfig
from support.clients import publish, start_looping_publisher, start_publish
from support.http import serve_http
from support.media import FFMPEG, SourceMedia
from support.nginx import NginxRTMP
from support.nms import NodeMediaServer
from support.probe import FFPROBE, av_counts, probe_errors
from support.server import free_port, running_server

# --- units: delays, target forms, redaction, the queue ---------------------------------------


def test_backoff_doubles_to_its_bound_and_resets_after_a_long_push() -> None:
    b = Backoff(1.0, 30.0)
    assert [b.next() for _ in range(8)] == [1, 2, 4, 8, 16, 30, 30, 30]
    b.pushed(29.9)  # a short push: the target is still flaky
    assert b.next() == 30
    b.pushed(30.0)
    assert [b.next() for _ in range(3)] == [1, 2, 4]
    assert Backoff(5.0, 1.0).next() == 5.0  # a bound below the start is the start


TARGETS = [
    # text, url connected to, name published (local name "cam")
    ("rtmp://h/live", "rtmp://h/live", "cam"),
    ("rtmp://h:1936/live/", "rtmp://h:1936/live", "cam"),
    ("rtmp://h/live?key=s3cret", "rtmp://h/live", "cam?key=s3cret"),
    (
        "rtmp://a.rtmp.youtube.com/live2 name=xxxx-yyyy",
        "rtmp://a.rtmp.youtube.com/live2",
        "xxxx-yyyy",
    ),
    ("rtmps://h/app/inst?t=1&u=2 name=k tracks=all", "rtmps://h/app/inst", "k?t=1&u=2"),
]


@pytest.mark.parametrize(("text", "url", "name"), TARGETS)
def test_push_target_forms(text: str, url: str, name: str) -> None:
    target = PushTarget.parse(text)
    assert target.split("cam") == (url, name)
    assert PushTarget.parse(target.text()) == target


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "http://h/live",
        "rtmp://h",
        "rtmp:///live",
        "rtmp://h/live tracks=some",
        "rtmp://h/live colour=blue",
        "rtmp://h/live name",
        {"url": "rtmp://h/live", "extra": "x"},
        {"name": "k"},
        42,
    ],
)
def test_push_target_refused(bad: Any) -> None:
    with pytest.raises(ValueError):
        PushTarget.parse(bad)


@given(
    host=st.from_regex(r"[a-z][a-z0-9.-]{0,20}", fullmatch=True),
    app=st.from_regex(r"[A-Za-z0-9_-]{1,12}(/[A-Za-z0-9_-]{1,8})?", fullmatch=True),
    query=st.from_regex(
        r"([a-z]{1,5}=[A-Za-z0-9]{0,8}(&[a-z]{1,5}=[A-Za-z0-9]{0,8})*)?", fullmatch=True
    ),
    name=st.from_regex(r"([A-Za-z0-9_-]{1,20})?", fullmatch=True),
    tracks=st.sampled_from(["default", "all"]),
)
def test_push_target_text_round_trip(
    host: str, app: str, query: str, name: str, tracks: str
) -> None:
    url = f"rtmp://{host}/{app}" + (f"?{query}" if query else "")
    target = PushTarget(url, name, tracks)
    assert PushTarget.parse(target.text()) == target
    assert PushTarget.parse({"url": url, "name": name, "tracks": tracks}) == target
    connect_url, published = target.split("local")
    assert "?" not in connect_url
    assert published == (name or "local") + (f"?{query}" if query else "")
    shown = redact_url(f"{connect_url}/{published}")
    hidden = "&".join(f"{q.partition('=')[0]}=***" for q in query.split("&")) if query else ""
    assert shown == f"{connect_url}/***" + (f"?{hidden}" if query else "")


def test_redact_url_hides_the_stream_key_and_query_values() -> None:
    assert redact_url("rtmp://a.rtmp.youtube.com/live2/abcd-efgh") == (
        "rtmp://a.rtmp.youtube.com/live2/***"
    )
    assert (
        redact_url("rtmp://h:1935/live/cam?key=s3cret&x=1")
        == "rtmp://h:1935/live/***?key=***&x=***"
    )
    assert redact_url("rtmp://h/live") == "rtmp://h/live"  # no name: nothing secret


def test_push_config_flags_file_and_print_config(tmp_path: Path) -> None:
    """`--push APP=URL` (repeatable) and `[apps.NAME] push`, read back from --print-config."""
    import argparse

    parser = argparse.ArgumentParser()
    config.add_arguments(parser)
    args = parser.parse_args(
        [
            "--push",
            "live=rtmp://h/live?key=k1",
            "--push",
            "live=rtmp://y/live2 name=KEY tracks=all",
            "--push",
            "other=rtmps://z/app",
            "--push-backoff-max",
            "5",
            "--push-max-buffer",
            "65536",
        ]
    )
    file = tmp_path / "c.toml"
    file.write_text('[apps.cams]\npush = ["rtmp://n/live", {url = "rtmp://m/x", tracks = "all"}]\n')
    resolved = config.resolve(file, config.values_from_args(args))
    cfg = resolved.config
    assert cfg.push == {
        "live": [PushTarget("rtmp://h/live?key=k1"), PushTarget("rtmp://y/live2", "KEY", "all")],
        "other": [PushTarget("rtmps://z/app")],
    }
    assert cfg.apps["cams"].push == [
        PushTarget("rtmp://n/live"),
        PushTarget("rtmp://m/x", "", "all"),
    ]
    assert (cfg.push_backoff_max, cfg.push_max_buffer) == (5.0, 65536)
    again = tmp_path / "again.toml"
    again.write_text(config.to_toml(resolved.values))
    assert config.resolve(again, {}).config.push == cfg.push
    assert config.resolve(again, {}).config.apps["cams"].push == cfg.apps["cams"].push
    for bad in (
        "live",
        "rtmp://h/live",
        "live=http://h/x?key=SECRET",
        "live=rtmp://h/x name=SECRET x",
    ):
        with pytest.raises(ConfigError) as err:
            config.Key.check(config.KEY_BY_NAME["push"], [bad])
        assert "SECRET" not in str(err.value)  # errors name a target without its key


AVC_SEQ = b"\x17\x00\x00\x00\x00" + b"\x01\x64\x00\x1f\xff"
AAC_SEQ = b"\xaf\x00\x12\x10"


def _frame(i: int, size: int) -> Message:
    head = b"\x17\x01" if i % 30 == 0 else b"\x27\x01"
    return Message(7, i * 33, VIDEO, 1, head + b"\x00\x00\x00" + os.urandom(size))


def test_queue_is_bounded_and_skips_to_the_next_keyframe_while_the_target_is_away() -> None:
    """Until the target accepts the publish, what the relay gives a push is queued; past
    `max_buffer` (plus the GOP it joined with) it drops to the next keyframe, counting, and
    the queue stays bounded; connected, a push that fell behind joins afresh."""

    async def main() -> None:
        registry = StreamRegistry()
        relay = Relay(registry, RelayConfig())
        stream = Stream("live", "cam")
        registry.claim(stream)
        registry.started(stream)
        stream.deliver_all([Message(7, 0, VIDEO, 1, AVC_SEQ), Message(6, 0, AUDIO, 1, AAC_SEQ)])
        bound = 20_000
        push = Push(relay, "live", "cam", "rtmp://127.0.0.1:9/live", PushOptions(max_buffer=bound))
        player = push._player = push._attach(PushOutput(push, 1))
        assert player is not None
        out = player.out
        peak = 0
        for i in range(300):
            stream.deliver(_frame(i, 1500))
            await asyncio.sleep(0)
            peak = max(peak, out.buffered())
        assert player.skips == 1  # fell behind once, never caught up (nothing drained)
        assert player.dropped > 200
        # The bound, plus what one loop turn adds (one frame here) before the check.
        assert peak <= bound + 1600
        assert not out.closed
        push._detach(send=False)
        assert out.closed and player.channel is None
        assert push.skipped == 0  # not connected: nothing was skipped *at the target*

    asyncio.run(main())


# --- the real targets ------------------------------------------------------------------------


def _first_video_flags(path: Path) -> str:
    out = subprocess.run(
        [
            *(FFPROBE, "-v", "error", "-select_streams", "v:0", "-show_entries", "packet=flags"),
            *("-read_intervals", "%+#1", "-of", "csv=p=0", str(path)),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return out.stdout.strip().splitlines()[0]


def _wait(pred: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.05)


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[NginxRTMP]:
    with NginxRTMP(tmp_path / "nginx", record=True) as server:
        yield server


def _push_server(tmp_path: Path, *args: str) -> Any:
    return running_server(tmp_path / "rec", tmp_path / "server.log", args=list(args))


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_push_into_nginx_rtmp_and_node_media_server(
    tmp_path: Path, source: SourceMedia, nginx: NginxRTMP
) -> None:
    """One publish pushed to two independent servers: both recordings, and ours, have every
    packet ffmpeg sent."""
    with NodeMediaServer(tmp_path / "nms") as nms:
        with _push_server(
            tmp_path,
            "--push",
            f"live=rtmp://127.0.0.1:{nginx.port}/live",
            "--push",
            f"live=rtmp://127.0.0.1:{nms.port}/live",
        ) as srv:
            result = publish("ffmpeg-debian", source.path, srv.url("cam"))
            assert result.returncode == 0, result.stdout
            srv.wait_for_log(r"push live/cam -> .*: stopped", count=2)
            pushing = srv.log_lines("push live/cam", ": pushing (connection 1)")
            assert len(pushing) == 2, srv.log()
            assert f"rtmp://127.0.0.1:{nginx.port}/live/***" in srv.log()
            local = srv.recording("cam")
        expected = {"video": source.video, "audio": source.audio}
        assert av_counts(local) == expected
        _wait(lambda: nms.recordings("cam"), 10, "no node-media-server recording")
        time.sleep(0.5)  # node closes its file after the publish's end
    nginx.stop()
    (ngx,) = nginx.recordings("cam")
    (node,) = nms.recordings("cam")
    for path in (ngx, node):
        assert av_counts(path) == expected, path
        assert _first_video_flags(path).startswith("K"), path


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_target_restarted_mid_stream_gets_the_push_again_from_a_keyframe(
    tmp_path: Path, source: SourceMedia, nginx: NginxRTMP
) -> None:
    with _push_server(
        tmp_path,
        "--push",
        f"live=rtmp://127.0.0.1:{nginx.port}/live",
        "--push-backoff-min",
        "0.2",
        "--push-backoff-max",
        "1",
    ) as srv:
        publisher = start_looping_publisher(source.path, srv.url("cam"))
        try:
            srv.wait_for_log(r"push live/cam -> .*: pushing \(connection 1\)")
            _wait(lambda: nginx.recordings("cam"), 10, "no nginx recording")
            time.sleep(1.5)
            nginx.stop()
            srv.wait_for_log(r"push live/cam -> .*: backing off \(.*reconnect #1")
            time.sleep(1.1)  # nginx names its files by the second
            nginx.start()
            srv.wait_for_log(r"push live/cam -> .*: pushing \(connection 2\)", timeout=20)
            time.sleep(2.5)
            assert publisher.running(), publisher.output
        finally:
            publisher.kill()
        srv.wait_for_log(r"push live/cam -> .*: stopped")
        local = srv.recording("cam")
    nginx.stop()
    first, second = nginx.recordings("cam")
    assert _first_video_flags(second).startswith("K"), "the push resumed mid-GOP"
    assert probe_errors(second) == ""
    assert av_counts(second)["video"] >= 30  # about 2.5 s at 30 fps
    assert av_counts(local)["video"] > av_counts(first)["video"]


class StallingProxy:
    """A target that stops reading: forwards to a real server until `after` bytes went up,
    then reads nothing more from the push (both connections stay open)."""

    def __init__(self, target_port: int, after: int) -> None:
        self.target_port = target_port
        self.after = after
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        self.stalled = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            up = socket.create_connection(("127.0.0.1", self.target_port))
            self.conns += [client, up]
            threading.Thread(target=self._pump, args=(up, client, None), daemon=True).start()
            threading.Thread(target=self._pump, args=(client, up, self.after), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, limit: int | None) -> None:
        sent = 0
        while limit is None or sent < limit:
            try:
                data = src.recv(min(65536, limit - sent) if limit is not None else 65536)
                if not data:
                    return
                dst.sendall(data)
            except OSError:
                return
            sent += len(data)
        self.stalled.set()

    def close(self) -> None:
        self.sock.close()
        for c in self.conns:
            c.close()


class SilentListener:
    """Accepts and never reads (not even the handshake)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                self.conns.append(self.sock.accept()[0])
            except OSError:
                return

    def close(self) -> None:
        self.sock.close()
        for c in self.conns:
            c.close()


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as r:
        return str(r.read().decode())


def _high_bitrate_source(tmp_path: Path) -> tuple[Path, dict[str, int]]:
    """8 s of 6 Mbit/s CBR H.264 (filler NAL units) and AAC, and its packet counts: enough
    bytes to fill the loopback socket buffers (which autotune to megabytes) of a stalled
    target, made in under a second."""
    out = tmp_path / "source-6mbps-8s.flv"
    subprocess.run(
        [
            *(FFMPEG, "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30"),
            *("-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100", "-t", "8"),
            *("-c:v", "libx264", "-preset", "ultrafast", "-g", "30", "-pix_fmt", "yuv420p"),
            *("-b:v", "6M", "-minrate", "6M", "-maxrate", "6M", "-bufsize", "2M"),
            *("-x264-params", "nal-hrd=cbr", "-c:a", "aac", "-b:a", "64k", "-f", "flv", str(out)),
        ],
        check=True,
        timeout=120,
    )
    return out, av_counts(out)


@pytest.mark.e2e
@pytest.mark.timeout(180)
def test_target_that_stops_reading_disturbs_nobody_and_counts_its_skips(
    tmp_path: Path, source: SourceMedia, nginx: NginxRTMP
) -> None:
    """Three targets of one publish: nginx (reads), a proxy to nginx that stops reading after
    the publish started, and a listener that never reads at all. The publisher, the local
    recording and nginx's recording are packet-complete; the stalled target's skipped count
    grows (API and metrics); the silent one backs off and reconnects; the push series are
    gone from the metrics once the stream ends."""
    src, expected = _high_bitrate_source(tmp_path)
    stall = StallingProxy(nginx.port, after=16 * 1024)
    silent = SilentListener()
    http = free_port()
    try:
        with _push_server(
            tmp_path,
            "--http",
            f"127.0.0.1:{http}",
            "--push",
            f"live=rtmp://127.0.0.1:{nginx.port}/live",
            "--push",
            f"live=rtmp://127.0.0.1:{stall.port}/live name=stalled",
            "--push",
            f"live=rtmp://127.0.0.1:{silent.port}/live?key=s3cret",
            "--push-max-buffer",
            str(256 * 1024),
            "--push-timeout",
            "1",
            "--push-backoff-min",
            "0.5",
            "--push-backoff-max",
            "1",
        ) as srv:
            publisher = start_publish("ffmpeg-debian", src, srv.url("cam"))
            api = f"http://127.0.0.1:{http}/api/v1/streams/live/cam"

            def stalled_skips() -> dict[str, Any] | None:
                try:
                    body = json.loads(_get(api))
                except OSError:
                    return None
                by_url = {p["url"]: p for p in body["push"]}
                p = by_url.get(f"rtmp://127.0.0.1:{stall.port}/live/***")
                return by_url if p is not None and p["skipped_frames"] > 0 else None

            pushes = _wait(stalled_skips, 30, "the stalled target's skipped count never grew")
            stalled = pushes[f"rtmp://127.0.0.1:{stall.port}/live/***"]
            assert stalled["state"] == "pushing" and stalled["skips"] >= 1
            good = pushes[f"rtmp://127.0.0.1:{nginx.port}/live/***"]
            assert good["state"] == "pushing" and good["skipped_frames"] == 0
            metrics = _get(f"http://127.0.0.1:{http}/metrics")
            assert re.search(
                rf'rtmp2_push_skipped_frames_total\{{app="live",stream="cam",target="1",'
                rf'url="rtmp://127.0.0.1:{stall.port}/live/\*\*\*"\}} [1-9]',
                metrics,
            ), metrics
            assert 'state="pushing"' in metrics
            result = publisher.wait(60)
            assert result.returncode == 0, result.stdout
            srv.wait_for_log(r"push live/cam -> .*: stopped", count=3, timeout=30)
            line = srv.log_lines(f"{stall.port}/live/***: stopped")[0]
            assert int(re.search(r"skipped=(\d+)", line).group(1)) > 0, line  # type: ignore[union-attr]
            silent_lines = srv.log_lines(f"{silent.port}/live/***?key=***: backing off")
            assert silent_lines, srv.log()
            assert "s3cret" not in srv.log()
            after = _get(f"http://127.0.0.1:{http}/metrics")
            assert not re.search(r"^rtmp2_push_", after, re.M), after  # no series left
            local = srv.recording("cam")
    finally:
        stall.close()
        silent.close()
    assert av_counts(local) == expected
    nginx.stop()
    (ngx,) = nginx.recordings("cam")
    assert av_counts(ngx) == expected


# --- in-process: track selection and the callback's targets --------------------------------


def _multitrack(n: int) -> list[tuple[int, int, bytes]]:
    """HEVC on track 0 (plain E-RTMP) and AV1 on track 1 (multitrack OneTrack), as ffmpeg."""
    out = [(VIDEO, 0, b"\x90hvc1" + b"hvcC-config"), (VIDEO, 0, b"\x96\x00av01\x01" + b"av1C")]
    for i in range(n):
        ft = 0x10 if i % 30 == 0 else 0x20
        out.append((VIDEO, i * 33, bytes((0x80 | ft | 1,)) + b"hvc1\x00\x00\x00" + os.urandom(300)))
        out.append((VIDEO, i * 33, bytes((0x80 | ft | 6, 0x01)) + b"av01\x01" + os.urandom(200)))
    return out


class Collect:
    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.ended = asyncio.Event()

    def on_message(self, stream: Stream, msg: Message) -> None:
        self.messages.append(msg)

    def on_end(self, stream: Stream) -> None:
        self.ended.set()


def _run(coro: Awaitable[Any], timeout: float = 60) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout))  # type: ignore[arg-type]


def test_multitrack_default_track_to_one_target_all_tracks_to_another() -> None:
    """`[apps.live] push` sends the default track (rewritten as ordinary E-RTMP); the
    on_publish callback's JSON answer adds a target with tracks=all, which gets every track
    as published. Both start at the keyframe, after the sequence headers."""
    media = _multitrack(60)

    async def main() -> None:
        target = RTMPServer(ServerConfig(host="127.0.0.1", port=0, record_dir=None))
        got: dict[str, Collect] = {}

        def observe(stream: Stream) -> None:
            got[stream.name] = sink = Collect()
            stream.add_sink(sink)

        target.registry.on_start.append(observe)
        async with target:
            answered: list[Any] = []

            async def hook(request: web.Request) -> web.Response:
                answered.append(await request.json())
                url = f"rtmp://127.0.0.1:{target.port}/live name=all tracks=all"
                return web.json_response({"push": [url, "not a url"]})

            runner, hook_url = await serve_http(hook)
            cfg = ServerConfig(
                host="127.0.0.1",
                port=0,
                record_dir=None,
                on_publish=hook_url,
                apps={
                    "live": config.AppConfig(
                        publish="callback",
                        push=[PushTarget(f"rtmp://127.0.0.1:{target.port}/live", "default")],
                    )
                },
            )
            try:
                async with RTMPServer(cfg) as origin:
                    async with connect(f"rtmp://127.0.0.1:{origin.port}/live") as pub:
                        await pub.publish("mt")
                        for t, ts, payload in media:
                            await pub.send_media(t, ts, payload)
                        for name in ("default", "all"):
                            for _ in range(200):
                                if name in got and len(got[name].messages) >= len(media) // 2:
                                    break
                                await asyncio.sleep(0.05)
                        pushes = origin.pushes.of("live", "mt")
                        assert {p.state for p in pushes} == {PushState.PUSHING}
                        await asyncio.sleep(0.3)
                    for name in ("default", "all"):
                        await asyncio.wait_for(got[name].ended.wait(), 10)
            finally:
                await runner.cleanup()
        assert answered and answered[0]["stream"] == "mt"
        every = [m.payload for m in got["all"].messages if m.type_id == VIDEO]
        assert every == [p for _, _, p in media]
        legacy = [m.payload for m in got["default"].messages if m.type_id == VIDEO]
        assert all(enhanced.classify_video(p).multitrack is None for p in legacy)
        assert {enhanced.classify_video(p).codec for p in legacy} == {"hvc1"}
        assert legacy == [p for _, _, p in media if p[:1] in b"\x90\x91\xa1"]

    _run(main())


def test_push_is_usable_programmatically_and_stops_with_the_publish() -> None:
    """`Push(relay, app, name, url)` on an in-process server's relay, into another one."""

    async def main() -> None:
        target = RTMPServer(ServerConfig(host="127.0.0.1", port=0, record_dir=None))
        sink = Collect()
        names: list[str] = []

        def observe(stream: Stream) -> None:
            names.append(stream.name)
            stream.add_sink(sink)

        target.registry.on_start.append(observe)
        async with (
            target,
            RTMPServer(ServerConfig(host="127.0.0.1", port=0, record_dir=None)) as origin,
        ):
            async with connect(f"rtmp://127.0.0.1:{origin.port}/live") as pub:
                await pub.publish("cam")
                await pub.send_media(VIDEO, 0, AVC_SEQ)
                assert origin.relay is not None
                changes: list[PushState] = []
                push = Push(
                    origin.relay,
                    "live",
                    "cam",
                    f"rtmp://127.0.0.1:{target.port}/live?k=v",
                    on_change=lambda p: changes.append(p.state),
                )
                push.start()
                for i in range(31):
                    await pub.send_media(VIDEO, i * 33, _frame(i, 100).payload)
                for _ in range(200):
                    if len(sink.messages) >= 32:
                        break
                    await asyncio.sleep(0.02)
                assert push.state is PushState.PUSHING
                status = push.status()
                assert status["url"] == f"rtmp://127.0.0.1:{target.port}/live/***?k=***"
                assert status["bytes"] > 0 and status["reconnects"] == 0
                await push.stop("done")
            await asyncio.wait_for(sink.ended.wait(), 10)
        assert changes == [PushState.CONNECTING, PushState.PUSHING, PushState.STOPPED]
        # The sequence header first, then the keyframe the push joined at.
        assert sink.messages[0].payload == AVC_SEQ
        assert sink.messages[1].payload[:2] == b"\x17\x01"
        assert names == ["cam"]  # the query string went after the name, not into it

    _run(main())


def test_refused_push_backs_off_doubling_hides_the_key_and_recovers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A target that refuses the publish (its name is taken there, and it says so naming
    it): the push backs off 0.05, 0.1, 0.2 s ..., its log lines never show the key, and once
    the name is free it pushes."""
    caplog.set_level(logging.INFO, logger="rtmp2server.server.push")

    async def main() -> None:
        target = RTMPServer(
            ServerConfig(host="127.0.0.1", port=0, record_dir=None, republish="refuse")
        )
        cfg = ServerConfig(
            host="127.0.0.1",
            port=0,
            record_dir=None,
            push_backoff_min=0.05,
            push_backoff_max=0.4,
        )
        async with target:
            cfg.push = {"live": [PushTarget(f"rtmp://127.0.0.1:{target.port}/live", "KEY1")]}
            async with RTMPServer(cfg) as origin:
                holder = connect(f"rtmp://127.0.0.1:{target.port}/live")
                await holder.open()
                await holder.publish("KEY1")
                async with connect(f"rtmp://127.0.0.1:{origin.port}/live") as pub:
                    await pub.publish("cam")
                    await pub.send_media(VIDEO, 0, AVC_SEQ)
                    (push,) = origin.pushes.of("live", "cam")
                    for _ in range(400):
                        if push.reconnects >= 4:
                            break
                        await asyncio.sleep(0.01)
                    assert push.state in (PushState.BACKOFF, PushState.CONNECTING)
                    assert "NetStream.Publish.BadName" in push.error
                    await holder.close()  # the name is free at the target now
                    for i in range(200):
                        await pub.send_media(VIDEO, i * 33, _frame(i, 100).payload)
                        if push.state is PushState.PUSHING and target.registry.get("live", "KEY1"):
                            break
                        await asyncio.sleep(0.02)
                    assert push.state is PushState.PUSHING
                    assert push.status()["error"] is None

    _run(main())
    lines = [r.getMessage() for r in caplog.records if r.name == "rtmp2server.server.push"]
    delays = [float(m) for m in re.findall(r"reconnect #\d+ in ([\d.]+) s", "\n".join(lines))]
    assert delays[:4] == [0.05, 0.1, 0.2, 0.4], lines
    assert any("BadName" in line for line in lines), lines
    assert not any("KEY1" in line for line in lines), lines
    assert any(": pushing (connection 1)" in line for line in lines), lines


def test_push_over_rtmps_checks_the_target_certificate(tmp_path: Path) -> None:
    """rtmps:// targets: with the target's CA trusted the push goes through TLS; with the
    system's trust store only, it backs off naming the failed connection."""
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1", "localhost")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_bytes(b"".join(pem.bytes() for pem in issued.cert_chain_pems))
    issued.private_key_pem.write_to_path(str(key))
    context = ssl.create_default_context()
    ca.configure_trust(context)

    async def main() -> None:
        target = RTMPServer(
            ServerConfig(
                host="127.0.0.1",
                port=0,
                listen=[Listener("rtmps", "127.0.0.1", 0)],
                tls_cert=cert,
                tls_key=key,
                record_dir=None,
            )
        )
        sink = Collect()
        target.registry.on_start.append(lambda stream: stream.add_sink(sink))
        origin = RTMPServer(ServerConfig(host="127.0.0.1", port=0, record_dir=None))
        async with target, origin:
            (tls,) = [lst for lst in target.listeners if lst.tls]
            url = f"rtmps://127.0.0.1:{tls.port}/live"
            async with connect(f"rtmp://127.0.0.1:{origin.port}/live") as pub:
                await pub.publish("cam")
                await pub.send_media(VIDEO, 0, AVC_SEQ)
                assert origin.relay is not None
                trusted = Push(origin.relay, "live", "cam", url, PushOptions(ssl=context))
                untrusted = Push(origin.relay, "live", "cam", url + " name=other")
                trusted.start()
                untrusted.start()
                for i in range(100):
                    await pub.send_media(VIDEO, i * 33, _frame(i, 100).payload)
                    if len(sink.messages) > 20 and untrusted.reconnects:
                        break
                    await asyncio.sleep(0.02)
                assert trusted.state is PushState.PUSHING
                assert untrusted.state is not PushState.PUSHING
                assert "cannot connect" in untrusted.error
                assert untrusted.connections == 0
                await asyncio.gather(trusted.stop(), untrusted.stop())
        assert sink.messages[0].payload == AVC_SEQ

    _run(main())
