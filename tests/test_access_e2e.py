"""Access control end to end: every policy against real clients, callbacks over real HTTP.

The server runs in-process on a real loopback port (its access configuration is a Python
object); the publishers are the real clients as subprocesses. Each case ends either accepted
and recorded packet-complete under the public name, or refused: the client fails, the log
names the peer and the reason, and nothing is recorded.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from rtmp2server.server import RTMPServer, ServerConfig
from rtmp2server.server.access import AccessConfig, AppAccess, Rule
from rtmp2server.server.webhooks import SIGNATURE_HEADER
from support.clients import CLIENTS, publish
from support.http import serve_http
from support.media import SourceMedia
from support.probe import av_counts
from test_server import AsyncClient, frames, recording, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

KEY = "s3cret-key"
KEYS = AccessConfig(
    default=AppAccess(
        publish=Rule("key"),
        keys={"cam1": "sha256:" + hashlib.sha256(KEY.encode()).hexdigest()},
    )
)
DENY_LOOPBACK = AccessConfig(default=AppAccess(publish=Rule("allow", deny=["127.0.0.0/8"])))
ALLOW = AccessConfig(default=AppAccess(publish=Rule("allow", allow=["127.0.0.0/8"])))
DENY = AccessConfig(default=AppAccess(publish=Rule("deny")))


def run_case(
    tmp_path: Path, config: AccessConfig, client: str, source: SourceMedia, path: str
) -> tuple[int, str]:
    """Publish `source` with `client` to `rtmp://.../live/<path>`; (exit code, server log)."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("rtmp2server")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)

    async def main() -> int:
        server = RTMPServer(
            ServerConfig(host="127.0.0.1", port=0, record_dir=tmp_path / "rec", access=config)
        )
        await server.start()
        loop = asyncio.get_running_loop()
        url = f"rtmp://127.0.0.1:{server.port}/live/{path}"
        result = await loop.run_in_executor(None, publish, client, source.path, url, 30.0)
        await wait_for(lambda: not server.registry.get("live", "cam1"))
        await server.close()
        return result.returncode

    try:
        code = asyncio.run(main())
    finally:
        logger.removeHandler(handler)
    return code, "\n".join(r.getMessage() for r in records)


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize(
    ("case", "config", "path", "accepted"),
    [
        ("right key", KEYS, KEY, True),
        ("wrong key", KEYS, "guess", False),
        ("no key", KEYS, "cam1", False),
        ("denied address", DENY_LOOPBACK, "cam1", False),
        ("allow", ALLOW, "cam1", True),
        ("deny", DENY, "cam1", False),
    ],
)
def test_policy_matrix(
    tmp_path: Path,
    source: SourceMedia,
    client: str,
    case: str,
    config: AccessConfig,
    path: str,
    accepted: bool,
) -> None:
    code, log_text = run_case(tmp_path, config, client, source, path)
    files = list((tmp_path / "rec").rglob("*.flv"))
    assert KEY not in log_text, "a stream key reached the log"
    if accepted:
        assert code == 0, log_text
        (recorded,) = files
        assert recorded.parent.name == "live" and recorded.name.startswith("cam1-")
        assert av_counts(recorded) == source.counts
        assert "publish start: peer=127.0.0.1:" in log_text and "stream=cam1" in log_text
    else:
        assert code != 0, f"{client} exited 0 although refused ({case})"
        assert files == []
        assert "refused:" in log_text and "peer 127.0.0.1:" in log_text, log_text


def test_ffmpeg_key_in_the_query(tmp_path: Path, source: SourceMedia) -> None:
    code, log_text = run_case(tmp_path, KEYS, "ffmpeg-debian", source, f"cam1?key={KEY}")
    assert code == 0, log_text
    (recorded,) = (tmp_path / "rec").rglob("cam1-*.flv")
    assert av_counts(recorded) == source.counts
    assert KEY not in log_text and "?key=***" in log_text


@pytest.mark.parametrize("callback_format", ["json", "nginx"])
@pytest.mark.parametrize("allow", [True, False])
def test_callback_with_real_client(
    tmp_path: Path, source: SourceMedia, callback_format: str, allow: bool
) -> None:
    calls: list[Any] = []

    async def hook(request: web.Request) -> web.StreamResponse:
        if callback_format == "json":
            calls.append(await request.json())
        else:
            calls.append(dict(await request.post()))
        return web.Response(status=200 if allow else 403)

    async def main() -> int:
        runner, url = await serve_http(hook)
        config = AccessConfig(
            default=AppAccess(publish=Rule("callback")),
            on_publish=url,
            callback_format=callback_format,
        )
        server = RTMPServer(
            ServerConfig(host="127.0.0.1", port=0, record_dir=tmp_path / "rec", access=config)
        )
        await server.start()
        loop = asyncio.get_running_loop()
        rtmp_url = f"rtmp://127.0.0.1:{server.port}/live/cam1"
        result = await loop.run_in_executor(
            None, publish, "ffmpeg-debian", source.path, rtmp_url, 30.0
        )
        await wait_for(lambda: not server.registry.get("live", "cam1"))
        await server.close()
        await runner.cleanup()
        return result.returncode

    code = asyncio.run(main())
    (call,) = calls
    if callback_format == "json":
        assert call["action"] == "publish" and call["stream"] == "cam1"
    else:
        assert call["call"] == "publish" and call["name"] == "cam1" and call["app"] == "live"
    files = list((tmp_path / "rec").rglob("*.flv"))
    if allow:
        assert code == 0
        (recorded,) = files
        assert av_counts(recorded) == source.counts
    else:
        assert code != 0 and files == []


def test_media_during_a_slow_callback_is_recorded_from_the_first_frame(tmp_path: Path) -> None:
    """The publisher sends 2 s of media at once while the callback takes 2 s to say yes."""
    media = frames(60)

    async def hook(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(2)
        return web.json_response({"name": "renamed"})

    async def main() -> str:
        runner, url = await serve_http(hook)
        config = AccessConfig(default=AppAccess(publish=Rule("callback")), on_publish=url)
        server = RTMPServer(
            ServerConfig(host="127.0.0.1", port=0, record_dir=tmp_path, access=config)
        )
        await server.start()
        c = await AsyncClient.open(server.port)
        sid = await c.start_publish("cam1")
        c.conn.send_metadata(sid, {"videocodecid": 7.0})
        for t, ts, payload in media:
            c.conn.send_media(sid, t, ts, payload)
        await c.flush()
        status = await c.command("onStatus")
        c.conn.delete_stream(sid)
        await c.flush()
        await c.close()
        await wait_for(lambda: not server.sessions)
        await server.close()
        await runner.cleanup()
        return str(status.info["code"])

    assert asyncio.run(main()) == "NetStream.Publish.Start"
    tags = recording(tmp_path, "live", "renamed")
    assert [(t.tag_type, t.timestamp, t.body) for t in tags[1:]] == media


def test_webhooks_of_a_real_publish_and_play_are_signed(
    tmp_path: Path, source: SourceMedia
) -> None:
    events: list[dict[str, Any]] = []
    secret = "whsec"

    async def hook(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        assert request.headers[SIGNATURE_HEADER] == expected
        events.append(json.loads(body))
        return web.Response(status=204)

    async def main() -> None:
        runner, url = await serve_http(hook)
        server = RTMPServer(
            ServerConfig(
                host="127.0.0.1",
                port=0,
                record_dir=tmp_path / "rec",
                webhook=url,
                webhook_secret=secret,
            )
        )
        await server.start()
        loop = asyncio.get_running_loop()
        rtmp_url = f"rtmp://127.0.0.1:{server.port}/live/cam1"
        result = await loop.run_in_executor(
            None, publish, "ffmpeg-debian", source.path, rtmp_url, 30.0
        )
        assert result.returncode == 0
        await wait_for(lambda: not server.registry.get("live", "cam1"))
        await server.close()
        await runner.cleanup()

    asyncio.run(main())
    kinds = [e["event"] for e in events]
    assert kinds == ["publish_start", "publish_stop", "record_done"], kinds
    done = events[-1]
    assert done["stream"] == "cam1" and done["path"].endswith(".flv") and done["bytes"] > 0
    # Video and audio messages, the sequence headers among them.
    assert done["video_frames"] >= source.video and done["audio_frames"] >= source.audio
    assert len({e["id"] for e in events}) == 3


def test_undeclared_application_is_refused_at_connect(tmp_path: Path, source: SourceMedia) -> None:
    config = AccessConfig(apps={"live": AppAccess()})

    async def main() -> tuple[int, int]:
        server = RTMPServer(
            ServerConfig(host="127.0.0.1", port=0, record_dir=tmp_path / "rec", access=config)
        )
        await server.start()
        loop = asyncio.get_running_loop()
        codes = []
        for app in ("other", "live"):
            url = f"rtmp://127.0.0.1:{server.port}/{app}/cam1"
            result = await loop.run_in_executor(
                None, publish, "ffmpeg-debian", source.path, url, 30.0
            )
            codes.append(result.returncode)
        await wait_for(lambda: not server.registry.get("live", "cam1"))
        await server.close()
        return codes[0], codes[1]

    refused, accepted = asyncio.run(main())
    assert refused != 0 and accepted == 0
    assert [p.parent.name for p in (tmp_path / "rec").rglob("*.flv")] == ["live"]


def test_play_tokens_with_a_real_player(tmp_path: Path, source: SourceMedia) -> None:
    """ffplay/ffmpeg players pass the token in the URL's query; without it they are refused."""
    config = AccessConfig(default=AppAccess(play=Rule("key"), play_keys=["viewer"]))

    async def main() -> tuple[int, int, Path]:
        server = RTMPServer(
            ServerConfig(host="127.0.0.1", port=0, record_dir=tmp_path / "rec", access=config)
        )
        await server.start()
        loop = asyncio.get_running_loop()
        base = f"rtmp://127.0.0.1:{server.port}/live/cam1"
        from support.clients import start_looping_publisher

        publisher = start_looping_publisher(source.path, base)
        await wait_for(lambda: server.registry.get("live", "cam1") is not None, timeout=15)
        out = tmp_path / "played.flv"

        def play(url: str) -> int:
            import subprocess

            return subprocess.run(
                [
                    "ffmpeg",
                    "-hide_banner",
                    "-loglevel",
                    "error",
                    "-y",
                    "-i",
                    url,
                    "-t",
                    "1",
                    "-c",
                    "copy",
                    str(out),
                ],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=30,
            ).returncode

        without = await loop.run_in_executor(None, play, base)
        with_token = await loop.run_in_executor(None, play, base + "?token=viewer")
        publisher.kill()
        await server.close()
        return without, with_token, out

    without, with_token, out = asyncio.run(main())
    assert without != 0
    assert with_token == 0 and av_counts(out)["video"] > 0


def test_reconfigure_applies_new_keys_to_new_publishes(tmp_path: Path) -> None:
    """What SIGHUP does: the running server gets new rules; the next publish meets them."""
    import dataclasses

    first = AccessConfig(default=AppAccess(publish=Rule("key"), keys={"cam1": "old"}))
    second = AccessConfig(default=AppAccess(publish=Rule("key"), keys={"cam1": "new"}))

    async def main() -> list[str]:
        cfg = ServerConfig(host="127.0.0.1", port=0, record_dir=tmp_path, access=first)
        server = RTMPServer(cfg)
        await server.start()
        codes = []
        for key in ("old", "new"):
            c = await AsyncClient.open(server.port)
            _, status = await c.publish(key)
            codes.append(str(status.info["code"]))
            await c.close()
            if key == "old":
                await wait_for(lambda: not server.sessions)
                server.reconfigure(dataclasses.replace(cfg, access=second))
        c = await AsyncClient.open(server.port)
        _, status = await c.publish("old")
        codes.append(str(status.info["code"]))
        await c.close()
        await server.close()
        return codes

    assert asyncio.run(main()) == [
        "NetStream.Publish.Start",
        "NetStream.Publish.Start",
        "NetStream.Publish.BadName",
    ]
