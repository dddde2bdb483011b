"""Access control: who may connect, publish and play, decided by rules, keys or an HTTP service.

This module owns the decisions, not the protocol: a `Session` asks `AccessControl` about a
connect, a publish or a play and answers the client with what comes back. Rules are per
application (nginx-rtmp's `application` blocks): when any application is declared, a connect
to an undeclared one is refused. For publish and play each there is a policy:

- `allow` / `deny`;
- `key`: a stream key is required. Publish keys map a secret to the public stream name: OBS's
  "Stream Key" field (`rtmp://HOST/live` + key `s3cret`) and ffmpeg's URL
  (`rtmp://HOST/live/s3cret`, or `rtmp://HOST/live/cam?key=s3cret`) carry the secret, and
  everything after the decision (recordings, logs, players) sees only the public name. Play
  keys are passed as `?token=` or `?key=`. Keys may be stored as `sha256:<hex>`;
- `callback`: an HTTP service decides (`on_publish`, `on_play`, `on_connect` URLs), in a JSON
  format or exactly in nginx-rtmp's notify format, so nginx-rtmp `on_publish` scripts keep
  working. It fails closed (a timeout, a refused connection or any status but 2xx denies)
  unless `fail_open` is set.

IP allow/deny lists (CIDR, IPv4 and IPv6) are checked before the policy. Repeated refusals from
one address are answered ever more slowly (0.25 s doubling up to 8 s), so that keys cannot be
guessed quickly; an accepted request resets the count.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import json
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from ..config import AppConfig, ServerConfig
from ..logs import get_logger

log = get_logger(__name__)

POLICIES = ("allow", "deny", "key", "callback")
CALLBACK_FORMATS = ("json", "nginx")
SERVER_ID = uuid.uuid4().hex[:12]


@dataclass
class Rule:
    """What decides one action (publish or play) of an application."""

    policy: str = "allow"
    """`allow`, `deny`, `key` (a stream key is required) or `callback` (an HTTP service)."""
    allow: list[str] = field(default_factory=list)
    """Addresses (CIDR) allowed; empty: every address not denied."""
    deny: list[str] = field(default_factory=list)
    """Addresses (CIDR) refused, checked first."""


@dataclass
class AppAccess:
    """The access rules of one application."""

    publish: Rule = field(default_factory=Rule)
    play: Rule = field(default_factory=Rule)
    keys: dict[str, str] = field(default_factory=dict)
    """Public stream name -> its secret publish key (clear, or `sha256:<hex>`)."""
    play_keys: list[str] = field(default_factory=list)
    """Tokens that may play any stream of the application (clear or `sha256:<hex>`)."""
    on_connect: str | None = None
    on_publish: str | None = None
    on_play: str | None = None


@dataclass
class AccessConfig:
    """Access control of a server. The default lets everyone connect, publish and play."""

    apps: dict[str, AppAccess] = field(default_factory=dict)
    """Declared applications; when any is, a connect to another one is refused."""
    default: AppAccess = field(default_factory=AppAccess)
    """The rules of every application when none is declared."""
    on_connect: str | None = None
    on_publish: str | None = None
    on_play: str | None = None
    """Callback URLs used where an application names none."""
    callback_format: str = "json"
    """`json` or `nginx` (nginx-rtmp's notify format)."""
    callback_timeout: float = 5.0
    fail_open: bool = False
    """Allow when the callback service cannot be reached or times out (default: deny)."""

    def validate(self) -> None:
        """Raise ValueError naming the first bad value."""
        if self.callback_format not in CALLBACK_FORMATS:
            raise ValueError(
                f"callback_format: {self.callback_format!r}, expected one of {CALLBACK_FORMATS}"
            )
        if not self.callback_timeout > 0:
            raise ValueError(f"callback_timeout: {self.callback_timeout!r}, expected > 0")
        for app_name, app in [("(default)", self.default), *self.apps.items()]:
            for action in ("publish", "play"):
                rule: Rule = getattr(app, action)
                if rule.policy not in POLICIES:
                    raise ValueError(
                        f"apps.{app_name}.{action}.policy: {rule.policy!r}, expected one of "
                        f"{', '.join(POLICIES)}"
                    )
                for key in ("allow", "deny"):
                    for net in getattr(rule, key):
                        try:
                            ipaddress.ip_network(net, strict=False)
                        except ValueError:
                            raise ValueError(
                                f"apps.{app_name}.{action}.{key}: {net!r}, expected an address "
                                "or CIDR network"
                            ) from None
                if rule.policy == "callback" and self._url(app, action) is None:
                    raise ValueError(
                        f"apps.{app_name}.{action}.policy: callback, but no on_{action} URL"
                    )
            for name, key in app.keys.items():
                _check_key(f"apps.{app_name}.keys.{name}", key)
            for i, key in enumerate(app.play_keys):
                _check_key(f"apps.{app_name}.play_keys[{i}]", key)

    def app(self, name: str) -> AppAccess | None:
        """The rules of application `name`; None when applications are declared and it is not
        one of them."""
        if not self.apps:
            return self.default
        return self.apps.get(name)

    def _url(self, app: AppAccess, action: str) -> str | None:
        url: str | None = getattr(app, f"on_{action}") or getattr(self, f"on_{action}")
        return url


def _check_key(where: str, key: str) -> None:
    if not key:
        raise ValueError(f"{where}: an empty key, expected a secret or sha256:<64 hex digits>")
    if key.startswith("sha256:"):
        digest = key[7:]
        if len(digest) != 64 or any(c not in "0123456789abcdefABCDEF" for c in digest):
            raise ValueError(f"{where}: {key[:20]!r}..., expected sha256:<64 hex digits>")


def key_matches(secret: str, stored: str) -> bool:
    """Whether `secret` is the key `stored` (clear or `sha256:<hex>`), in constant time."""
    if stored.startswith("sha256:"):
        digest = hashlib.sha256(secret.encode()).hexdigest()
        return hmac.compare_digest(digest, stored[7:].lower())
    return hmac.compare_digest(secret.encode(), stored.encode())


@dataclass(frozen=True, slots=True)
class Request:
    """What the client asked for, as the decision needs it."""

    action: str  # "connect", "publish" or "play"
    app: str
    name: str  # the stream name as the client sent it (for publish, perhaps the key)
    query: str
    ip: str
    port: int
    client_id: str
    tc_url: str = ""
    flash_ver: str = ""
    swf_url: str = ""
    page_url: str = ""
    publish_type: str = "live"


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    name: str = ""  # the public stream name (publish and play)
    reason: str = ""  # for the log
    record: bool | None = None  # a callback may turn recording on or off
    push: tuple[Any, ...] = ()  # push targets a callback added for this publish (JSON `push`)


class AccessControl:
    """Decides connects, publishes and plays from an `AccessConfig` (which may be replaced
    at run time: a reload applies to the requests that come after it)."""

    def __init__(self, config: AccessConfig | None = None) -> None:
        self.config = config or AccessConfig()
        self.config.validate()
        self._failures: dict[str, tuple[int, float]] = {}
        self._http: Any = None  # aiohttp.ClientSession, made on first use
        # Told of every callback: (action, outcome, seconds), outcome `allowed`, `denied` or
        # `failed` (no answer: a timeout or a refused connection). The HTTP side turns these
        # into a histogram; nothing here depends on it.
        self.on_callback: list[Callable[[str, str, float], None]] = []

    @property
    def open(self) -> bool:
        """True when everything is allowed (no decision needs to wait for anything)."""
        cfg = self.config
        plain = not cfg.apps and not (cfg.on_connect or cfg.on_publish or cfg.on_play)
        d = cfg.default
        return (
            plain
            and all(r.policy == "allow" and not r.allow and not r.deny for r in (d.publish, d.play))
            and not (d.on_connect or d.on_publish or d.on_play)
        )

    async def decide(self, req: Request) -> Decision:
        """The decision about `req`, slowed down after repeated refusals from its address."""
        delay = self._delay(req.ip)
        if delay:
            await asyncio.sleep(delay)
        try:
            decision = await self._decide(req)
        except Exception as err:  # a bug here must refuse, not accept
            log.exception("access: deciding %s %s/%s failed", req.action, req.app, req.name)
            decision = Decision(False, reason=f"internal error: {err!r}")
        self._count(req.ip, decision.allowed)
        return decision

    async def _decide(self, req: Request) -> Decision:
        cfg = self.config
        app = cfg.app(req.app)
        if app is None:
            return Decision(False, reason="application not declared")
        if req.action == "connect":
            url = cfg._url(app, "connect")
            if url:
                return await self._callback(url, req)
            return Decision(True)
        rule: Rule = getattr(app, req.action)
        where = _ip_verdict(rule, req.ip)
        if where:
            return Decision(False, reason=where)
        if rule.policy == "allow":
            return Decision(True, req.name)
        if rule.policy == "deny":
            return Decision(False, reason=f"{req.action} is denied here")
        if rule.policy == "key":
            return _key_decision(app, req)
        url = cfg._url(app, req.action)
        assert url is not None  # validate() checked it
        return await self._callback(url, req)

    # --- callbacks -------------------------------------------------------------------------

    async def _callback(self, url: str, req: Request) -> Decision:
        started = time.monotonic()
        decision, answered = await self._ask(url, req)
        if self.on_callback:
            elapsed = time.monotonic() - started
            outcome = "failed" if not answered else "allowed" if decision.allowed else "denied"
            for observer in list(self.on_callback):
                observer(req.action, outcome, elapsed)
        return decision

    async def _ask(self, url: str, req: Request) -> tuple[Decision, bool]:
        """The callback's decision, and whether the service answered at all."""
        import aiohttp

        cfg = self.config
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession()
        started = time.monotonic()
        try:
            if cfg.callback_format == "nginx":
                data = nginx_form(req)
                request = self._http.post(
                    url,
                    data=data,
                    allow_redirects=False,
                    timeout=aiohttp.ClientTimeout(total=cfg.callback_timeout),
                )
            else:
                request = self._http.post(
                    url,
                    json=json_body(req),
                    allow_redirects=False,
                    timeout=aiohttp.ClientTimeout(total=cfg.callback_timeout),
                )
            async with request as response:
                status = response.status
                body = await response.read()
                location = response.headers.get("Location", "")
        except (TimeoutError, aiohttp.ClientError, OSError) as err:
            what = "timed out" if isinstance(err, asyncio.TimeoutError) else f"failed: {err}"
            log.warning(
                "access: %s callback for %s/%s %s after %.1f s; %s",
                req.action,
                req.app,
                req.name,
                what,
                time.monotonic() - started,
                "allowing (fail open)" if cfg.fail_open else "denying",
            )
            return Decision(cfg.fail_open, req.name, reason=f"callback {what}"), False
        if cfg.callback_format == "nginx":
            return _nginx_answer(req, status, location), True
        return _json_answer(req, status, body), True

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    # --- slowing down guesses -------------------------------------------------------------

    def _delay(self, ip: str) -> float:
        count, _ = self._failures.get(ip, (0, 0.0))
        return 0.0 if count == 0 else min(8.0, 0.25 * 2 ** (count - 1))

    def _count(self, ip: str, allowed: bool) -> None:
        if allowed:
            self._failures.pop(ip, None)
            return
        now = time.monotonic()
        count, last = self._failures.get(ip, (0, now))
        if now - last > 600:  # ten quiet minutes forgive
            count = 0
        if len(self._failures) > 10000:
            self._failures.clear()
        self._failures[ip] = (count + 1, now)


def _ip_verdict(rule: Rule, ip: str) -> str:
    """Why `ip` is refused by the lists of `rule`; "" if it is not."""
    if not (rule.allow or rule.deny):
        return ""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return f"address {ip!r} is not an IP address"
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    if any(addr in ipaddress.ip_network(n, strict=False) for n in rule.deny):
        return f"address {ip} is denied"
    if rule.allow and not any(addr in ipaddress.ip_network(n, strict=False) for n in rule.allow):
        return f"address {ip} is not allowed"
    return ""


def _key_decision(app: AppAccess, req: Request) -> Decision:
    query = dict(parse_qsl(req.query, keep_blank_values=True))
    if req.action == "publish":
        # OBS: the key is the stream name. ffmpeg: the key in the URL's last part, or as
        # `name?key=`, where it must be the key of that very name.
        for name, stored in app.keys.items():
            if key_matches(req.name, stored):
                return Decision(True, name)
        secret = query.get("key")
        if secret is not None:
            own = app.keys.get(req.name)
            if own is not None and key_matches(secret, own):
                return Decision(True, req.name)
            return Decision(False, reason="wrong stream key")
        return Decision(False, reason="no stream key" if not app.keys else "wrong stream key")
    token = query.get("token", query.get("key"))
    if token is None:
        return Decision(False, reason="no play token")
    if any(key_matches(token, stored) for stored in app.play_keys):
        return Decision(True, req.name)
    return Decision(False, reason="wrong play token")


def json_body(req: Request) -> dict[str, Any]:
    return {
        "action": req.action,
        "app": req.app,
        "stream": req.name,
        "query": dict(parse_qsl(req.query, keep_blank_values=True)),
        "client": {"ip": req.ip, "port": req.port, "id": req.client_id},
        "tc_url": req.tc_url,
        "flash_ver": req.flash_ver,
        "server_id": SERVER_ID,
    }


def nginx_form(req: Request) -> list[tuple[str, str]]:
    """nginx-rtmp's notify body: its fixed fields, then the client's own query arguments."""
    call = {"connect": "connect", "publish": "publish", "play": "play"}[req.action]
    fields = [
        ("call", call),
        ("addr", req.ip),
        ("clientid", req.client_id),
        ("app", req.app),
        ("flashver", req.flash_ver),
        ("swfurl", req.swf_url),
        ("tcurl", req.tc_url),
        ("pageurl", req.page_url),
    ]
    if req.action != "connect":
        fields += [("name", req.name), ("type", req.publish_type)]
    return fields + parse_qsl(req.query, keep_blank_values=True)


def _json_answer(req: Request, status: int, body: bytes) -> Decision:
    if not 200 <= status < 300:
        return Decision(False, reason=f"callback answered {status}")
    name = req.name
    record: bool | None = None
    push: tuple[Any, ...] = ()
    if body.strip():
        try:
            answer = json.loads(body)
        except ValueError:
            answer = None
        if isinstance(answer, Mapping):
            new = answer.get("name")
            if isinstance(new, str) and new:
                name = new
            rec = answer.get("record")
            if isinstance(rec, bool):
                record = rec
            # Push targets for this stream: URLs (or {url, name, tracks} objects), each
            # checked when the push starts (a bad one is logged and left out).
            targets = answer.get("push")
            if isinstance(targets, list) and req.action == "publish":
                push = tuple(targets)
    return Decision(True, name, record=record, push=push)


def _nginx_answer(req: Request, status: int, location: str) -> Decision:
    """2xx allows; 3xx with a Location renames the stream (nginx-rtmp takes the new name
    from the Location, the last part of a URL); anything else denies."""
    if 200 <= status < 300:
        return Decision(True, req.name)
    if 300 <= status < 400 and location:
        path = urlsplit(location).path if "://" in location else location
        new = path.rstrip("/").rsplit("/", 1)[-1]
        if new:
            return Decision(True, new, reason=f"renamed by the callback ({status})")
    return Decision(False, reason=f"callback answered {status}")


def access_config(config: ServerConfig) -> AccessConfig:
    """The access rules of a server configuration: its `[access]` keys and `[apps.NAME]`
    tables (or the `AccessConfig` a library user gave as `access`)."""
    if isinstance(config.access, AccessConfig):
        return config.access

    def app_access(app: AppConfig | None) -> AppAccess:
        if app is None:
            return AppAccess(
                publish=Rule("callback" if config.on_publish else "allow"),
                play=Rule("callback" if config.on_play else "allow"),
            )
        return AppAccess(
            publish=Rule(app.publish, list(app.publish_allow), list(app.publish_deny)),
            play=Rule(app.play, list(app.play_allow), list(app.play_deny)),
            keys=dict(app.keys),
            play_keys=list(app.play_keys),
            on_connect=app.on_connect or None,
            on_publish=app.on_publish or None,
            on_play=app.on_play or None,
        )

    return AccessConfig(
        apps={name: app_access(app) for name, app in config.apps.items()},
        default=app_access(None),
        on_connect=config.on_connect or None,
        on_publish=config.on_publish or None,
        on_play=config.on_play or None,
        callback_format=config.callback_format,
        callback_timeout=config.callback_timeout,
        fail_open=config.fail_open,
    )
