"""The one configuration tree: every default, type, bound and help text of the server.

This module owns the settings of `rtmp2-server` and of `RTMPServer`: the dataclasses that
library users build (`ServerConfig`, its `RelayConfig`, `Listener`, `AppConfig`), the table of
keys derived from them (`KEYS`: the section of the TOML file each key lives in, its type and
the values it accepts), reading a TOML file, turning command-line flags into values, checking
every value, and printing the effective configuration back as TOML. The help text of each key
is the attribute docstring of its field, read from this file, so it is written once.

Names: a key is spelled the same everywhere. In the file it sits in its section
(`[limits] max_connections_per_ip = 64`); on the command line it is the same name with dashes
(`--max-connections-per-ip 64`): names are unique across sections, so flags need no prefix.
A flag overrides the file.

Nothing here opens a socket; the TLS certificate and key are only loaded, to check them.
"""

from __future__ import annotations

import argparse
import ast
import inspect
import ipaddress
import itertools
import json
import math
import ssl
import sys
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

MiB: Final = 1024 * 1024

SCHEMES: Final = ("rtmp", "rtmps")
DEFAULT_PORTS: Final = {"rtmp": 1935, "rtmps": 443}  # rtmps:// without a port: 443 (ffmpeg's)


class ConfigError(ValueError):
    """A value that is not accepted: names the key, what was given and what is accepted."""

    def __init__(self, key: str, given: str, accepted: str, source: str = "") -> None:
        self.key = key
        self.given = given
        self.accepted = accepted
        self.source = source
        super().__init__(self.line())

    def line(self) -> str:
        where = f"{self.source}: " if self.source else ""
        return f"{where}{self.key}: {self.given}; expected {self.accepted}"

    def at(self, source: str) -> ConfigError:
        return ConfigError(self.key, self.given, self.accepted, source)


# --- the tree -----------------------------------------------------------------------------


def _key(
    section: str,
    default: Any = MISSING,
    *,
    kind: str,
    lo: float | None = None,
    hi: float | None = None,
    choices: tuple[str, ...] = (),
    inf: bool = False,
    flags: tuple[str, ...] = (),
    factory: Callable[[], Any] | None = None,
    file_default: Any = MISSING,
    empty: bool = False,
) -> Any:
    """A dataclass field that is also a configuration key (see `Key` for the meta data)."""
    meta = _meta(section, kind, lo, hi, choices, inf, flags, file_default, empty)
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def _meta(
    section: str,
    kind: str,
    lo: float | None = None,
    hi: float | None = None,
    choices: tuple[str, ...] = (),
    inf: bool = False,
    flags: tuple[str, ...] = (),
    file_default: Any = MISSING,
    empty: bool = False,
) -> dict[str, Any]:
    return {
        "empty": empty,
        "section": section,
        "kind": kind,
        "lo": lo,
        "hi": hi,
        "choices": choices,
        "inf": inf,
        "flags": flags,
        "file_default": file_default,
    }


@dataclass(frozen=True)
class Listener:
    """One listening address: `rtmp://HOST:PORT` (plain) or `rtmps://HOST:PORT` (TLS)."""

    scheme: str
    """"rtmp" or "rtmps"."""
    host: str
    """The address to bind ("0.0.0.0", "::", "127.0.0.1", a name)."""
    port: int
    """The TCP port; 0 picks a free one (see `RTMPServer.ports`)."""

    @property
    def tls(self) -> bool:
        return self.scheme == "rtmps"

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    @classmethod
    def parse(cls, url: str) -> Listener:
        """`rtmp://HOST:PORT` or `rtmps://HOST:PORT` (IPv6 in brackets); ValueError says why."""
        scheme, sep, rest = url.partition("://")
        if not sep or scheme not in SCHEMES:
            raise ValueError("not rtmp:// or rtmps://")
        rest = rest.rstrip("/")
        if "/" in rest or "?" in rest:
            raise ValueError("a listener has no path")
        if rest.startswith("["):
            host, bracket, tail = rest[1:].partition("]")
            if not bracket or (tail and not tail.startswith(":")):
                raise ValueError("bad [IPv6] address")
            port_text = tail[1:] if tail else ""
        else:
            host, colon, port_text = rest.rpartition(":")
            if not colon:
                host, port_text = rest, ""
            elif ":" in host:
                raise ValueError("an IPv6 address goes in brackets: [::1]:1935")
        if not host:
            raise ValueError("no host")
        if not port_text:
            return cls(scheme, host, DEFAULT_PORTS[scheme])
        if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
            raise ValueError(f"port {port_text!r} is not 0 to 65535")
        return cls(scheme, host, int(port_text))


TRACKS: Final = ("default", "all")


@dataclass(frozen=True)
class PushTarget:
    """Where a push (restream) sends a stream: `rtmp[s]://HOST[:PORT]/APP[?QUERY]`.

    The stream is published there as the local stream's name, or as `name` when given (the
    stream key of YouTube, Twitch, Facebook: their "server URL + stream key" form), with the
    URL's query string kept after it (`NAME?QUERY`). Written as text: the URL, then options
    separated by spaces (`rtmp://host/app name=KEY tracks=all`, as nginx-rtmp's `push`
    directive takes them); in the file also as a table (`{url = "...", name = "KEY"}`).
    """

    url: str
    """The server URL: rtmp:// or rtmps://, a host, an application (app or app/instance)."""
    name: str = ""
    """The stream name at the target; empty: the local stream's name."""
    tracks: str = "default"
    """Of an Enhanced RTMP multitrack publish: the default track only (as an ordinary
    stream, for platforms without multitrack), or all tracks as they are."""

    @classmethod
    def parse(cls, value: Any) -> PushTarget:
        """A target from its text or table (or a target); ValueError says what is wrong."""
        if isinstance(value, PushTarget):
            return value
        if isinstance(value, str):
            url, *options = value.split()
            if not value.strip():
                raise ValueError("empty")
            kwargs: dict[str, Any] = {}
            for option in options:
                opt, eq, arg = option.partition("=")
                if not eq or opt not in ("name", "tracks"):
                    raise ValueError(f"option {opt!r}: expected name=KEY or tracks=all")
                kwargs[opt] = arg
            target = cls(url, **kwargs)
        elif isinstance(value, Mapping):
            unknown = set(value) - {"url", "name", "tracks"}
            if unknown or not all(isinstance(v, str) for v in value.values()):
                raise ValueError("a table of url, name, tracks (strings)")
            if "url" not in value:
                raise ValueError("no url")
            target = cls(**value)
        else:
            raise ValueError(f"got {_type_name(value)}")
        target.check()
        return target

    def check(self) -> None:
        scheme, sep, rest = self.url.partition("://")
        if not sep or scheme.lower() not in SCHEMES:
            raise ValueError("not rtmp:// or rtmps://")
        host, _, path = rest.partition("/")
        if not host or host.startswith(":"):
            raise ValueError("no host")
        if not path.partition("?")[0].strip("/"):
            raise ValueError("no application (rtmp://HOST/APP)")
        if self.tracks not in TRACKS:
            raise ValueError(f"tracks={self.tracks!r}: expected default or all")
        if any(c.isspace() for c in self.name) or "?" in self.name:
            raise ValueError("a name has no spaces and no query string")

    def split(self, local_name: str) -> tuple[str, str]:
        """(the URL to connect to, without the query; the name to publish, with it)."""
        base, _, query = self.url.partition("?")
        name = self.name or local_name
        return base.rstrip("/"), f"{name}?{query}" if query else name

    def text(self) -> str:
        """The text form (what `parse` reads back)."""
        options = [f"name={self.name}"] if self.name else []
        if self.tracks != "default":
            options.append(f"tracks={self.tracks}")
        return " ".join([self.url, *options])


def hide_secrets(text: str) -> str:
    """A push target's text for a log or an error: the values of its query string and of a
    name= option hidden (stream keys)."""
    out = []
    for word in text.split(" "):
        if word.startswith("name="):
            word = "name=***"
        elif "?" in word:
            base, _, query = word.partition("?")
            word = (
                base
                + "?"
                + "&".join(
                    f"{k}=***" if eq else "***"
                    for k, eq, _v in (q.partition("=") for q in query.split("&"))
                )
            )
        out.append(word)
    return " ".join(out)


POLICIES: Final = ("allow", "deny", "key", "callback")


@dataclass
class AppConfig:
    """One declared application (`[apps.NAME]`, like nginx-rtmp's `application` blocks):
    whether it records, and who may publish and play (see `server/access.py`)."""

    record: bool = _key("apps", True, kind="bool")
    """Record the streams published to this application (when the server records)."""
    publish: str = _key("apps", "allow", kind="str", choices=POLICIES)
    """Who may publish: allow, deny, key (a stream key from `keys`) or callback (on_publish)."""
    play: str = _key("apps", "allow", kind="str", choices=POLICIES)
    """Who may play: allow, deny, key (a token from `play_keys`) or callback (on_play)."""
    publish_allow: list[str] = field(default_factory=list, metadata=_meta("apps", "cidr_list"))
    """Addresses (CIDR) that may publish; empty: any not denied."""
    publish_deny: list[str] = field(default_factory=list, metadata=_meta("apps", "cidr_list"))
    """Addresses (CIDR) that may not publish, checked first."""
    play_allow: list[str] = field(default_factory=list, metadata=_meta("apps", "cidr_list"))
    """Addresses (CIDR) that may play; empty: any not denied."""
    play_deny: list[str] = field(default_factory=list, metadata=_meta("apps", "cidr_list"))
    """Addresses (CIDR) that may not play, checked first."""
    keys: dict[str, str] = field(default_factory=dict, metadata=_meta("apps", "key_map"))
    """Public stream name = its secret publish key (clear, or sha256:<hex>)."""
    play_keys: list[str] = field(default_factory=list, metadata=_meta("apps", "str_list"))
    """Tokens (?token= or ?key=) that may play any stream here (clear, or sha256:<hex>)."""
    on_connect: str = _key("apps", "", kind="str", empty=True)
    on_publish: str = _key("apps", "", kind="str", empty=True)
    on_play: str = _key("apps", "", kind="str", empty=True)
    """Callback URLs of this application; empty: the global ones."""
    pull: str = _key("apps", "", kind="url", empty=True)
    """rtmp[s]://HOST[:PORT]/APP of an origin: a play of NAME here that is not published
    here pulls URL/NAME from it, for as long as it has players (see `pull_idle`); empty: no
    pull."""
    pull_static: list[str] = field(default_factory=list, metadata=_meta("apps", "url_list"))
    """Streams pulled from an origin at all times, each rtmp[s]://HOST[:PORT]/APP/NAME,
    published here as NAME (reconnecting with backoff, see `pull_retry_max`)."""
    push: list[PushTarget] = field(default_factory=list, metadata=_meta("apps", "push_list"))
    """Push (restream) every stream published here to these targets, as URL/NAME (see
    `PushTarget`), in addition to the `push` of [push]."""


@dataclass
class RelayConfig:
    """Bounds and waits of the relay (live playback of every publish): the `[play]` section."""

    play_wait: float = _key("play", 10.0, kind="float", lo=0, inf=True)
    """Seconds a player of a stream not published yet waits before
    NetStream.Play.StreamNotFound; 0 refuses at once, inf waits forever."""
    gop_cache: bool = _key("play", True, kind="bool")
    """Keep the GOP from the last keyframe so that late joiners start with a picture."""
    gop_max_messages: int = _key(
        "play", 4096, kind="int", lo=0, hi=10_000_000, flags=("--gop-cache-messages",)
    )
    """Audio, video and configuration messages the GOP cache holds at most; a longer GOP is
    not cached (late joiners then wait for the next keyframe); 0 disables the cache."""
    gop_max_bytes: int = _key(
        "play", 32 * MiB, kind="int", lo=0, hi=1 << 40, flags=("--gop-cache-bytes",)
    )
    """Largest GOP kept for late joiners, in bytes."""
    gop_cache_idle: float = _key("play", math.inf, kind="float", lo=0, inf=True)
    """Seconds a stream nobody plays keeps caching its GOP after its last player left (a
    stream never played caches nothing); its next first player then waits for a keyframe, as
    with nginx-rtmp, and starts the cache for the players after it. inf (the default): every
    stream caches, played or not; 0: only while played. Unplayed streams then cost no
    memory and about 40% less CPU (an ingest server that records or pushes)."""
    player_max_buffer: int = _key(
        "play", 4 * MiB, kind="int", lo=1, hi=1 << 40, flags=("--player-buffer",)
    )
    """Bytes queued for a player above which it drops to the next keyframe."""
    republish_grace: float = _key("publish", 10.0, kind="float", lo=0, inf=True)
    """Seconds players stay attached, told nothing, when the publish they play ends: a
    publisher that returns (or takes over) within them is played on seamlessly, with
    monotonic timestamps, from its first keyframe; after them players get
    NetStream.Play.UnpublishNotify and Stream EOF. 0: at once; inf: never."""


@dataclass
class ServerConfig:
    """Everything an `RTMPServer` needs to know; every per-peer bound lives here.

    Library users pass keywords (`ServerConfig(port=0, record_dir=path)`); the command line
    and the TOML file fill the same fields (`resolve`). Call `validate()` to check it.
    """

    # [server]
    host: str = _key("server", "0.0.0.0", kind="str", empty=True)
    """Address of the plain RTMP listener that --host/--port make (a shorthand for
    --listen rtmp://HOST:PORT); empty: every interface, IPv4 and IPv6."""
    port: int = _key("server", 1935, kind="int", lo=0, hi=65535)
    """TCP port of that listener (0: a free one)."""
    listen: list[Listener] = field(default_factory=list, metadata=_meta("server", "listen"))
    """Listeners, each rtmp://HOST:PORT or rtmps://HOST:PORT (repeatable); none: the one of
    host and port."""
    tls_cert: Path | None = field(default=None, metadata=_meta("server", "path"))
    """PEM certificate (chain) of the rtmps listeners."""
    tls_key: Path | None = field(default=None, metadata=_meta("server", "path"))
    """PEM private key of the rtmps listeners (unencrypted)."""
    workers: int = _key("server", 1, kind="workers", lo=0, hi=256)
    """Processes that accept on the same listeners (SO_REUSEPORT), each on its own core: a
    number, or auto (0): one per CPU. Streams published to one are played from any other;
    see README "Workers"."""
    # [limits]
    chunk_size: int = _key("limits", 4096, kind="int", lo=128, hi=16_777_215)
    """The chunk size we send with, in bytes (announced at connect): from 128, the initial
    size of the protocol, to 2^24-1, the largest message."""
    max_message_size: int = _key("limits", 16 * MiB, kind="int", lo=4096, hi=16 * MiB)
    """Largest RTMP message accepted from a peer, in bytes."""
    window_ack_size: int = _key("limits", 5_000_000, kind="int", lo=1, hi=0x7FFFFFFF)
    """Window acknowledgement size we announce, in bytes."""
    max_chunk_size: int = _key("limits", MiB, kind="int", lo=128, hi=0x7FFFFFFF)
    """Largest chunk size a peer may set, in bytes."""
    max_chunk_streams: int = _key("limits", 64, kind="int", lo=1, hi=65598)
    """Chunk streams a peer may have open at once."""
    max_partial_bytes: int = _key("limits", 0, kind="int", lo=0, hi=1 << 40)
    """Bytes of messages not complete yet that one peer may have, summed over its chunk
    streams; 0: max_message_size + 1 MiB."""
    max_connections: int = _key("limits", 4096, kind="int", lo=1, hi=10_000_000)
    """Connections at once; more are closed at accept (also bounded by the fd limit)."""
    max_connections_per_ip: int = _key("limits", 64, kind="int", lo=0, hi=10_000_000)
    """Connections at once from one address; 0: no limit."""
    max_name_length: int = _key("limits", 256, kind="int", lo=1, hi=65535)
    """Longest application or stream name accepted, in characters (nginx-rtmp's bound)."""
    max_pending_bytes: int = _key("limits", 8 * MiB, kind="int", lo=1, hi=1 << 40)
    """Bytes of media held per publish while access is decided (a callback); above this the
    publisher's socket is not read until the answer (nothing is dropped)."""
    # [timeouts]
    handshake_timeout: float = _key("timeouts", 10.0, kind="float", lo=0)
    """Seconds from accept to a complete connect (TLS included), however the peer paces its
    bytes: a deadline, not a silence timer; 0: none."""
    start_timeout: float = _key("timeouts", 30.0, kind="float", lo=0)
    """Seconds from accept to the first publish or play; 0: no deadline."""
    idle_timeout: float = _key("timeouts", 30.0, kind="float", lo=0)
    """Close a publisher (or a connection doing nothing) after this many seconds without one
    complete message; 0: never. Players are not idle while they play."""
    drain_timeout: float = _key("timeouts", 5.0, kind="float", lo=0)
    """At shutdown (SIGTERM), seconds to wait for publishers asked to reconnect (Enhanced
    RTMP v2 Reconnect Request) to leave before their connections are closed."""
    # [record]
    record_dir: Path | None = field(
        default=None, metadata=_meta("record", "path", file_default=Path("recordings"))
    )
    """Where recordings go, as <record_dir>/<app>/<stream>-<UTC time>.flv; None (library)
    or record = false: do not record."""
    record_flush_interval: float = _key("record", 1.0, kind="float", lo=0)
    """Seconds between writes of buffered recording data to the file."""
    record_fsync_interval: float = _key("record", 0.0, kind="float", lo=0)
    """Seconds between fsyncs of a recording; 0: never (the kernel decides)."""
    # [publish]
    republish: str = _key("publish", "takeover", kind="str", choices=("takeover", "refuse"))
    """A publish of a name already being published: takeover (the new publisher replaces
    the old one) or refuse (the new one gets NetStream.Publish.BadName)."""
    merge_reads: float = _key("publish", 0.0, kind="float", lo=0, hi=1.0)
    """Merged reads (SRS's `mr`): after a small read (under 64 KiB) from a publisher, wait up
    to this many seconds before the next, so that a read takes what arrived meanwhile in one
    go; fewer reads cost less CPU per stream and add up to this much latency; a larger read
    (a bulk push, a burst) is followed at once; 0: read as soon as bytes arrive."""
    # [pull]
    pull: list[str] = field(default_factory=list, metadata=_meta("pull", "app_urls"))
    """APP=URL (repeatable): a play of APP/NAME that is not published here pulls URL/NAME
    (URL: rtmp[s]://HOST[:PORT]/APP of an origin) while it has players; as `pull` in
    [apps.APP]."""
    pull_idle: float = _key("pull", 5.0, kind="float", lo=0)
    """Seconds a pull on demand goes on after its last player left (a player that comes
    back within them costs the origin no new connection)."""
    pull_retry_max: float = _key("pull", 30.0, kind="float", lo=0.1)
    """Longest wait between two attempts of a pull (the wait doubles from 0.5 s after each
    failure)."""
    pull_max: int = _key("pull", 256, kind="int", lo=1, hi=1_000_000)
    """Pulls at once, on demand and static: a play that would start one more is not pulled
    (it waits `play_wait` as for a stream not published)."""
    # [push]
    push: dict[str, list[PushTarget]] = field(
        default_factory=dict, metadata=_meta("push", "push_map")
    )
    """Push (restream) every stream published to APP to URL/NAME, as APP=URL (repeatable;
    options after the URL: name=KEY for a fixed stream key, tracks=all); in the file a table
    APP = [URL, ...]."""
    push_backoff_min: float = _key("push", 1.0, kind="float", lo=0.01)
    """Seconds before a push reconnects after its first failure; doubled after each one."""
    push_backoff_max: float = _key("push", 30.0, kind="float", lo=0.01)
    """Most seconds between two reconnects of a push; a push that lasted this long starts
    again from push_backoff_min."""
    push_max_buffer: int = _key("push", 4 * MiB, kind="int", lo=1, hi=1 << 40)
    """Bytes queued for one push target above which it drops to the next keyframe (the
    publisher and the other targets never wait for it)."""
    push_timeout: float = _key("push", 10.0, kind="float", lo=0.01)
    """Seconds a push target has to accept the connection and to answer each command."""
    # [access]
    on_connect: str = _key("access", "", kind="str", empty=True)
    """HTTP callback URL that decides each connect (every application); empty: none."""
    on_publish: str = _key("access", "", kind="str", empty=True)
    """HTTP callback URL that decides each publish where no application rule says
    otherwise; empty: none."""
    on_play: str = _key("access", "", kind="str", empty=True)
    """HTTP callback URL that decides each play where no application rule says otherwise."""
    callback_format: str = _key("access", "json", kind="str", choices=("json", "nginx"))
    """The callbacks' request: json, or nginx (nginx-rtmp's notify form, exactly)."""
    callback_timeout: float = _key("access", 5.0, kind="float", lo=0.01)
    """Seconds a callback may take; then it counts as a refusal (or as allowed, fail_open)."""
    fail_open: bool = _key("access", False, kind="bool")
    """Allow when a callback service cannot be reached or times out (default: deny)."""
    # [webhook]
    webhook: str = _key("webhook", "", kind="str", empty=True)
    """URL that signed JSON event notifications are POSTed to; empty: none."""
    webhook_secret: str = _key("webhook", "", kind="str", empty=True)
    """HMAC-SHA256 key of the webhooks' X-Rtmp2-Signature header."""
    # [http]
    http: str = _key("http", "", kind="str", empty=True, file_default="127.0.0.1:8080")
    """HOST:PORT of the HTTP listener (JSON API, /metrics; IPv6 in brackets); empty: none
    (the library's default; the command line's is 127.0.0.1:8080)."""
    api_token: str = _key("http", "", kind="str", empty=True)
    """Bearer token the HTTP API requires (Authorization: Bearer TOKEN); required when http
    binds anything but a loopback address; empty: no token."""
    # [log]
    log_level: str = _key("log", "info", kind="str", choices=("debug", "info", "warning", "error"))
    """Log level."""
    # [play]
    relay: RelayConfig | None = field(default_factory=RelayConfig)
    """Live playback of every publish (GOP cache, play wait, player bounds); None: none."""
    # [apps.NAME]
    apps: dict[str, AppConfig] = field(default_factory=dict)
    """Declared applications, by name, with their access rules; when any is declared, a
    connect to another one is refused."""
    access: Any = None
    """An `AccessConfig` given by a library user instead of the keys and `apps`."""

    def __post_init__(self) -> None:
        if self.max_partial_bytes == 0:
            self.max_partial_bytes = self.max_message_size + MiB

    def listeners(self) -> list[Listener]:
        """The listeners in force: `listen`, or the one plain listener of host and port."""
        return list(self.listen) or [Listener("rtmp", self.host, self.port)]

    def validate(self) -> None:
        """Raise `ConfigError` for the first value not accepted (the checks of `resolve`)."""
        for key in KEYS:
            if key.name in _SWITCHES:
                continue
            value = key.get(self)
            if value is None and key.kind == "path":
                continue
            if key.kind == "listen":
                value = [lst.url for lst in value]
            key.check(value)
        _check_together(self)


# --- keys ---------------------------------------------------------------------------------

SECTIONS: Final = (
    "server",
    "limits",
    "timeouts",
    "record",
    "publish",
    "pull",
    "play",
    "push",
    "access",
    "webhook",
    "http",
    "log",
)
"""The sections of the file, in the order --print-config writes them; then [apps.NAME]."""

_SWITCHES: Final = {
    # Keys of the file and the command line that are not fields: whether to record, whether
    # to relay (the library says None instead).
    "record": ("record", "Record every stream (--no-record: do not)."),
    "play": ("play", "Play streams to players (--no-play: refuse every play request)."),
}

_KIND_NAMES: Final = {
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "str": "a string",
    "path": "a file or directory name",
    "listen": "a list of rtmp://HOST:PORT or rtmps://HOST:PORT",
    "str_list": "a list of strings",
    "cidr_list": "a list of addresses or CIDR networks",
    "key_map": "a table of stream name = key",
    "workers": "auto, or a number of processes",
    "url": "an rtmp[s]://HOST[:PORT]/APP URL",
    "url_list": "a list of rtmp[s]://HOST[:PORT]/APP/NAME URLs",
    "app_urls": "a list of APP=rtmp[s]://HOST[:PORT]/APP",
    "push_list": "a list of push targets (rtmp[s]://HOST/APP [name=KEY] [tracks=all])",
    "push_map": "APP=URL items, or a table of APP = [URL, ...] (push targets)",
}


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a table"
    return type(value).__name__


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def _show(value: Any) -> str:
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if isinstance(value, str):
        return json.dumps(value)
    return str(value)


@dataclass(frozen=True)
class Key:
    """One configuration key: where it lives, its type and the values it accepts."""

    name: str
    """The name in the file and (with dashes) on the command line."""
    section: str
    """The section of the file it goes in."""
    kind: str
    """int, float, bool, str, path or listen."""
    default: Any
    """The value when neither the file nor a flag gives one (the command line's default)."""
    help: str
    """What it is: the field's attribute docstring."""
    owner: str = "server"
    """Which dataclass has the field: server (ServerConfig), relay (RelayConfig) or switch."""
    lo: float | None = None
    hi: float | None = None
    choices: tuple[str, ...] = ()
    inf: bool = False
    """Whether inf is accepted (a float key)."""
    flags: tuple[str, ...] = ()
    """Older flag names that still work."""
    empty: bool = False
    """Whether an empty string is accepted (a str key)."""

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def dotted(self) -> str:
        return f"{self.section}.{self.name}"

    def accepted(self) -> str:
        """What it accepts, in words."""
        if self.choices:
            return "one of " + ", ".join(self.choices)
        text = _KIND_NAMES[self.kind]
        if self.kind in ("int", "float", "workers"):
            if self.lo is not None and self.hi is not None:
                text += f" from {_num(self.lo)} to {_num(self.hi)}"
            elif self.lo is not None:
                text += f" of at least {_num(self.lo)}"
            if self.kind == "float":
                text += ", or inf" if self.inf else " (not inf)"
        return text

    def get(self, config: ServerConfig) -> Any:
        if self.owner == "relay":
            return getattr(config.relay or RelayConfig(), self.name)
        return getattr(config, self.name)

    def check(self, value: Any) -> Any:
        """The value as the key holds it (int for a float key becomes float); ConfigError if
        it is not accepted."""
        kind = self.kind

        def bad(what: str = "") -> ConfigError:
            given = f"got {_show(value)} ({what or _type_name(value)})"
            return ConfigError(self.name, given, self.accepted())

        if kind == "bool":
            if not isinstance(value, bool):
                raise bad()
            return value
        if kind == "int":
            if isinstance(value, bool) or not isinstance(value, int):
                raise bad()
            self._range(value, bad)
            return value
        if kind == "float":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise bad()
            value = float(value)
            if math.isnan(value):
                raise bad("not a number")
            if math.isinf(value) and (value < 0 or not self.inf):
                raise bad("out of range")
            self._range(value, bad)
            return value
        if kind == "workers":
            # "auto" (or 0): one per CPU, counted when the server starts.
            if value == "auto":
                return 0
            if isinstance(value, str) and value.isdigit():
                value = int(value)
            if isinstance(value, bool) or not isinstance(value, int):
                raise bad()
            self._range(value, bad)
            return value
        if kind in ("str", "path"):
            if isinstance(value, Path):
                value = str(value)
            if not isinstance(value, str):
                raise bad()
            if not value and not self.empty:
                raise bad("empty")
            if self.choices and value not in self.choices:
                raise bad("not one of them")
            return Path(value) if kind == "path" else value
        if kind in ("str_list", "cidr_list"):
            if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
                raise bad()
            if kind == "cidr_list":
                for item in value:
                    try:
                        ipaddress.ip_network(item, strict=False)
                    except ValueError:
                        raise bad(f"{item!r} is not an address or network") from None
            return list(value)
        if kind == "key_map":
            if not isinstance(value, dict) or not all(
                isinstance(k, str) and isinstance(v, str) and v for k, v in value.items()
            ):
                raise bad()
            for name, key in value.items():
                if key.startswith("sha256:") and (
                    len(key) != 71 or any(c not in "0123456789abcdefABCDEF" for c in key[7:])
                ):
                    raise bad(f"the key of {name!r} is not sha256:<64 hex digits>")
            return dict(value)
        if kind == "url":
            if not isinstance(value, str):
                raise bad()
            problem = url_problem(value) if value else ("" if self.empty else "empty")
            if problem:
                raise bad(problem)
            return value
        if kind == "url_list":
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise bad()
            for item in value:
                problem = url_problem(item, stream=True)
                if problem:
                    raise bad(f"{_show(item)}: {problem}")
            return list(value)
        if kind == "app_urls":
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise bad()
            for item in value:
                app, eq, url = item.partition("=")
                problem = "not APP=URL" if not eq or not app else url_problem(url)
                if problem:
                    raise bad(f"{_show(item)}: {problem}")
            return list(value)
        if kind == "push_list":
            if not isinstance(value, list):
                raise bad()
            return [self._target(item, bad) for item in value]
        if kind == "push_map":
            if isinstance(value, list):  # APP=URL items (the flags)
                table: dict[str, list[Any]] = {}
                for item in value:
                    app, eq, url = item.partition("=") if isinstance(item, str) else ("", "", "")
                    if not eq or not app or "://" in app:
                        shown = _show(hide_secrets(item)) if isinstance(item, str) else item
                        raise ConfigError(self.name, f"got {shown} (not APP=URL)", self.accepted())
                    table.setdefault(app, []).append(url)
                value = table
            if not isinstance(value, dict) or not all(isinstance(v, list) for v in value.values()):
                raise bad()
            return {app: [self._target(t, bad) for t in urls] for app, urls in value.items()}
        if kind == "listen":
            if not isinstance(value, list):
                raise bad()
            out = []
            for item in value:
                if not isinstance(item, str):
                    raise bad(f"an item is {_type_name(item)}")
                try:
                    out.append(Listener.parse(item))
                except ValueError as err:
                    raise ConfigError(
                        self.name, f"got {_show(item)} ({err})", self.accepted()
                    ) from None
            return out
        raise AssertionError(kind)

    def _target(self, item: Any, bad: Callable[[str], ConfigError]) -> PushTarget:
        try:
            return PushTarget.parse(item)
        except ValueError as err:
            # Named without its secrets (a stream key in the name or the query).
            shown = _show(hide_secrets(item)) if isinstance(item, str) else _type_name(item)
            raise ConfigError(self.name, f"got {shown} ({err})", self.accepted()) from None

    def _range(self, value: float, bad: Callable[[str], ConfigError]) -> None:
        if (self.lo is not None and value < self.lo) or (self.hi is not None and value > self.hi):
            raise bad("out of range")

    def parse_flag(self, text: str) -> Any:
        """The value of a flag's text, checked; ConfigError names the flag."""
        value: Any = text
        try:
            number = _NUMBER_TEXT.get(self.kind)
            if number is not None:
                convert, what = number
                try:
                    value = convert(text)
                except ValueError:
                    raise ConfigError(
                        self.flag, f"got {_show(text)} ({what})", self.accepted()
                    ) from None
            return self.check(value)
        except ConfigError as err:
            raise ConfigError(self.flag, err.given, err.accepted) from None


_NUMBER_TEXT: Final[dict[str, tuple[Callable[[str], Any], str]]] = {
    "int": (int, "not an integer"),
    "float": (float, "not a number"),
}


def _field_docs(cls: type) -> dict[str, str]:
    """The attribute docstrings of a dataclass, read from its source (one place for help)."""
    try:
        tree = ast.parse(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    docs = {}
    for node, nxt in itertools.pairwise(body):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(nxt, ast.Expr)
            and isinstance(nxt.value, ast.Constant)
            and isinstance(nxt.value.value, str)
        ):
            docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def _keys_of(cls: type, owner: str) -> list[Key]:
    docs = _field_docs(cls)
    out = []
    for f in fields(cls):
        meta = f.metadata
        if "section" not in meta:
            continue
        default = meta["file_default"]
        if default is MISSING:
            default = f.default
            if f.default_factory is not MISSING:
                default = f.default_factory()  # type: ignore[operator]
        out.append(
            Key(
                name=f.name,
                section=meta["section"],
                kind=meta["kind"],
                default=default,
                help=docs.get(f.name, ""),
                owner=owner,
                lo=meta["lo"],
                hi=meta["hi"],
                choices=meta["choices"],
                inf=meta["inf"],
                flags=meta["flags"],
                empty=meta["empty"],
            )
        )
    return out


def _build_keys() -> tuple[Key, ...]:
    keys = _keys_of(ServerConfig, "server") + _keys_of(RelayConfig, "relay")
    for name, (section, text) in _SWITCHES.items():
        keys.append(Key(name, section, "bool", True, text, owner="switch"))
    order = {s: i for i, s in enumerate(SECTIONS)}
    # The on/off switch first in its section, then the fields in their order.
    keys.sort(key=lambda k: (order[k.section], k.owner != "switch"))
    return tuple(keys)


KEYS: Final = _build_keys()
"""Every key of the file and the command line, section by section."""
KEY_BY_NAME: Final = {k.name: k for k in KEYS}
APP_KEYS: Final = {k.name: k for k in _keys_of(AppConfig, "app")}


# --- from the file and the flags to a ServerConfig ------------------------------------------


def read_file(path: Path) -> dict[str, Any]:
    """The values of a TOML file by key name (plus "apps"), checked; ConfigError otherwise."""
    source = str(path)
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as err:
        raise ConfigError(
            "--config", f"cannot read {source}: {err.strerror or err}", "a file"
        ) from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError("--config", f"{source} is not TOML ({err})", "a TOML file") from None
    try:
        return parse_tree(data)
    except ConfigError as err:
        raise err.at(source) from None


def parse_tree(data: Mapping[str, Any]) -> dict[str, Any]:
    """Checked values from a parsed TOML document; names in errors are dotted."""
    values: dict[str, Any] = {}
    sections = ", ".join(f"[{s}]" for s in (*SECTIONS, "apps.NAME"))
    for section, table in data.items():
        if section == "apps":
            values["apps"] = _parse_apps(table)
            continue
        if section not in SECTIONS:
            raise ConfigError(section, "unknown section", sections)
        if not isinstance(table, dict):
            raise ConfigError(section, f"got {_type_name(table)}", f"a table: {sections}")
        names = [k.name for k in KEYS if k.section == section]
        for name, value in table.items():
            key = KEY_BY_NAME.get(name)
            if key is None or key.section != section:
                hint = f" ({name} goes in [{key.section}])" if key is not None else ""
                raise ConfigError(
                    f"{section}.{name}", "unknown key", "one of " + ", ".join(names) + hint
                )
            try:
                values[name] = key.check(value)
            except ConfigError as err:
                raise ConfigError(key.dotted, err.given, err.accepted) from None
    return values


def _parse_apps(table: Any) -> dict[str, AppConfig]:
    if not isinstance(table, dict):
        raise ConfigError("apps", f"got {_type_name(table)}", "a table of [apps.NAME] tables")
    apps = {}
    for name, body in table.items():
        if not isinstance(body, dict):
            raise ConfigError(f"apps.{name}", f"got {_type_name(body)}", "a table")
        kwargs = {}
        for key_name, value in body.items():
            key = APP_KEYS.get(key_name)
            if key is None:
                raise ConfigError(
                    f"apps.{name}.{key_name}", "unknown key", "one of " + ", ".join(APP_KEYS)
                )
            try:
                kwargs[key_name] = key.check(value)
            except ConfigError as err:
                raise ConfigError(f"apps.{name}.{key_name}", err.given, err.accepted) from None
        apps[name] = AppConfig(**kwargs)
    return apps


def defaults() -> dict[str, Any]:
    """The command line's values when nothing is given."""
    values = {k.name: k.default for k in KEYS}
    values["apps"] = {}
    return values


def build(values: Mapping[str, Any], explicit: Iterable[str] = ()) -> ServerConfig:
    """A ServerConfig from checked values by key name; `explicit` names those that were given
    (host or port given with listen adds their rtmp listener in front)."""
    given = set(explicit)
    listen = list(values["listen"])
    if not listen or given & {"host", "port"}:
        plain = Listener("rtmp", values["host"], values["port"])
        if plain not in listen:
            listen.insert(0, plain)
    server_kw = {k.name: values[k.name] for k in KEYS if k.owner == "server"}
    server_kw["listen"] = listen
    server_kw["host"], server_kw["port"] = listen[0].host, listen[0].port
    if not values["record"]:
        server_kw["record_dir"] = None
    relay = None
    if values["play"]:
        relay = RelayConfig(**{k.name: values[k.name] for k in KEYS if k.owner == "relay"})
        relay.gop_cache = relay.gop_cache and relay.gop_max_messages > 0
    config = ServerConfig(**server_kw, relay=relay, apps=dict(values["apps"]))
    _check_together(config)
    return config


def _check_together(config: ServerConfig) -> None:
    """The checks that involve more than one key."""
    if config.max_partial_bytes < config.max_message_size:
        raise ConfigError(
            "max_partial_bytes",
            f"got {config.max_partial_bytes}, less than max_message_size "
            f"({config.max_message_size})",
            "at least max_message_size, or 0",
        )
    for name, app in config.apps.items():
        for action in ("publish", "play"):
            url = getattr(app, f"on_{action}") or getattr(config, f"on_{action}")
            if getattr(app, action) == "callback" and not url:
                raise ConfigError(
                    f"apps.{name}.{action}",
                    "got callback, but no on_" + action + " URL is set",
                    f"on_{action} in [apps.{name}] or [access]",
                )
    if config.http:
        try:
            host, _port = http_address(config.http)
        except ValueError as err:
            raise ConfigError("http", f"got {_show(config.http)} ({err})", "HOST:PORT") from None
        if not config.api_token and not _loopback(host):
            raise ConfigError(
                "api_token",
                f"not set, and http binds {host}, not a loopback address",
                "a token (--api-token), or http on 127.0.0.1",
            )
    listeners = config.listeners()
    seen = set()
    for lst in listeners:
        if (lst.host, lst.port) in seen and lst.port != 0:
            raise ConfigError("listen", f"got {lst.url} twice", "each address once")
        seen.add((lst.host, lst.port))
    if any(lst.tls for lst in listeners):
        tls_context(config)


def url_problem(url: str, *, stream: bool = False) -> str:
    """Why `url` is not rtmp[s]://HOST[:PORT]/APP (with `stream`: .../APP/NAME); "" when it
    is one."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in SCHEMES or not url.lower().startswith(parts.scheme + "://"):
        return "not rtmp:// or rtmps://"
    try:
        parts.port  # noqa: B018 (it raises for a port that is not one)
    except ValueError:
        return "bad port"
    if not parts.hostname:
        return "no host"
    path = parts.path.strip("/")
    if not path:
        return "no application (rtmp://HOST/APP)"
    if stream and "/" not in path:
        return "no stream name (rtmp://HOST/APP/NAME)"
    return ""


def http_address(text: str) -> tuple[str, int]:
    """The host and port of an `http` value ("127.0.0.1:8080", "[::1]:0"); ValueError says
    why not."""
    if text.startswith("["):
        host, bracket, tail = text[1:].partition("]")
        if not bracket or not tail.startswith(":"):
            raise ValueError("bad [IPv6]:PORT")
        port_text = tail[1:]
    else:
        host, colon, port_text = text.rpartition(":")
        if not colon:
            raise ValueError("no :PORT")
        if ":" in host:
            raise ValueError("an IPv6 address goes in brackets: [::1]:8080")
    if not host:
        raise ValueError("no host")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"port {port_text!r} is not 0 to 65535")
    return host, int(port_text)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def tls_context(config: ServerConfig) -> ssl.SSLContext:
    """The server-side TLS context of the rtmps listeners; ConfigError if the certificate or
    key is missing or cannot be loaded."""
    for name in ("tls_cert", "tls_key"):
        if getattr(config, name) is None:
            raise ConfigError(
                name,
                "not given, and an rtmps listener needs it",
                f"a PEM file (--{name.replace('_', '-')})",
            )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(str(config.tls_cert), str(config.tls_key))
    except OSError as err:  # ssl.SSLError is an OSError
        detail = getattr(err, "reason", None) or err.strerror or str(err)
        raise ConfigError(
            "tls_cert/tls_key",
            f"cannot load {config.tls_cert} with {config.tls_key} ({detail})",
            "a PEM certificate and its unencrypted PEM private key",
        ) from None
    return context


# --- the command line ---------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One option per key (named as the key, help from its docstring), section by section.

    Values are left as text (or absent when not given) for `values_from_args` to check, so
    that the file and the flags give the same errors.
    """
    groups: dict[str, argparse._ArgumentGroup] = {}
    for key in KEYS:
        group = groups.get(key.section)
        if group is None:
            group = groups[key.section] = parser.add_argument_group(f"[{key.section}]")
        shown = key.default
        if key.kind == "listen":
            shown = "rtmp://HOST:PORT"
        elif key.kind == "push_map":
            shown = None
        shows = shown is not None and not isinstance(shown, bool)
        default = f" (default {_show(shown)})" if shows else ""
        text = (key.help + default).replace("%", "%%")
        if key.kind == "bool":
            group.add_argument(
                key.flag,
                *key.flags,
                dest=key.name,
                action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS,
                help=text,
            )
        elif key.kind in ("listen", "app_urls", "push_map"):
            group.add_argument(
                key.flag,
                dest=key.name,
                action="append",
                metavar="URL" if key.kind == "listen" else "APP=URL",
                default=argparse.SUPPRESS,
                help=text,
            )
        else:
            group.add_argument(
                key.flag,
                *key.flags,
                dest=key.name,
                metavar=_metavar(key),
                default=argparse.SUPPRESS,
                help=text,
            )


def _metavar(key: Key) -> str:
    if key.choices:
        return "{" + ",".join(key.choices) + "}"
    if key.name.startswith("on_") or key.name == "webhook":
        return "URL"
    if key.name.endswith("secret"):
        return "SECRET"
    # Every float key is a time in seconds.
    return {"int": "N", "float": "SECONDS", "path": "PATH", "workers": "N|auto"}.get(
        key.kind, key.name.upper()
    )


def values_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The values the flags gave, checked; ConfigError names the flag."""
    values: dict[str, Any] = {}
    for key in KEYS:
        if not hasattr(args, key.name):
            continue
        raw = getattr(args, key.name)
        if key.kind == "bool":
            values[key.name] = bool(raw)
        elif key.kind in ("listen", "app_urls", "push_map"):
            try:
                values[key.name] = key.check(list(raw))
            except ConfigError as err:
                raise ConfigError(key.flag, err.given, err.accepted) from None
        else:
            values[key.name] = key.parse_flag(raw)
    return values


@dataclass
class Resolved:
    """The effective values by key name (what --print-config writes) and their ServerConfig."""

    values: dict[str, Any]
    config: ServerConfig


def resolve(file: Path | None, flags: Mapping[str, Any]) -> Resolved:
    """Defaults, then the file, then the flags; checked. ConfigError says what is wrong."""
    values = defaults()
    explicit = set(flags)
    if file is not None:
        from_file = read_file(file)
        values.update(from_file)
        explicit |= set(from_file)
    values.update(flags)
    try:
        config = build(values, explicit)
    except ConfigError as err:
        raise err.at(str(file)) if file is not None and err.key not in flags else err from None
    values["listen"] = config.listen
    values["max_partial_bytes"] = config.max_partial_bytes
    return Resolved(values, config)


# --- back to TOML -------------------------------------------------------------------------


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isinf(value):
            return "inf"
        return repr(value)
    if isinstance(value, Path):
        return json.dumps(str(value))
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, Listener):
        return json.dumps(value.url)
    if isinstance(value, PushTarget):
        return json.dumps(value.text())
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in value.items()) + "}"
    raise TypeError(type(value))


def to_toml(values: Mapping[str, Any]) -> str:
    """The values as a TOML file that `read_file` reads back to the same values."""
    lines = []
    for section in SECTIONS:
        lines.append(f"[{section}]")
        for key in KEYS:
            if key.section != section:
                continue
            value = values[key.name]
            if key.name in ("host", "port"):
                # Their listener is the first of `listen`; written out, they would add it twice.
                lines.append(f"# {key.name} = {_toml(value)}  (shorthand; see listen)")
                continue
            if value is None:
                lines.append(f"# {key.name} = (not set)")
                continue
            lines.append(f"{key.name} = {_toml(value)}")
        lines.append("")
    for name, app in values.get("apps", {}).items():
        lines.append(f"[apps.{json.dumps(name)}]")
        for key_name in APP_KEYS:
            lines.append(f"{key_name} = {_toml(getattr(app, key_name))}")
        lines.append("")
    return "\n".join(lines)


def print_config(values: Mapping[str, Any]) -> None:
    sys.stdout.write(to_toml(values))
