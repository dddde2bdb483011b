"""The configuration tree: defaults, every key's checks from the file and from the flags, the
effective configuration printed and read back, flags over the file, and SIGHUP.

The checks are table-driven over `config.KEYS`, so a key added to the tree is tested here
without a new line: for each key a value of the wrong type and values out of range, each from a
TOML file and from the command line, must end `rtmp2-server` with exit 2 and one line that names
the key, what was given and what is accepted.
"""

from __future__ import annotations

import math
import signal
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from rtmp2server import cli, config
from rtmp2server.config import KEYS, Key, Listener, RelayConfig, ServerConfig
from support.clients import RawClient, amf0_number, amf0_string, chunk_message, connect_command
from support.media import SourceMedia
from support.server import running_server

# --- defaults and names ---------------------------------------------------------------------

EXPECTED_DEFAULTS: dict[str, Any] = {
    "host": "0.0.0.0",
    "port": 1935,
    "record_dir": None,
    "chunk_size": 4096,
    "max_message_size": 16 * 1024 * 1024,
    "window_ack_size": 5_000_000,
    "handshake_timeout": 10.0,
    "start_timeout": 30.0,
    "idle_timeout": 30.0,
    "max_connections": 4096,
    "max_connections_per_ip": 64,
    "max_name_length": 256,
    "drain_timeout": 5.0,
    "max_chunk_size": 1048576,
    "max_chunk_streams": 64,
    "max_partial_bytes": 16 * 1024 * 1024 + 1048576,
    "record_flush_interval": 1.0,
    "record_fsync_interval": 0.0,
    "republish": "takeover",
    "max_pending_bytes": 8 * 1024 * 1024,
    "on_connect": "",
    "on_publish": "",
    "on_play": "",
    "callback_format": "json",
    "callback_timeout": 5.0,
    "fail_open": False,
    "webhook": "",
    "webhook_secret": "",
}
EXPECTED_RELAY = {
    "play_wait": 10.0,
    "gop_cache": True,
    "gop_max_messages": 4096,
    "gop_max_bytes": 32 * 1024 * 1024,
    "gop_cache_idle": math.inf,
    "player_max_buffer": 4 * 1024 * 1024,
    "republish_grace": 10.0,
}


def test_defaults_have_the_documented_names_and_values() -> None:
    cfg = ServerConfig()
    for name, value in EXPECTED_DEFAULTS.items():
        assert getattr(cfg, name) == value, name
    assert cfg.relay is not None
    for name, value in EXPECTED_RELAY.items():
        assert getattr(cfg.relay, name) == value, name
    assert cfg.listeners() == [Listener("rtmp", "0.0.0.0", 1935)]
    cfg.validate()


def test_old_homes_still_export_the_config_classes() -> None:
    from rtmp2server.server import RelayConfig as R1
    from rtmp2server.server import ServerConfig as S1
    from rtmp2server.server.relay import RelayConfig as R2
    from rtmp2server.server.server import RelayConfig as R3
    from rtmp2server.server.server import ServerConfig as S2

    assert S1 is S2 is ServerConfig
    assert R1 is R2 is R3 is RelayConfig


def test_max_partial_bytes_follows_max_message_size() -> None:
    assert ServerConfig(max_message_size=1 << 20).max_partial_bytes == (1 << 20) + (1 << 20)
    assert ServerConfig(max_partial_bytes=99 << 20).max_partial_bytes == 99 << 20


def test_every_key_has_help_and_every_flag_is_the_key_name() -> None:
    parser = cli.build_parser()
    flags = {s for a in parser._actions for s in a.option_strings}
    for key in KEYS:
        assert key.help, f"{key.name} has no attribute docstring"
        assert key.flag == "--" + key.name.replace("_", "-")
        assert key.flag in flags
    names = [k.name for k in KEYS]
    assert len(names) == len(set(names)), "key names must be unique across sections"


# The flags of earlier versions, with what they must set.
OLD_FLAGS: list[tuple[list[str], str, Any]] = [
    (["--host", "127.0.0.2"], "host", "127.0.0.2"),
    (["--port", "1940"], "port", 1940),
    (["--record-dir", "/tmp/x"], "record_dir", Path("/tmp/x")),
    (["--no-record"], "record_dir", None),
    (["--chunk-size", "8192"], "chunk_size", 8192),
    (["--max-message-size", "65536"], "max_message_size", 65536),
    (["--handshake-timeout", "3"], "handshake_timeout", 3.0),
    (["--start-timeout", "4"], "start_timeout", 4.0),
    (["--idle-timeout", "0"], "idle_timeout", 0.0),
    (["--max-connections", "9"], "max_connections", 9),
    (["--max-connections-per-ip", "0"], "max_connections_per_ip", 0),
    (["--max-name-length", "20"], "max_name_length", 20),
    (["--drain-timeout", "1.5"], "drain_timeout", 1.5),
    (["--no-play"], "relay", None),
    (["--play-wait", "inf"], "relay.play_wait", math.inf),
    (["--gop-cache-messages", "0"], "relay.gop_cache", False),
    (["--gop-cache-messages", "7"], "relay.gop_max_messages", 7),
    (["--gop-cache-bytes", "1000"], "relay.gop_max_bytes", 1000),
    (["--player-buffer", "5000"], "relay.player_max_buffer", 5000),
    (["--log-level", "debug"], "log_level", "debug"),
    (["--listen", "rtmp://[::1]:1950"], "listen", [Listener("rtmp", "::1", 1950)]),
]


def _get(cfg: ServerConfig, dotted: str) -> Any:
    obj: Any = cfg
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


@pytest.mark.parametrize(("argv", "attr", "value"), OLD_FLAGS, ids=lambda x: str(x))
def test_flags_set_their_field(argv: list[str], attr: str, value: Any) -> None:
    cfg = cli.config_from_args(cli.build_parser().parse_args(argv))
    assert _get(cfg, attr) == value


def test_library_configs_are_checked_at_start() -> None:
    import asyncio

    from rtmp2server.server import RTMPServer

    async def start(cfg: ServerConfig) -> None:
        server = RTMPServer(cfg)
        try:
            await server.start()
        finally:
            await server.close()

    with pytest.raises(config.ConfigError, match="chunk_size: got 0"):
        asyncio.run(start(ServerConfig(host="127.0.0.1", port=0, chunk_size=0)))
    with pytest.raises(config.ConfigError, match="tls_cert"):
        asyncio.run(start(ServerConfig(listen=[Listener("rtmps", "127.0.0.1", 0)])))
    asyncio.run(start(ServerConfig(host="", port=0)))  # empty host: every interface


def test_cli_default_records_to_recordings() -> None:
    cfg = cli.config_from_args(cli.build_parser().parse_args([]))
    assert cfg.record_dir == Path("recordings")
    assert cfg.listeners() == [Listener("rtmp", "0.0.0.0", 1935)]


# --- every key's errors, from the file and from the flags -----------------------------------


def _wrong_type(key: Key) -> Any:
    wrong = {"int": "12", "float": "x", "bool": 1, "str": 5, "path": 5, "listen": "rtmp://a:1"}
    wrong["app_urls"] = "live=rtmp://a/live"  # one string, not a list
    wrong["workers"] = "two"  # a number or "auto"
    wrong["push_map"] = 5
    return wrong[key.kind]


def _out_of_range(key: Key) -> list[Any]:
    """Values of the right type that the key refuses."""
    if key.choices:
        return ["nope"]
    if key.kind == "listen":
        return [["http://a:1"], ["rtmp://a:99999"], [3]]
    if key.kind == "workers":
        return [-1, 257, 1.5]
    if key.kind == "app_urls":
        return [["rtmp://a/live"], ["live=http://a/live"], ["live=rtmp://a"], [3]]
    if key.kind == "push_map":
        return [["live"], ["live=http://a/b"], ["live=rtmp://a/b x=1"], {"live": ["rtmp://a"]}]
    if key.kind in ("str", "path"):
        return [] if key.empty else [""]
    out: list[Any] = []
    if key.lo is not None:
        out.append(int(key.lo) - 1 if key.kind == "int" else float(key.lo) - 0.5)
    if key.hi is not None:
        out.append(int(key.hi) + 1 if key.kind == "int" else float(key.hi) + 1)
    if key.kind == "float":
        out.append(math.nan)
        if not key.inf:
            out.append(math.inf)
    return out


def _toml(value: Any) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return config._toml(value)


FILE_CASES = [
    pytest.param(key, value, id=f"{key.dotted}={value!r}")
    for key in KEYS
    for value in [_wrong_type(key), *_out_of_range(key)]
]


def run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = cli.main(argv)
    except SystemExit as exc:  # argparse's own errors
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("rtmp2-server: error: "), err
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"


@pytest.mark.parametrize(("key", "value"), FILE_CASES)
def test_file_value_refused(
    key: Key, value: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "c.toml"
    path.write_text(f"[{key.section}]\n{key.name} = {_toml(value)}\n")
    code, out, err = run_main(["--config", str(path), "--print-config"], capsys)
    assert out == ""
    assert_one_line_error(code, err, str(path), key.dotted, "got ", "expected " + key.accepted())


def _flag_values(key: Key) -> list[str]:
    if key.kind == "bool":
        return []  # --x / --no-x: no value to get wrong
    bad = {"int": ["12x", "1.5"], "float": ["x"], "listen": ["rtmp://"]}.get(key.kind, [])
    for value in _out_of_range(key):
        if isinstance(value, list):
            bad += [v for v in value if isinstance(v, str)]
        else:
            bad.append(
                config._toml(value).strip('"') if not isinstance(value, float) else str(value)
            )
    return bad


FLAG_CASES = [
    pytest.param(key, text, id=f"{key.flag}={text}") for key in KEYS for text in _flag_values(key)
]


@pytest.mark.parametrize(("key", "text"), FLAG_CASES)
def test_flag_value_refused(key: Key, text: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_main([f"{key.flag}={text}", "--print-config"], capsys)
    assert out == ""
    assert_one_line_error(code, err, key.flag, "got ", "expected " + key.accepted())


@pytest.mark.parametrize("section", config.SECTIONS)
def test_unknown_key_in_each_section(
    section: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "c.toml"
    path.write_text(f"[{section}]\nno_such_key = 1\n")
    code, _, err = run_main(["--config", str(path)], capsys)
    some = next(k.name for k in KEYS if k.section == section)
    assert_one_line_error(code, err, f"{section}.no_such_key", "unknown key", some)


def test_key_in_the_wrong_section_is_unknown(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[limits]\nidle_timeout = 1\n")
    code, _, err = run_main(["--config", str(path)], capsys)
    assert_one_line_error(code, err, "limits.idle_timeout", "unknown key", "goes in [timeouts]")


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        ("[nosuch]\na = 1\n", ["nosuch", "unknown section", "[limits]"]),
        ("port = 1\n", ["port", "unknown section"]),
        ("[limits\n", ["not TOML"]),
        ("[apps.live]\nrecrd = true\n", ["apps.live.recrd", "unknown key", "record"]),
        ("[apps.live]\nrecord = 1\n", ["apps.live.record", "got 1", "true or false"]),
        ("[apps]\nlive = 3\n", ["apps.live", "a table"]),
        (
            "[server]\nlisten = ['rtmp://127.0.0.1:1', 'rtmp://127.0.0.1:1']\n",
            ["listen", "twice"],
        ),
        (
            "[limits]\nmax_message_size = 8388608\nmax_partial_bytes = 4096\n",
            ["max_partial_bytes", "max_message_size"],
        ),
        ("[server]\nlisten = ['rtmps://127.0.0.1:1']\n", ["tls_cert", "rtmps"]),
    ],
)
def test_file_errors(
    text: str, needles: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "c.toml"
    path.write_text(text)
    code, _, err = run_main(["--config", str(path)], capsys)
    assert_one_line_error(code, err, *needles)


def test_unknown_flag_and_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_main(["--max-connection", "3"], capsys)
    assert_one_line_error(code, err, "--max-connection")
    code, _, err = run_main(["--config", str(tmp_path / "none.toml")], capsys)
    assert_one_line_error(code, err, "none.toml", "cannot read")


def test_bad_tls_files_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "cert.pem").write_text("not a certificate\n")
    (tmp_path / "key.pem").write_text("not a key\n")
    argv = ["--listen", "rtmps://127.0.0.1:1", "--tls-cert", str(tmp_path / "cert.pem")]
    code, _, err = run_main([*argv, "--tls-key", str(tmp_path / "key.pem")], capsys)
    assert_one_line_error(code, err, "tls_cert", "cannot load", "cert.pem")


def test_process_exits_2_with_one_line(tmp_path: Path) -> None:
    """The real command, as a user runs it: the examples of the issue."""
    for argv, needle in [
        (["--port", "70000"], "--port: got 70000"),
        (["--chunk-size", "0"], "--chunk-size: got 0"),
        (["--play-wait", "-1"], "--play-wait: got -1.0"),
        (["--player-buffer", "-5"], "--player-max-buffer: got -5"),
    ]:
        proc = subprocess.run(
            [sys.executable, "-m", "rtmp2server", *argv],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert proc.returncode == 2, proc
        assert proc.stderr.count("\n") == 1 and needle in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr


# --- the effective configuration: printed, read back, flags over the file -------------------

SAMPLE = """
[server]
listen = ["rtmp://127.0.0.1:1936", "rtmp://[::1]:1937"]
[limits]
chunk_size = 60000
max_connections_per_ip = 3
max_partial_bytes = 0
[timeouts]
idle_timeout = 0
[record]
record = false
record_fsync_interval = 2.5
[publish]
republish = "refuse"
[play]
play_wait = inf
gop_cache = false
[log]
log_level = "warning"
[apps.live]
record = false
[apps."with space"]
play = "key"
play_keys = ["t0ken"]
publish_deny = ["10.0.0.0/8"]
keys = {cam = "s3cret"}
"""


def test_print_config_reads_back_to_the_same(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = tmp_path / "first.toml"
    first.write_text(SAMPLE)
    code, printed, err = run_main(["--config", str(first), "--print-config"], capsys)
    assert code == 0, err
    doc = tomllib.loads(printed)
    assert doc["limits"]["chunk_size"] == 60000
    assert doc["limits"]["max_partial_bytes"] == 17 * 1024 * 1024
    assert doc["server"]["listen"] == ["rtmp://127.0.0.1:1936", "rtmp://[::1]:1937"]
    assert doc["play"]["play_wait"] == math.inf
    app = doc["apps"]["with space"]
    assert app["play"] == "key" and app["play_keys"] == ["t0ken"] and app["record"] is True
    assert app["publish_deny"] == ["10.0.0.0/8"] and app["keys"] == {"cam": "s3cret"}
    second = tmp_path / "second.toml"
    second.write_text(printed)
    code, again, err = run_main(["--config", str(second), "--print-config"], capsys)
    assert code == 0, err
    assert again == printed
    a = cli.config_from_args(cli.build_parser().parse_args(["--config", str(first)]))
    b = cli.config_from_args(cli.build_parser().parse_args(["--config", str(second)]))
    assert a == b
    assert a.record_dir is None and a.relay is not None and a.relay.gop_cache is False
    assert a.republish == "refuse" and a.apps["live"].record is False


def test_print_config_of_the_defaults_reads_back(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, printed, _ = run_main(["--print-config"], capsys)
    assert code == 0
    path = tmp_path / "d.toml"
    path.write_text(printed)
    code, again, _ = run_main(["--config", str(path), "--print-config"], capsys)
    assert (code, again) == (0, printed)


def test_flags_override_the_file(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(SAMPLE)
    argv = ["--config", str(path), "--chunk-size", "8192", "--record", "--port", "1999"]
    cfg = cli.config_from_args(cli.build_parser().parse_args(argv))
    assert cfg.chunk_size == 8192
    assert cfg.record_dir == Path("recordings")
    assert cfg.max_connections_per_ip == 3  # from the file
    # --port given beside the file's listeners: its plain listener comes first.
    assert [lst.url for lst in cfg.listeners()] == [
        "rtmp://0.0.0.0:1999",
        "rtmp://127.0.0.1:1936",
        "rtmp://[::1]:1937",
    ]


def test_a_bad_flag_over_a_good_file_names_the_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "c.toml"
    path.write_text(SAMPLE)
    code, _, err = run_main(["--config", str(path), "--max-name-length", "0"], capsys)
    assert_one_line_error(code, err, "--max-name-length: got 0")
    assert str(path) not in err


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("rtmp://0.0.0.0:1935", Listener("rtmp", "0.0.0.0", 1935)),
        ("rtmps://example.com", Listener("rtmps", "example.com", 443)),
        ("rtmp://host", Listener("rtmp", "host", 1935)),
        ("rtmps://[::]:8443/", Listener("rtmps", "::", 8443)),
    ],
)
def test_listener_urls(url: str, expected: Listener) -> None:
    assert Listener.parse(url) == expected
    assert Listener.parse(expected.url) == expected


@pytest.mark.parametrize(
    "url", ["http://a:1", "rtmp://", "rtmp://a:x", "rtmp://a:1/live", "rtmp://::1:5", "a:1"]
)
def test_bad_listener_urls(url: str) -> None:
    with pytest.raises(ValueError):
        Listener.parse(url)


# --- SIGHUP ---------------------------------------------------------------------------------

pytest_e2e = pytest.mark.e2e


def _publish_raw(port: int, name: str) -> RawClient:
    """A raw client that connects and asks to publish `name`."""
    c = RawClient(port)
    c.handshake()
    c.send(connect_command("live", f"rtmp://127.0.0.1:{port}/live"))
    create = amf0_string("createStream") + amf0_number(2) + b"\x05"
    c.send(chunk_message(3, 20, create))
    publish = (
        amf0_string("publish") + amf0_number(3) + b"\x05" + amf0_string(name) + amf0_string("live")
    )
    c.send(chunk_message(8, 20, publish, stream_id=1))
    return c


@pytest_e2e
@pytest.mark.timeout(120)
def test_sighup_reloads_a_good_file_and_keeps_running_streams(
    tmp_path: Path, source: SourceMedia
) -> None:
    from support.clients import start_publish
    from test_e2e_ingest import assert_recorded_exactly

    path = tmp_path / "c.toml"
    path.write_text("[limits]\nmax_name_length = 256\n")
    with running_server(tmp_path / "rec", tmp_path / "log", args=["--config", str(path)]) as s:
        long_name = "n" * 40
        running = start_publish("ffmpeg-9", source.path, s.url("before"))
        s.wait_publish("start", "before")
        path.write_text("[limits]\nmax_name_length = 30\n[play]\nplay = false\n")
        assert s.proc is not None
        s.proc.send_signal(signal.SIGHUP)
        s.wait_for_log("reload: configuration read again")
        s.wait_for_log("play on or off needs a restart")
        # New connections get the new value: a 40-character name is refused now.
        with _publish_raw(s.port, long_name) as c:
            s.wait_for_log("name refused.*expected at most 30")
            c.wait_closed(1)
        # The stream that was running goes on to its end, recorded packet-complete.
        assert running.wait(30).returncode == 0
        assert_recorded_exactly(s, "before", source)
        # Listeners cannot change: the log says so, and the port still serves.
        path.write_text("[server]\nlisten = ['rtmp://127.0.0.1:1']\n")
        s.proc.send_signal(signal.SIGHUP)
        s.wait_for_log("listeners cannot change without a restart")
        with RawClient(s.port) as c:
            c.handshake()
    assert s.returncode == 0, s.log()


@pytest_e2e
@pytest.mark.timeout(60)
def test_sighup_with_a_bad_file_keeps_the_running_configuration(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[limits]\nmax_name_length = 30\n")
    with running_server(tmp_path / "rec", tmp_path / "log", args=["--config", str(path)]) as s:
        path.write_text("[limits]\nmax_name_length = -1\n")
        assert s.proc is not None
        s.proc.send_signal(signal.SIGHUP)
        lines = s.wait_for_log("reload: ")
        assert len(lines) == 1, lines
        assert "limits.max_name_length: got -1" in lines[0], lines
        assert "keeping the running configuration" in lines[0], lines
        # Still 30: a 40-character name is refused, and the server is alive.
        with _publish_raw(s.port, "n" * 40) as c:
            s.wait_for_log("name refused.*expected at most 30")
            c.wait_closed(1)
        path.write_text("[limits\n")
        s.proc.send_signal(signal.SIGHUP)
        s.wait_for_log("reload: .*not TOML")
        assert s.alive()
    assert s.returncode == 0, s.log()


def test_the_readme_example_is_a_valid_file(tmp_path: Path) -> None:
    import trustme

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme.split("## Configuration", 1)[1]
    example = section.split("```toml\n", 1)[1].split("```", 1)[0]
    ca = trustme.CA()
    issued = ca.issue_cert("localhost")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_bytes(b"".join(pem.bytes() for pem in issued.cert_chain_pems))
    issued.private_key_pem.write_to_path(str(key))
    example = example.replace("/etc/rtmp2-server/fullchain.pem", str(cert))
    example = example.replace("/etc/rtmp2-server/privkey.pem", str(key))
    path = tmp_path / "example.toml"
    path.write_text(example)
    cfg = config.resolve(path, {}).config
    assert [lst.url for lst in cfg.listeners()] == ["rtmp://0.0.0.0:1935", "rtmps://0.0.0.0:443"]
    assert cfg.record_dir == Path("/srv/recordings") and "live" in cfg.apps


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        ('[apps.live]\npublish = "maybe"\n', ["apps.live.publish", 'got "maybe"', "key"]),
        ("[apps.live]\npublish_deny = ['10.0.0.300/8']\n", ["apps.live.publish_deny", "300"]),
        ("[apps.live]\nkeys = {cam = 'sha256:abc'}\n", ["apps.live.keys", "sha256:<64 hex"]),
        ("[apps.live]\nplay_keys = 'x'\n", ["apps.live.play_keys", "a list of strings"]),
        ('[apps.live]\npublish = "callback"\n', ["apps.live.publish", "no on_publish URL"]),
        ('[access]\ncallback_format = "xml"\n', ["access.callback_format", "json, nginx"]),
    ],
)
def test_access_rule_errors(
    text: str, needles: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "c.toml"
    path.write_text(text)
    code, _, err = run_main(["--config", str(path)], capsys)
    assert_one_line_error(code, err, *needles)


def test_apps_become_access_rules(tmp_path: Path) -> None:
    from rtmp2server.server.access import access_config

    path = tmp_path / "c.toml"
    path.write_text(
        '[access]\non_play = "http://127.0.0.1:9/play"\ncallback_format = "nginx"\n'
        '[apps.live]\npublish = "key"\nkeys = {cam = "s3cret"}\nplay = "callback"\n'
        'play_allow = ["127.0.0.0/8"]\n'
    )
    cfg = config.resolve(path, {}).config
    access = access_config(cfg)
    live = access.apps["live"]
    assert live.publish.policy == "key" and live.keys == {"cam": "s3cret"}
    assert live.play.policy == "callback" and live.play.allow == ["127.0.0.0/8"]
    assert access.on_play == "http://127.0.0.1:9/play" and access.callback_format == "nginx"
    access.validate()
