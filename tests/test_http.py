"""The HTTP side end to end: the JSON API, /metrics, the token, the kick and end-publish calls.

The server runs in-process with its HTTP listener on a free loopback port; publishers and
players are real ffmpeg processes, requests are real HTTP (aiohttp's client). Every JSON
response is validated against the server's own OpenAPI document, and every figure is checked
against what the publisher sent (the source file's codec, size and frame rate).
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import subprocess
import time
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from aiohttp import ClientSession
from prometheus_client.parser import text_string_to_metric_families

from rtmp2server import config
from rtmp2server.http.openapi import DOCUMENT, response_schema
from rtmp2server.protocol import flv
from rtmp2server.server import RTMPServer, ServerConfig
from support.clients import FFMPEG_DEBIAN, Publisher, ffmpeg9
from support.media import SourceMedia
from support.probe import probe_errors
from support.server import ServerProcess, free_port
from test_config import assert_one_line_error, run_main
from test_e2e_play import make_source, media_dir  # noqa: F401  (the fixture)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


def looping(exe: str, src: Path, url: str) -> Publisher:
    """`src` sent over and over in real time, as a live encoder would, until killed."""
    return Publisher(
        f"{exe} -hide_banner -nostdin -loglevel error -re -stream_loop -1 -i {src} "
        f"-c copy -f flv {url}".split()
    )


def player(url: str, out: Path) -> Publisher:
    return Publisher(
        [
            FFMPEG_DEBIAN,
            *["-hide_banner", "-nostdin", "-loglevel", "error", "-y", "-i"],
            url,
            *["-c", "copy", "-f", "flv"],
            str(out),
        ]
    )


def check(doc: Any, path: str, method: str = "get", status: int = 200) -> None:
    jsonschema.Draft202012Validator(response_schema(path, method, status)).validate(doc)


async def until(pred: Callable[[], Awaitable[Any]], timeout: float = 15.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await pred()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.2)


def metric_samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def stream_samples(samples: dict[Any, float], stream: str) -> dict[str, float]:
    return {
        name + (f"[{dict(labels)['kind']}]" if "kind" in dict(labels) else ""): v
        for (name, labels), v in samples.items()
        if dict(labels).get("stream") == stream
    }


class Api:
    def __init__(self, http: ClientSession, base: str, token: str = "") -> None:
        self.http = http
        self.base = base
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    async def get(self, path: str, status: int = 200) -> Any:
        async with self.http.get(self.base + path, headers=self.headers) as r:
            assert r.status == status, await r.text()
            return await r.json()

    async def delete(self, path: str, status: int = 200) -> Any:
        async with self.http.delete(self.base + path, headers=self.headers) as r:
            assert r.status == status, await r.text()
            return await r.json()

    async def metrics(self) -> dict[Any, float]:
        async with self.http.get(self.base + "/metrics", headers=self.headers) as r:
            assert r.status == 200
            return metric_samples(await r.text())


def http_config(tmp_path: Path, **kw: Any) -> ServerConfig:
    return ServerConfig(
        host="127.0.0.1", port=0, record_dir=tmp_path / "rec", http="127.0.0.1:0", **kw
    )


# --- configuration ------------------------------------------------------------------------


def test_http_defaults() -> None:
    assert ServerConfig().http == ""  # the library binds nothing by itself
    assert config.defaults()["http"] == "127.0.0.1:8080"  # the command line does
    assert config.KEY_BY_NAME["api_token"].section == "http"


@pytest.mark.parametrize(
    ("argv", "needles"),
    [
        (["--http", "0.0.0.0:8080"], ["api_token", "0.0.0.0", "not a loopback"]),
        (["--http", "[::]:8080"], ["api_token", "::"]),
        (["--http", "8080"], ["http", "HOST:PORT"]),
        (["--http", "127.0.0.1:99999"], ["http", "99999"]),
    ],
)
def test_http_config_errors_are_one_line(
    argv: list[str], needles: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_main([*argv, "--print-config"], capsys)
    assert_one_line_error(code, err, *needles)


def test_http_elsewhere_with_a_token_is_accepted(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_main(["--http", "0.0.0.0:0", "--api-token", "t", "--print-config"], capsys)
    assert code == 0, err
    assert 'http = "0.0.0.0:0"' in out


def test_server_starts_and_stops_its_http_listener(tmp_path: Path) -> None:
    async def main() -> None:
        server = RTMPServer(http_config(tmp_path))
        await server.start()
        assert server.http is not None
        url = server.http.url
        async with ClientSession() as http:
            async with http.get(url + "/api/v1/openapi.json") as r:
                assert r.status == 200
                assert (await r.json())["openapi"] == DOCUMENT["openapi"]
            async with http.get(url + "/api/v1/streams") as r:
                body = await r.json()
            check(body, "/api/v1/streams")
            assert body == {"streams": []}
            await server.close()
            with pytest.raises(OSError):
                async with http.get(url + "/api/v1/streams"):
                    pass

    asyncio.run(main())


def test_openapi_document_is_valid_json_schema() -> None:
    for schema in DOCUMENT["components"]["schemas"].values():
        jsonschema.Draft202012Validator.check_schema(schema)


# --- the token ----------------------------------------------------------------------------


def test_api_token_is_required_when_set(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    token = "s3cret-token"

    async def main() -> None:
        async with RTMPServer(http_config(tmp_path, api_token=token)) as server:
            assert server.http is not None
            base = server.http.url
            async with ClientSession() as http:
                for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": token}):
                    for path in ("/api/v1/streams", "/api/v1/clients", "/metrics"):
                        async with http.get(base + path, headers=headers) as r:
                            assert r.status == 401, (path, headers)
                            check(await r.json(), "/api/v1/streams", status=401)
                    async with http.delete(base + "/api/v1/clients/1", headers=headers) as r:
                        assert r.status == 401
                async with http.get(base + "/api/v1/openapi.json") as r:
                    assert r.status == 200
                api = Api(http, base, token)
                check(await api.get("/api/v1/streams"), "/api/v1/streams")
                await api.metrics()

    asyncio.run(main())
    assert token not in caplog.text and "wrong" not in caplog.text


# --- live figures -------------------------------------------------------------------------


def test_h264_aac_stream_clients_metrics_kick_and_end(tmp_path: Path, source: SourceMedia) -> None:
    """Debian ffmpeg publishes the H.264+AAC source in a loop, ffmpeg plays it: the API and the
    metrics report what was sent; the kick closes the player; ending the publish closes the
    publisher and leaves a valid recording."""
    # What the publisher sends per second: the tags' bodies (the RTMP message payloads).
    _, tags, _ = flv.parse_flv(source.path.read_bytes())
    source_bitrate = sum(len(t.body) for t in tags) * 8 / source.duration

    async def main() -> None:
        async with RTMPServer(http_config(tmp_path)) as server:
            assert server.http is not None
            rtmp = f"rtmp://127.0.0.1:{server.port}/live/cam"
            pub = looping(FFMPEG_DEBIAN, source.path, rtmp)
            play = player(rtmp, tmp_path / "played.flv")
            try:
                async with ClientSession() as http:
                    api = Api(http, server.http.url)

                    async def playing() -> Any:
                        body = (
                            await api.get("/api/v1/streams/live/cam", status=200)
                            if len(server.registry)
                            else None
                        )
                        return body if body and body["players"] else None

                    await until(playing)
                    await asyncio.sleep(6.5)  # the 5 s window filled
                    s = await api.get("/api/v1/streams/live/cam")
                    check(s, "/api/v1/streams/{app}/{name}")
                    listed = await api.get("/api/v1/streams")
                    check(listed, "/api/v1/streams")
                    assert [x["name"] for x in listed["streams"]] == ["cam"]

                    video = [t for t in s["tracks"] if t["kind"] == "video"]
                    audio = [t for t in s["tracks"] if t["kind"] == "audio"]
                    assert [(t["codec"], t["width"], t["height"]) for t in video] == [
                        ("avc1", 320, 240)
                    ]
                    assert video[0]["profile"]
                    assert [(t["codec"], t["sample_rate"], t["channels"]) for t in audio] == [
                        ("mp4a", 44100, 1)
                    ]
                    h = s["health"]
                    assert 29 <= h["fps"] <= 31, h
                    assert h["keyframe_interval"] == pytest.approx(1.0, abs=0.05), h
                    assert 0.9 <= h["realtime_ratio"] <= 1.1, h
                    assert h["timestamp_backward"] == 0, h
                    assert s["warnings"] == [], s["warnings"]
                    assert 0.9 * source_bitrate <= s["bitrate_in"] <= 1.1 * source_bitrate, (
                        s["bitrate_in"],
                        source_bitrate,
                    )
                    assert s["bitrate_out"] > 0.5 * s["bitrate_in"]
                    assert s["bytes_in"] > 0 and s["bytes_out"] > 0
                    assert s["frames"]["video"] > 150 and s["frames"]["keyframes"] >= 5
                    assert s["recording"] and Path(s["recording"]).exists()
                    assert s["publisher"]["peer"].startswith("127.0.0.1:")
                    assert len(s["players"]) == 1

                    clients = await api.get("/api/v1/clients")
                    check(clients, "/api/v1/clients")
                    states = {c["state"]: c for c in clients["clients"]}
                    assert set(states) == {"publishing", "playing"}
                    assert states["publishing"]["id"] == s["publisher"]["client_id"]
                    assert states["playing"]["id"] == s["players"][0]["client_id"]
                    assert states["playing"]["playing"] == ["live/cam"]

                    m = stream_samples(await api.metrics(), "cam")
                    assert m["rtmp2_stream_players"] == 1
                    assert m["rtmp2_stream_bytes_in_total"] > 0
                    assert m["rtmp2_stream_frames_total[video]"] > 150
                    assert m["rtmp2_stream_frames_total[keyframe]"] >= 5
                    assert 29 <= m["rtmp2_stream_fps"] <= 31
                    assert m["rtmp2_stream_bitrate_in_bits"] > 0

                    # The kick: the player's connection closes, ffmpeg ends.
                    kicked = states["playing"]["id"]
                    check(
                        await api.delete(f"/api/v1/clients/{kicked}"),
                        "/api/v1/clients/{id}",
                        "delete",
                    )
                    await until(_exited(play))
                    await api.delete(f"/api/v1/clients/{kicked}", status=404)
                    await api.delete("/api/v1/clients/x", status=400)
                    left = await api.get("/api/v1/clients")
                    assert [c["id"] for c in left["clients"]] == [states["publishing"]["id"]]

                    # The end of the publish: the publisher's connection closes.
                    recording = Path(s["recording"])
                    await api.delete("/api/v1/streams/live/cam")
                    await until(_exited(pub))
                    await api.get("/api/v1/streams/live/cam", status=404)
                    await api.delete("/api/v1/streams/live/cam", status=404)
                    m = stream_samples(await api.metrics(), "cam")
                    assert m == {}, m  # its series are gone
                    recs = await api.get("/api/v1/recordings")
                    check(recs, "/api/v1/recordings")
                    [rec] = recs["recordings"]
                    assert rec["path"] == str(recording) and not rec["live"]
                    assert rec["size"] == recording.stat().st_size
                    assert rec["duration"] > 6
                    assert probe_errors(recording) == ""
            finally:
                for proc in (pub, play):
                    proc.kill()

    asyncio.run(main())


def _exited(proc: Publisher) -> Callable[[], Awaitable[bool]]:
    async def done() -> bool:
        return not proc.running()

    return done


@pytest.mark.parametrize(
    ("name", "video", "audio"),
    [
        ("hevc-opus", "hvc1", ("Opus", 48000, 1)),
        ("av1-flac", "av01", ("fLaC", 48000, 1)),
        ("vp9-ac3", "vp09", ("ac-3", 48000, 1)),
    ],
)
def test_enhanced_rtmp_codecs_from_ffmpeg9(
    tmp_path: Path,
    media_dir: Path,  # noqa: F811
    name: str,
    video: str,
    audio: tuple[str, int, int],
) -> None:
    """ffmpeg 9 publishes E-RTMP: the tracks are read from its sequence headers (for VP9 the
    size from its first keyframe, for AC-3 the rate from its first frame)."""
    src = make_source(media_dir, name)

    async def main() -> None:
        async with RTMPServer(http_config(tmp_path)) as server:
            assert server.http is not None
            pub = looping(ffmpeg9(), src, f"rtmp://127.0.0.1:{server.port}/live/{name}")
            try:
                async with ClientSession() as http:
                    api = Api(http, server.http.url)

                    async def live() -> Any:
                        return (
                            len(server.registry) and (await api.get("/api/v1/streams"))["streams"]
                        )

                    await until(live)
                    await asyncio.sleep(4)
                    s = await api.get(f"/api/v1/streams/live/{name}")
                    check(s, "/api/v1/streams/{app}/{name}")
                    tracks = {t["kind"]: t for t in s["tracks"]}
                    v, a = tracks["video"], tracks["audio"]
                    assert (v["codec"], v["width"], v["height"]) == (video, 320, 240)
                    assert (a["codec"], a["sample_rate"], a["channels"]) == audio
                    if video == "hvc1":
                        assert v["profile"] and v["level"]
                    assert 29 <= s["health"]["fps"] <= 31, s["health"]
                    assert s["warnings"] == [], s["warnings"]
            finally:
                pub.kill()

    asyncio.run(main())


def test_long_keyframe_interval_is_warned(tmp_path: Path, media_dir: Path) -> None:  # noqa: F811
    src = media_dir / "h264-aac-gop10s.flv"
    if not src.exists():
        tmp = src.with_suffix(f".{tmp_path.name}.tmp")
        subprocess.run(
            [
                FFMPEG_DEBIAN,
                *[
                    "-hide_banner",
                    "-loglevel",
                    "error",
                    "-y",
                    "-f",
                    "lavfi",
                    "-i",
                    "testsrc=size=320x240:rate=30",
                ],
                *[
                    "-c:v",
                    "libx264",
                    "-preset",
                    "ultrafast",
                    "-pix_fmt",
                    "yuv420p",
                    "-t",
                    "12",
                    "-f",
                    "flv",
                ],
                *["-g", "300", "-keyint_min", "300", "-sc_threshold", "0"],
                str(tmp),
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
        tmp.replace(src)

    async def main() -> None:
        async with RTMPServer(http_config(tmp_path)) as server:
            assert server.http is not None
            pub = looping(FFMPEG_DEBIAN, src, f"rtmp://127.0.0.1:{server.port}/live/slowgop")
            try:
                async with ClientSession() as http:
                    api = Api(http, server.http.url)

                    async def second_keyframe() -> Any:
                        if not len(server.registry):
                            return None
                        s = await api.get("/api/v1/streams/live/slowgop")
                        return s if s["frames"]["keyframes"] >= 2 else None

                    s = await until(second_keyframe, timeout=30)
                    check(s, "/api/v1/streams/{app}/{name}")
                    assert s["health"]["keyframe_interval"] == pytest.approx(10.0, abs=0.1)
                    assert "keyframe interval 10 s" in s["warnings"], s["warnings"]
                    m = stream_samples(await api.metrics(), "slowgop")
                    assert m["rtmp2_stream_keyframe_interval_seconds"] == pytest.approx(10, 0.01)
            finally:
                pub.kill()

    asyncio.run(main())


def test_http_section_of_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "server.toml"
    path.write_text('[http]\nhttp = "[::1]:0"\napi_token = "t"\n')
    resolved = config.resolve(path, {})
    assert (resolved.config.http, resolved.config.api_token) == ("[::1]:0", "t")
    assert config.http_address("[::1]:0") == ("::1", 0)
    path.write_text('[http]\nhttp = "0.0.0.0:8080"\n')
    with pytest.raises(config.ConfigError, match="api_token"):
        config.resolve(path, {})


def test_the_command_line_server_serves_http_and_exits_cleanly(tmp_path: Path) -> None:
    """`rtmp2-server --http 127.0.0.1:PORT` as a user runs it: the API answers, SIGTERM ends
    the process with 0."""
    port = free_port()
    server = ServerProcess(
        tmp_path / "rec", tmp_path / "server.log", args=["--http", f"127.0.0.1:{port}"]
    )
    server.start()
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/api/v1/streams", timeout=2
                ) as r:
                    body = json.load(r)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        check(body, "/api/v1/streams")
        assert f"HTTP API on http://127.0.0.1:{port}" in server.log()
    finally:
        assert server.stop() == 0, server.log()


def test_an_http_address_in_use_is_one_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The HTTP port is taken: the process says so in one line and exits 1; nothing listens."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        rtmp_port = free_port()
        argv = ["--host", "127.0.0.1", "--port", str(rtmp_port), "--no-record"]
        handlers = list(logging.root.handlers)
        try:
            code, _, err = run_main([*argv, "--http", f"127.0.0.1:{port}"], capsys)
        finally:  # main() configured logging to the captured stderr: undo that
            for handler in logging.root.handlers[:]:
                if handler not in handlers:
                    logging.root.removeHandler(handler)
    assert code == 1, err
    lines = [ln for ln in err.splitlines() if "rtmp2-server:" in ln]
    assert len(lines) == 1 and f"http 127.0.0.1:{port}" in lines[0], err
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", rtmp_port))  # the RTMP listener was closed again
