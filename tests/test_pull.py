"""Pull and edge (`server/pull.py`): streams of one server fed by another, over real sockets.

In process: two `RTMPServer`s on loopback ports, an origin and an edge (`pull` on demand or
`pull_static`), the asyncio client publishing to the origin and playing from the edge; every
played frame is compared with what was published. Then the real processes: `rtmp2-server` as
the edge of an nginx-rtmp origin and of another `rtmp2-server` (the README's "Origin and edge"
example, `examples/edge.toml`), ffmpeg publishing and rtmpdump / ffmpeg playing, their files
compared bit-exact from the first keyframe with the origin's recording or the source.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import re
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession

import test_e2e_play as e2e
from rtmp2server.client import Client, StatusError, connect
from rtmp2server.config import AppConfig, ConfigError, parse_tree, resolve
from rtmp2server.protocol import flv
from rtmp2server.protocol.messages import AUDIO, VIDEO, Message
from rtmp2server.server import RTMPServer, ServerConfig, Stream
from rtmp2server.server.pull import redact_url, split_stream_url
from support.clients import Publisher
from support.nginx import NginxRTMP
from support.server import ServerProcess, free_port, running_server
from test_http import check
from test_server import frames, recording, run, wait_for

Media = list[tuple[int, int, bytes]]


def origin_config(tmp: Path, **kw: Any) -> ServerConfig:
    return ServerConfig(host="127.0.0.1", port=0, record_dir=tmp / "origin", **kw)


def edge_config(tmp: Path, origin_port: int, **kw: Any) -> ServerConfig:
    kw.setdefault("pull", [f"live=rtmp://127.0.0.1:{origin_port}/live"])
    kw.setdefault("pull_idle", 0.5)
    return ServerConfig(host="127.0.0.1", port=0, record_dir=tmp / "edge", **kw)


def av(messages: list[Message]) -> list[Message]:
    return [m for m in messages if m.type_id in (AUDIO, VIDEO)]


def assert_same_frames(got: list[Message], media: Media) -> None:
    for kind in (VIDEO, AUDIO):
        played = [m.payload for m in got if m.type_id == kind]
        sent = [p for t, _ts, p in media if t == kind]
        assert played == sent, f"type {kind}: {len(played)} frames played, {len(sent)} sent"


class EdgePlayer:
    """A client playing `name` from a server in a task, keeping what it gets."""

    def __init__(self, port: int, name: str, until: int) -> None:
        self.messages: list[Message] = []
        self.error: BaseException | None = None
        self.client: Client | None = None
        self.task = asyncio.ensure_future(self._run(port, name, until))

    async def _run(self, port: int, name: str, until: int) -> None:
        try:
            async with connect(f"rtmp://127.0.0.1:{port}/live") as client:
                self.client = client
                async for msg in client.play(name):
                    self.messages.append(msg)
                    if len(av(self.messages)) >= until:
                        return
        except Exception as err:
            self.error = err

    async def done(self, timeout: float = 10.0) -> list[Message]:
        await asyncio.wait_for(self.task, timeout)
        if self.error is not None:
            raise self.error
        return self.messages


async def publish(port: int, name: str, media: Media, pace: float = 0.0) -> None:
    async with connect(f"rtmp://127.0.0.1:{port}/live") as c:
        await c.publish(name)
        await c.send_metadata({"videocodecid": 7.0, "audiocodecid": 10.0})
        for t, ts, payload in media:
            await c.send_media(t, ts, payload)
            if pace:
                await asyncio.sleep(pace)


def origin_players(origin: RTMPServer) -> int:
    assert origin.relay is not None
    return len(origin.relay.players())


# --- on demand, in process ------------------------------------------------------------------


def subscribe_through_an_edge(
    tmp_path: Path, name: str, media: Media, *, multitrack: bool
) -> list[Message]:
    """An edge's `server.subscribe(live, name)` pulls on demand from an origin that `media`
    is then published to; what the subscription got, once the origin has no player left."""
    got: list[Message] = []

    async def consume(edge: RTMPServer) -> None:
        async for msg in edge.subscribe("live", name, multitrack=multitrack):
            got.append(msg)
            if len(av(got)) == len(media):
                return

    async def main() -> None:
        origin = RTMPServer(origin_config(tmp_path))
        async with origin, RTMPServer(edge_config(tmp_path, origin.port)) as edge:
            task = asyncio.ensure_future(consume(edge))
            await wait_for(lambda: origin_players(origin) == 1)
            await publish(origin.port, name, media)
            await asyncio.wait_for(task, 10)
            await wait_for(lambda: origin_players(origin) == 0)

    run(main())
    return got


def test_two_edge_players_cost_the_origin_one_play_every_frame_and_the_pull_stops(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    media = frames(90)

    async def main() -> None:
        async with (
            RTMPServer(origin_config(tmp_path)) as origin,
            RTMPServer(edge_config(tmp_path, origin.port)) as edge,
        ):
            a = EdgePlayer(edge.port, "cam", len(media))
            await wait_for(lambda: origin_players(origin) == 1)
            b = EdgePlayer(edge.port, "cam", len(media))
            assert edge.relay is not None
            await wait_for(lambda: len(edge.relay.players()) == 2)
            publisher = asyncio.ensure_future(publish(origin.port, "cam", media, 0.002))
            await wait_for(lambda: edge.registry.get("live", "cam") is not None)
            stream = edge.registry.get("live", "cam")
            assert stream is not None
            assert stream.source == f"rtmp://127.0.0.1:{origin.port}/live/cam"
            # Two players here, one play at the origin all along.
            assert origin_players(origin) == 1
            for player in (a, b):
                assert_same_frames(await player.done(), media)
            await publisher
            # The last player left: the origin's play ends within pull_idle (0.5 s).
            await wait_for(lambda: origin_players(origin) == 0)
            await wait_for(lambda: len(edge.pulls) == 0)

    run(main())
    plays = [r for r in caplog.records if r.getMessage().startswith("play start")]
    assert len(plays) == 3  # the two edge players, and the pull's one play at the origin
    (stop,) = [r for r in caplog.records if r.getMessage().startswith("pull stop")]
    assert "1 connection(s), 1 publish(es)" in stop.getMessage()
    assert "no players for 0.5 s" in stop.getMessage()
    # Recorded at the edge as a publish to `live` would be (the default: record), bit-exact.
    tags = recording(tmp_path / "edge", "live", "cam")
    assert [(t.tag_type, t.body) for t in tags if t.tag_type != 18] == [
        (t, p) for t, _ts, p in media
    ]


def test_a_player_after_the_start_joins_from_the_gop_cache(tmp_path: Path) -> None:
    media = frames(45)

    async def main() -> None:
        async with (
            RTMPServer(origin_config(tmp_path)) as origin,
            RTMPServer(edge_config(tmp_path, origin.port)) as edge,
        ):
            first = EdgePlayer(edge.port, "cam", len(media))
            await wait_for(lambda: origin_players(origin) == 1)
            await publish(origin.port, "cam", media)
            assert_same_frames(await first.done(), media)
            # The origin's publisher left: its grace (10 s) hides it; the edge goes on.
            late = EdgePlayer(edge.port, "cam", 3)
            got = av(await late.done())
            # The sequence headers, then the cached GOP from its keyframe (frame 30).
            assert [m.payload for m in got[:2]] == [media[0][2], media[1][2]]
            assert got[2].type_id == VIDEO and got[2].payload == media[2 + 2 * 30][2]
            first.task.cancel()

    run(main())


def test_origin_without_the_stream_players_get_stream_not_found(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)

    async def main() -> None:
        origin_cfg = origin_config(tmp_path)
        assert origin_cfg.relay is not None
        origin_cfg.relay.play_wait = 0.3
        async with RTMPServer(origin_cfg) as origin:
            cfg = edge_config(tmp_path, origin.port)
            assert cfg.relay is not None
            cfg.relay.play_wait = 2.0
            async with RTMPServer(cfg) as edge:
                player = EdgePlayer(edge.port, "none", 1)
                with pytest.raises(StatusError) as err:
                    await player.done()
                assert err.value.code == "NetStream.Play.StreamNotFound"
                await wait_for(lambda: len(edge.pulls) == 0)
                await wait_for(lambda: origin_players(origin) == 0)
                assert len(edge.registry) == 0

    run(main())
    warnings = [r.getMessage() for r in caplog.records if r.name.endswith("pull")]
    failures = [m for m in warnings if "retrying" in m]
    # Several attempts (the origin answers StreamNotFound after 0.3 s), one line.
    assert len(failures) == 1, warnings
    assert "NetStream.Play.StreamNotFound" in failures[0]
    (stop,) = [m for m in warnings if m.startswith("pull stop")]
    assert "0 publish(es)" in stop and " 1 connection(s)" not in stop


def test_origin_down_players_get_stream_not_found_and_one_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)

    async def main() -> None:
        cfg = edge_config(tmp_path, free_port())  # nothing listens there
        assert cfg.relay is not None
        cfg.relay.play_wait = 2.0
        async with RTMPServer(cfg) as edge:
            with pytest.raises(StatusError) as err:
                await EdgePlayer(edge.port, "cam", 1).done()
            assert err.value.code == "NetStream.Play.StreamNotFound"
            await wait_for(lambda: len(edge.pulls) == 0)

    run(main())
    lines = [r.getMessage() for r in caplog.records if "retrying" in r.getMessage()]
    assert len(lines) == 1 and "cannot connect" in lines[0], lines


def test_origin_ends_players_go_through_the_grace_and_the_next_publish(tmp_path: Path) -> None:
    media = frames(60)

    async def main() -> None:
        origin_cfg = origin_config(tmp_path)
        assert origin_cfg.relay is not None
        origin_cfg.relay.republish_grace = 0  # the origin tells its players at once
        async with (
            RTMPServer(origin_cfg) as origin,
            RTMPServer(edge_config(tmp_path, origin.port)) as edge,
        ):
            assert edge.relay is not None
            player = EdgePlayer(edge.port, "cam", 2 * len(media))
            await wait_for(lambda: origin_players(origin) == 1)
            await publish(origin.port, "cam", media)
            # UnpublishNotify from the origin: the pulled stream ends here, into the
            # edge's grace; the player is told nothing.
            await wait_for(lambda: edge.registry.get("live", "cam") is None)
            channel = edge.relay.channel("live", "cam")
            assert channel is not None and channel.gap
            await publish(origin.port, "cam", media)
            got = await player.done()
            assert_same_frames(got, media + media)
            ts = [m.timestamp for m in got if m.type_id == VIDEO]
            assert ts == sorted(ts)

    run(main())


def test_http_flv_player_waits_for_the_pull_and_the_api_marks_the_stream(tmp_path: Path) -> None:
    """An HTTP-FLV play (the relay's `add_player`) starts a pull on demand as an RTMP play
    does, waits for it, and gets every frame; the API shows the stream as pulled."""
    media = frames(60)

    async def main() -> bytes:
        origin_cfg = origin_config(tmp_path)
        assert origin_cfg.relay is not None
        origin_cfg.relay.republish_grace = 0
        cfg = edge_config(tmp_path, 0, http="127.0.0.1:0")
        assert cfg.relay is not None
        cfg.relay.republish_grace = 0  # the response ends when the origin's publish does
        async with RTMPServer(origin_cfg) as origin:
            cfg.pull = [f"live=rtmp://127.0.0.1:{origin.port}/live?token=s3cret"]
            async with RTMPServer(cfg) as edge, ClientSession() as http:
                assert edge.http is not None
                base = edge.http.url
                # The response starts once the pulled stream does (a waiting HTTP-FLV player).
                request = asyncio.ensure_future(http.get(f"{base}/live/cam.flv"))
                await wait_for(lambda: origin_players(origin) == 1)
                publisher = asyncio.ensure_future(publish(origin.port, "cam", media, 0.01))
                async with await request as response:
                    assert response.status == 200
                    body = asyncio.ensure_future(response.read())
                    async with http.get(f"{base}/api/v1/streams/live/cam") as r:
                        doc = await r.json()
                    check(doc, "/api/v1/streams/{app}/{name}")
                    shown = f"rtmp://127.0.0.1:{origin.port}/live?token=***/cam"
                    assert doc["publisher"]["pulled_from"] == shown
                    assert doc["publisher"]["peer"] == shown
                    await publisher
                    return await asyncio.wait_for(body, 10)

    data = run(main())
    _, tags, _ = flv.parse_flv(data)
    for kind in (VIDEO, AUDIO):
        got = [t.body for t in tags if t.tag_type == kind]
        assert got == [p for t, _ts, p in media if t == kind]


def test_an_in_process_subscription_pulls_on_demand(tmp_path: Path) -> None:
    """`server.subscribe` (an `add_player(wait=True)` player) pulls on demand as a play does."""
    media = frames(40)
    got = subscribe_through_an_edge(tmp_path, "cam", media, multitrack=False)
    assert_same_frames(got, media)


# --- a local publish of a pulled name -------------------------------------------------------


@pytest.mark.parametrize("republish", ["takeover", "refuse"])
def test_a_local_publish_of_a_pulled_name(tmp_path: Path, republish: str) -> None:
    media = frames(30)

    async def main() -> None:
        async with RTMPServer(origin_config(tmp_path)) as origin:
            cfg = edge_config(tmp_path, origin.port, republish=republish)
            async with RTMPServer(cfg) as edge:
                player = EdgePlayer(edge.port, "cam", 10_000)
                await wait_for(lambda: origin_players(origin) == 1)
                origin_pub = asyncio.ensure_future(publish(origin.port, "cam", media, 0.05))
                await wait_for(lambda: edge.registry.get("live", "cam") is not None)
                pulled = edge.registry.get("live", "cam")
                assert pulled is not None and pulled.source
                if republish == "takeover":
                    local = [*media[:2], (9, 0, b"\x17\x01local"), (8, 0, b"\xaf\x01local")]
                    await publish(edge.port, "cam", local)
                    # The local publisher took the name; the pull ended and left the origin.
                    await wait_for(lambda: len(edge.pulls) == 0)
                    await wait_for(lambda: origin_players(origin) == 0)
                    await wait_for(
                        lambda: any(m.payload == b"\x17\x01local" for m in player.messages)
                    )
                else:
                    with pytest.raises(StatusError) as err:
                        await publish(edge.port, "cam", media[:4])
                    assert err.value.code == "NetStream.Publish.BadName"
                    assert edge.registry.get("live", "cam") is pulled
                    assert origin_players(origin) == 1
                origin_pub.cancel()
                player.task.cancel()

    run(main())


# --- static pulls, recording policy ---------------------------------------------------------


def test_a_static_pull_reconnects_and_is_not_recorded_when_its_app_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    media = frames(30)

    async def main() -> None:
        origin_cfg = origin_config(tmp_path)
        assert origin_cfg.relay is not None
        origin_cfg.relay.republish_grace = 0
        async with RTMPServer(origin_cfg) as origin:
            url = f"rtmp://127.0.0.1:{origin.port}/live/cam"
            apps = {"mirror": AppConfig(record=False, pull_static=[url])}
            cfg = ServerConfig(
                host="127.0.0.1",
                port=0,
                record_dir=tmp_path / "edge",
                apps=apps,
                pull_retry_max=0.5,
            )
            edge = RTMPServer(cfg)
            streams: list[Stream] = []
            edge.registry.on_start.append(streams.append)
            async with edge:
                # Pulled before anyone plays, and again after the origin's publisher left.
                for n in (1, 2):
                    await wait_for(lambda: origin_players(origin) == 1)
                    await publish(origin.port, "cam", media)
                    await wait_for(functools.partial(lambda k: len(streams) == k, n))
                    # The origin tells its players at once (grace 0): the pulled stream ends.
                    await wait_for(lambda: edge.registry.get("mirror", "cam") is None)
                    assert streams[-1].video_frames == 31 and streams[-1].source == url
                assert len(edge.pulls) == 1

    run(main())
    assert not (tmp_path / "edge" / "mirror").exists()
    starts = [r for r in caplog.records if r.getMessage().startswith("pull start")]
    assert len(starts) == 2


# --- configuration and URLs -----------------------------------------------------------------


def test_pull_configuration_keys() -> None:
    values = parse_tree(
        {
            "pull": {"pull": ["live=rtmp://origin/live"], "pull_idle": 2},
            "apps": {"tv": {"pull": "rtmps://origin:4443/tv", "pull_static": ["rtmp://o/live/x"]}},
        }
    )
    assert values["pull"] == ["live=rtmp://origin/live"]
    assert values["pull_idle"] == 2.0
    assert values["apps"]["tv"].pull_static == ["rtmp://o/live/x"]
    for bad, words in [
        ({"pull": {"pull": ["rtmp://origin/live"]}}, "not APP=URL"),
        ({"pull": {"pull": ["live=http://origin/live"]}}, "not rtmp://"),
        ({"pull": {"pull": ["live=rtmp://origin"]}}, "no application"),
        ({"apps": {"tv": {"pull": "rtmp://:99/tv"}}}, "no host"),
        ({"apps": {"tv": {"pull_static": ["rtmp://o/live"]}}}, "no stream name"),
        ({"pull": {"pull_idle": -1}}, "out of range"),
    ]:
        with pytest.raises(ConfigError) as err:
            parse_tree(bad)
        assert words in str(err.value), str(err.value)


def test_pull_flag_is_repeatable(tmp_path: Path) -> None:
    from rtmp2server.cli import build_parser

    args = build_parser().parse_args(
        ["--pull", "live=rtmp://a/live", "--pull", "tv=rtmp://b/tv", "--pull-idle", "3"]
    )
    from rtmp2server import config

    resolved = resolve(None, config.values_from_args(args))
    assert resolved.config.pull == ["live=rtmp://a/live", "tv=rtmp://b/tv"]
    assert resolved.config.pull_idle == 3.0
    # --print-config writes them, and reading that back gives the same.
    out = tmp_path / "c.toml"
    out.write_text(config.to_toml(resolved.values))
    assert resolve(out, {}).config.pull == resolved.config.pull


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("rtmp://user:secret@origin:1936/live/x?token=abc", "rtmp://origin:1936/live/x?token=***"),
        ("rtmps://[::1]/live/x", "rtmps://[::1]/live/x"),
        ("rtmp://origin/live/x", "rtmp://origin/live/x"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_split_stream_url() -> None:
    assert split_stream_url("rtmp://o/live/x") == ("rtmp://o/live", "x")
    assert split_stream_url("rtmp://o/app/inst/x?k=1") == ("rtmp://o/app/inst", "x?k=1")


# --- real processes: rtmp2-server edges of an rtmp2-server and of an nginx-rtmp origin ------

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "edge.toml"
EDGE_PLAYERS = ("rtmpdump", "ffmpeg-debian")


@pytest.fixture
def nginx_rtmp(tmp_path: Path) -> Iterator[int]:
    with NginxRTMP(tmp_path / "nginx") as nginx:
        yield nginx.port


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """test_e2e_play's sources, in its directory (made once under its lock)."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent
    path = base / "e2e-play-media"
    path.mkdir(parents=True, exist_ok=True)
    return path


def edge_args(*extra: str) -> list[str]:
    # Grace 0: players end as soon as the origin's publish does (the example keeps 10 s).
    return ["--republish-grace", "0", "--pull-idle", "1", *extra]


def start_players(edge: ServerProcess, tmp_path: Path) -> list[e2e.Player]:
    return [e2e.Player(kind, edge.url("cam"), tmp_path / f"{kind}.flv") for kind in EDGE_PLAYERS]


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_edge_of_our_origin_with_the_example_config(tmp_path: Path, media_dir: Path) -> None:
    """The README's example: an origin, and an edge run with `examples/edge.toml` (the
    origin's address put in). ffmpeg publishes to the origin; rtmpdump and ffmpeg play from
    the edge, joining mid-stream: each gets the origin's recording bit-exact from a keyframe
    to the end, the origin sees one play for both, and it ends once they left."""
    src = e2e.make_source(media_dir, "h264-aac-gop1s")
    api = f"127.0.0.1:{free_port()}"
    origin_args = ["--republish-grace", "0", "--http", api]
    with running_server(tmp_path / "origin", tmp_path / "origin.log", args=origin_args) as origin:
        conf = tmp_path / "edge.toml"
        text = EXAMPLE.read_text()
        assert "rtmp://127.0.0.1:1935/live" in text
        conf.write_text(text.replace("127.0.0.1:1935", f"127.0.0.1:{origin.port}"))
        args = ["--config", str(conf), *edge_args()]
        with running_server(tmp_path / "edge", tmp_path / "edge.log", args=args) as edge:
            publisher = e2e.publish(origin, src, "cam")
            time.sleep(1.5)  # mid-stream (a keyframe a second)
            players = start_players(edge, tmp_path)
            assert publisher.wait(30).returncode == 0
            for player in players:
                player.wait()
            recording = e2e.wait_recording(origin, "cam")
            for player in players:
                joined = e2e.assert_suffix_from_keyframe(player.out, recording)
                assert joined.video_from > 0 and joined.video >= 60
            edge.wait_for_log(r"pull stop: app=live stream=cam .*\(no players for 1 s\)")
            origin.wait_for_log(r"play stop: .*stream=cam")
            # The origin's API: no connection left (the pull's play was the last one).
            deadline = time.monotonic() + 10
            while True:
                with urllib.request.urlopen(f"http://{api}/api/v1/clients", timeout=5) as r:
                    clients = json.load(r)["clients"]
                if not clients:
                    break
                assert time.monotonic() < deadline, clients
                time.sleep(0.05)
            # One play at the origin for the two players, and it has ended.
            assert len(origin.log_lines("play start", "stream=cam")) == 1
            assert len(origin.log_lines("play stop", "stream=cam")) == 1
            assert len(edge.log_lines("play start", "stream=cam")) == 2
            # The edge records nothing (record = false in the example).
            assert edge.recordings() == []
            pulls = edge.log_lines("pull start")
            assert len(pulls) == 1 and f"from rtmp://127.0.0.1:{origin.port}/live/cam" in pulls[0]


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_edge_of_an_nginx_rtmp_origin(nginx_rtmp: int, tmp_path: Path, media_dir: Path) -> None:
    """nginx-rtmp as the origin: the edge's players get the source bit-exact from a keyframe
    to the end, and the pull ends after they left."""
    src = e2e.make_source(media_dir, "h264-aac-gop1s")
    origin = f"rtmp://127.0.0.1:{nginx_rtmp}/live"
    args = edge_args("--pull", f"live={origin}")
    with running_server(tmp_path / "edge", tmp_path / "edge.log", args=args) as edge:
        ffmpeg = f"-hide_banner -nostdin -loglevel error -re -i {src} -map 0 -c copy -f flv"
        publisher = Publisher([e2e.FFMPEG9, *ffmpeg.split(), f"{origin}/cam"])
        time.sleep(1.5)
        players = start_players(edge, tmp_path)
        assert publisher.wait(30).returncode == 0
        for player in players:
            player.wait()
        for player in players:
            joined = e2e.assert_suffix_from_keyframe(player.out, src)
            assert joined.video_from > 0 and joined.video >= 60
        edge.wait_for_log(r"pull stop: app=live stream=cam .*\(no players for 1 s\)")
        assert len(edge.log_lines("pull start")) == 1
        # nginx saw one play for the two players, and it ended (the pull disconnected).
        nginx_log = tmp_path / "nginx" / "error.log"
        plays = re.findall(r"\*(\d+) play: name='cam'", nginx_log.read_text())
        assert len(plays) == 1, nginx_log.read_text()
        deadline = time.monotonic() + 10
        while f"*{plays[0]} disconnect" not in nginx_log.read_text():
            assert time.monotonic() < deadline, nginx_log.read_text()
            time.sleep(0.05)
        # The edge records the pulled stream as it would a publish (record is on): every
        # frame from its start to the end, its timestamps from zero.
        recorded, source = e2e.frames(edge.recording("cam")), e2e.frames(src)
        for kind in (VIDEO, AUDIO):
            got = [t.body for t in recorded if t.tag_type == kind]
            assert got and got == [t.body for t in source if t.tag_type == kind][-len(got) :]
        assert min(t.timestamp for t in recorded) < 100


@pytest.mark.e2e
@pytest.mark.timeout(60)
def test_nginx_rtmp_origin_without_the_stream(nginx_rtmp: int, tmp_path: Path) -> None:
    """nginx-rtmp answers Play.Start for a stream it does not have and sends nothing: the
    edge's player (rtmpdump) gets StreamNotFound after play_wait, and the pull ends."""
    args = edge_args("--pull", f"live=rtmp://127.0.0.1:{nginx_rtmp}/live", "--play-wait", "2")
    with running_server(tmp_path / "edge", tmp_path / "edge.log", args=args) as edge:
        player = subprocess.run(
            [e2e.RTMPDUMP, "--live", "-r", edge.url("none"), "-o", str(tmp_path / "none.flv")],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert "NetStream.Play.StreamNotFound" in player.stderr, player.stderr
        edge.wait_for_log(r"pull stop: app=live stream=none .*0 publish\(es\)")


def test_pulls_on_demand_are_bounded(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Players choose the names: past `pull_max` pulls, a play of another name starts none
    (it waits as for a stream not published), with one log line."""

    async def main() -> None:
        async with RTMPServer(origin_config(tmp_path)) as origin:
            cfg = edge_config(tmp_path, origin.port, pull_max=2)
            assert cfg.relay is not None
            cfg.relay.play_wait = 1.0
            async with RTMPServer(cfg) as edge:
                players = [EdgePlayer(edge.port, f"s{i}", 1) for i in range(4)]
                await wait_for(lambda: origin_players(origin) == 2)
                assert len(edge.pulls) == 2  # whichever two plays came first
                for player in players:
                    with pytest.raises(StatusError):
                        await player.done()
                await wait_for(lambda: len(edge.pulls) == 0)

    run(main())
    lines = [
        r.getMessage() for r in caplog.records if "the limit (pull_max) is 2" in r.getMessage()
    ]
    assert len(lines) == 1, lines


def test_an_edge_pulls_every_track_of_a_multitrack_publish(tmp_path: Path) -> None:
    """The pull announces multitrack (capsEx) and every codec to the origin: a multitrack
    subscriber of the edge gets the non-default track too, byte for byte as published."""
    from test_push import _multitrack

    media = _multitrack(40)
    got = subscribe_through_an_edge(tmp_path, "mt", media, multitrack=True)
    assert [m.payload for m in av(got)] == [p for _t, _ts, p in media]
