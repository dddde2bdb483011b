"""Access decisions: rules, keys, address lists, HTTP callbacks against a real aiohttp server."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import pytest
from aiohttp import web

from rtmp2server.server.access import (
    AccessConfig,
    AccessControl,
    AppAccess,
    Decision,
    Request,
    Rule,
    key_matches,
)
from support.http import Handler, serve_http


def req(action: str = "publish", name: str = "cam", query: str = "", **kw: Any) -> Request:
    fields: dict[str, Any] = {
        "action": action,
        "app": "live",
        "name": name,
        "query": query,
        "ip": "127.0.0.1",
        "port": 50000,
        "client_id": "7",
        "tc_url": "rtmp://127.0.0.1/live",
        "flash_ver": "FMLE/3.0",
    }
    fields.update(kw)
    return Request(**fields)


def decide(config: AccessConfig, request: Request) -> Decision:
    async def main() -> Decision:
        ac = AccessControl(config)
        try:
            return await ac.decide(request)
        finally:
            await ac.close()

    return asyncio.run(main())


SHA = "sha256:" + hashlib.sha256(b"s3cret").hexdigest()
KEYED = AccessConfig(
    default=AppAccess(
        publish=Rule("key"),
        play=Rule("key"),
        keys={"cam1": "s3cret", "cam2": SHA},
        play_keys=["watch"],
    )
)


@pytest.mark.parametrize(
    ("name", "query", "allowed", "public"),
    [
        ("s3cret", "", True, "cam1"),  # OBS: the key in the Stream Key field
        ("cam1", "key=s3cret", True, "cam1"),  # ffmpeg: name?key=
        ("cam2", "key=s3cret", True, "cam2"),  # stored as a SHA-256 hash
        ("cam1", "key=wrong", False, ""),
        ("cam2", "key=", False, ""),
        ("cam1", "", False, ""),
        ("wrong", "", False, ""),
    ],
)
def test_publish_keys(name: str, query: str, allowed: bool, public: str) -> None:
    d = decide(KEYED, req("publish", name, query))
    assert d.allowed is allowed, d
    if allowed:
        assert d.name == public


@pytest.mark.parametrize(
    ("query", "allowed"),
    [("token=watch", True), ("key=watch", True), ("token=x", False), ("", False)],
)
def test_play_tokens(query: str, allowed: bool) -> None:
    assert decide(KEYED, req("play", "cam1", query)).allowed is allowed


def test_key_matches_in_both_forms() -> None:
    assert key_matches("s3cret", "s3cret") and key_matches("s3cret", SHA)
    assert not key_matches("s3cre", "s3cret") and not key_matches("x", SHA)


@pytest.mark.parametrize(
    ("ip", "allowed"),
    [
        ("10.1.2.3", True),
        ("10.9.0.1", False),  # denied first
        ("192.168.1.1", False),  # not in the allow list
        ("2001:db8::5", True),
        ("::ffff:10.1.2.3", True),  # an IPv4-mapped address counts as the IPv4 one
    ],
)
def test_address_lists(ip: str, allowed: bool) -> None:
    cfg = AccessConfig(
        default=AppAccess(
            publish=Rule("allow", allow=["10.0.0.0/8", "2001:db8::/32"], deny=["10.9.0.0/16"])
        )
    )
    assert decide(cfg, req(ip=ip)).allowed is allowed


def test_undeclared_application_is_refused() -> None:
    cfg = AccessConfig(apps={"live": AppAccess()})
    assert decide(cfg, req("connect")).allowed
    assert not decide(cfg, req("connect", app="other")).allowed


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"callback_format": "xml"}, "callback_format: 'xml'"),
        ({"callback_timeout": 0}, "callback_timeout: 0"),
        ({"default": AppAccess(publish=Rule("maybe"))}, "publish.policy: 'maybe'"),
        ({"default": AppAccess(play=Rule(allow=["10.0.0.300/8"]))}, "play.allow: '10.0.0.300/8'"),
        ({"default": AppAccess(publish=Rule("callback"))}, "callback, but no on_publish URL"),
        ({"default": AppAccess(keys={"cam": "sha256:abc"})}, "keys.cam"),
        ({"default": AppAccess(keys={"cam": ""})}, "an empty key"),
    ],
)
def test_validation_names_the_bad_value(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(".", r"\.")):
        AccessControl(AccessConfig(**change))


def test_refusals_from_one_address_slow_down() -> None:
    ac = AccessControl(KEYED)
    delays = []
    for _ in range(7):
        delays.append(ac._delay("127.0.0.1"))
        ac._count("127.0.0.1", False)
    assert delays == [0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0]
    assert ac._delay("127.0.0.2") == 0.0
    ac._count("127.0.0.1", True)
    assert ac._delay("127.0.0.1") == 0.0


# --- callbacks against a real HTTP server ----------------------------------------------------


def with_callback(handler: Handler, request: Request, **cfg: Any) -> tuple[Decision, list[Any]]:
    seen: list[Any] = []

    async def recording(r: web.Request) -> web.StreamResponse:
        if r.content_type == "application/json":
            seen.append(await r.json())
        else:
            seen.append(list((await r.post()).items()))
        return await handler(r)

    async def main() -> Decision:
        runner, url = await serve_http(recording)
        config = AccessConfig(
            default=AppAccess(publish=Rule("callback"), play=Rule("callback")),
            on_publish=url,
            on_play=url,
            **cfg,
        )
        ac = AccessControl(config)
        try:
            return await ac.decide(request)
        finally:
            await ac.close()
            await runner.cleanup()

    return asyncio.run(main()), seen


async def ok(r: web.Request) -> web.StreamResponse:
    return web.Response(status=200)


async def forbidden(r: web.Request) -> web.StreamResponse:
    return web.Response(status=403)


async def broken(r: web.Request) -> web.StreamResponse:
    return web.Response(status=500)


async def rename(r: web.Request) -> web.StreamResponse:
    return web.json_response({"name": "public", "record": False})


async def slow(r: web.Request) -> web.StreamResponse:
    await asyncio.sleep(3)
    return web.Response(status=200)


async def nginx_redirect(r: web.Request) -> web.StreamResponse:
    # What an nginx-rtmp on_publish script does to rename: 302 with the new name.
    return web.Response(status=302, headers={"Location": "renamed"})


def test_json_callback_allow_and_its_body() -> None:
    d, seen = with_callback(ok, req(query="key=abc&x=1"))
    assert d.allowed and d.name == "cam"
    (body,) = seen
    assert body["action"] == "publish" and body["app"] == "live" and body["stream"] == "cam"
    assert body["query"] == {"key": "abc", "x": "1"}
    assert body["client"] == {"ip": "127.0.0.1", "port": 50000, "id": "7"}
    assert body["tc_url"] == "rtmp://127.0.0.1/live" and body["flash_ver"] == "FMLE/3.0"
    assert body["server_id"]


@pytest.mark.parametrize("handler", [forbidden, broken])
def test_json_callback_deny(handler: Handler) -> None:
    d, _ = with_callback(handler, req())
    assert not d.allowed


def test_json_callback_renames_and_turns_recording_off() -> None:
    d, _ = with_callback(rename, req())
    assert d.allowed and d.name == "public" and d.record is False


def test_callback_timeout_fails_closed_or_open() -> None:
    d, _ = with_callback(slow, req(), callback_timeout=0.3)
    assert not d.allowed and "timed out" in d.reason
    d, _ = with_callback(slow, req(), callback_timeout=0.3, fail_open=True)
    assert d.allowed


def test_callback_service_down_fails_closed() -> None:
    async def main() -> Decision:
        ac = AccessControl(
            AccessConfig(
                default=AppAccess(publish=Rule("callback")),
                on_publish="http://127.0.0.1:9/hook",  # discard port: nothing listens
            )
        )
        try:
            return await ac.decide(req())
        finally:
            await ac.close()

    d = asyncio.run(main())
    assert not d.allowed and "failed" in d.reason


def test_nginx_format_fields_exactly() -> None:
    d, seen = with_callback(ok, req(query="key=abc"), callback_format="nginx")
    assert d.allowed
    (fields,) = seen
    assert fields == [
        ("call", "publish"),
        ("addr", "127.0.0.1"),
        ("clientid", "7"),
        ("app", "live"),
        ("flashver", "FMLE/3.0"),
        ("swfurl", ""),
        ("tcurl", "rtmp://127.0.0.1/live"),
        ("pageurl", ""),
        ("name", "cam"),
        ("type", "live"),
        ("key", "abc"),
    ]


def test_nginx_format_3xx_renames_and_4xx_denies() -> None:
    d, _ = with_callback(nginx_redirect, req(), callback_format="nginx")
    assert d.allowed and d.name == "renamed"
    d, _ = with_callback(forbidden, req(), callback_format="nginx")
    assert not d.allowed
