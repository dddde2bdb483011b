"""End to end: real RTMP publishers over real loopback sockets into the `rtmp2-server` process.

Every recording is judged by ffprobe against the source file: exactly the same number of video and
audio packets, and the same payloads (MD5) with the same timestamps in the same order. A lost,
duplicated, reordered or mangled frame fails the test. The resplit route runs the
same publish through a proxy that cuts the client's bytes into 1-7 byte writes.
"""

from __future__ import annotations

import functools
import random
import re
import signal
import socket
import subprocess
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from support.clients import (
    CLIENTS,
    Publisher,
    RawClient,
    amf0_number,
    amf0_string,
    connect_command,
    publish,
    set_chunk_size,
    start_looping_publisher,
    start_publish,
)
from support.media import SourceMedia
from support.probe import Packet, av_counts, first_difference, packets, probe_errors
from support.proxy import ResplitProxy
from support.server import ServerProcess, server_command

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

ROUTES = ("direct", "resplit")
PUBLISH_TIMEOUT = 30.0

ProxyFactory = Callable[..., ResplitProxy]


def seed_of(name: str) -> int:
    return zlib.crc32(name.encode())


def publish_url(
    server: ServerProcess, make_proxy: ProxyFactory, route: str, stream: str
) -> tuple[str, ResplitProxy | None]:
    if route == "direct":
        return server.url(stream), None
    proxy = make_proxy(server.port, seed=seed_of(stream))
    return proxy.url(stream), proxy


def assert_published(result: subprocess.CompletedProcess[str], client: str) -> None:
    assert result.returncode == 0, (
        f"{client} exited {result.returncode}:\n{' '.join(result.args)}\n{result.stdout}"
    )


def assert_recorded_exactly(
    server: ServerProcess, stream: str, source: SourceMedia, timeout: float = 10.0
) -> dict[str, int]:
    """The stream's publish ended and its one recording holds exactly the source's packets."""
    server.wait_publish("stop", stream, timeout=timeout)
    path = server.recording(stream)
    deadline = time.monotonic() + 5.0
    counts = av_counts(path)
    while counts != source.counts and time.monotonic() < deadline:
        time.sleep(0.1)  # the recorder may still be writing out the last tags
        counts = av_counts(path)
    assert counts == source.counts, f"{path.name}: recorded {counts}, source has {source.counts}"
    problems = probe_errors(path)
    assert problems == "", f"{path.name}: ffprobe: {problems}"
    # Not only as many packets: the same payloads with the same timestamps, in the same order.
    expected, got = source_packets(source.path), packets(path)
    for kind in ("video", "audio"):
        diff = first_difference(expected[kind], got[kind])
        assert not diff, f"{path.name}: {kind} {diff}"
    return counts


@functools.cache
def source_packets(path: Path) -> dict[str, list[Packet]]:
    return packets(path)


# --- every client, direct and with the byte stream cut into 1-7 byte pieces -----------------


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("client", CLIENTS)
def test_publish_is_recorded_exactly(
    client: str,
    route: str,
    source: SourceMedia,
    rtmp_server: ServerProcess,
    resplit_proxy: ProxyFactory,
) -> None:
    stream = f"{client}_{route}"
    url, proxy = publish_url(rtmp_server, resplit_proxy, route, stream)

    result = publish(client, source.path, url, timeout=PUBLISH_TIMEOUT)

    assert_published(result, client)
    if proxy is not None:
        assert proxy.wait_forwarded(10), "the proxy is still forwarding 10 s after the client quit"
    counts = assert_recorded_exactly(rtmp_server, stream, source)
    print(f"{client} {route}: recorded {counts}, source {source.counts}")
    if proxy is not None:
        stats = proxy.stats
        assert stats.connections == 1, stats
        # Everything the client sent went through in pieces of at most 7 bytes.
        assert stats.bytes_up > source.path.stat().st_size, stats
        assert stats.writes_up * 7 >= stats.bytes_up, stats


def test_three_publishers_at_once(
    source: SourceMedia, rtmp_server: ServerProcess, resplit_proxy: ProxyFactory
) -> None:
    plan = [
        ("ffmpeg-debian", "direct"),
        ("ffmpeg-9", "direct"),
        ("gst-rtmp2sink", "resplit"),
    ]
    started: list[tuple[str, str, Publisher]] = []
    for i, (client, route) in enumerate(plan):
        stream = f"multi{i}"
        url, _ = publish_url(rtmp_server, resplit_proxy, route, stream)
        started.append((client, stream, start_publish(client, source.path, url)))

    for client, _, publisher in started:
        assert_published(publisher.wait(PUBLISH_TIMEOUT), client)
    for _, stream, _ in started:
        assert_recorded_exactly(rtmp_server, stream, source)
    assert rtmp_server.alive()


# --- a publisher that dies, a server that is told to stop ------------------------------------


def assert_partial_recording_valid(path: Path) -> dict[str, int]:
    problems = probe_errors(path)
    assert problems == "", f"{path.name} is not a clean FLV: {problems}"
    counts = av_counts(path)
    assert counts["video"] > 0 and counts["audio"] > 0, f"{path.name}: {counts}"
    return counts


def test_publisher_killed_mid_stream(source: SourceMedia, rtmp_server: ServerProcess) -> None:
    stream = "killed"
    publisher = start_looping_publisher(source.path, rtmp_server.url(stream))
    try:
        rtmp_server.wait_publish("start", stream)
        time.sleep(1.5)  # media is flowing and being recorded
        assert publisher.running(), publisher.output
    finally:
        publisher.kill()

    rtmp_server.wait_publish("stop", stream, timeout=10)
    assert rtmp_server.alive()
    counts = assert_partial_recording_valid(rtmp_server.recording(stream))
    assert counts["video"] >= 15, counts  # about 1.5 s at 30 fps arrived before the kill
    # The server still takes new connections through to the end of a handshake.
    with RawClient(rtmp_server.port) as probe:
        probe.handshake()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_mid_publish_closes_recording(
    sig: signal.Signals, source: SourceMedia, rtmp_server: ServerProcess
) -> None:
    stream = f"stopped_{sig.name}"
    publisher = start_looping_publisher(source.path, rtmp_server.url(stream))
    try:
        rtmp_server.wait_publish("start", stream)
        time.sleep(1.0)
        assert rtmp_server.proc is not None
        rtmp_server.proc.send_signal(sig)
        code = rtmp_server.proc.wait(15)
    finally:
        publisher.kill()
    assert code == 0, f"exit {code} on {sig.name}:\n{rtmp_server.log()}"
    rtmp_server.returncode = code
    assert_partial_recording_valid(rtmp_server.recording(stream))


# --- bad input ends only its own connection ---------------------------------------------------


@dataclass(frozen=True)
class BadInput:
    name: str
    send: Callable[[RawClient], object]
    problem: str  # regex (case-insensitive) the server's log line about this peer must match


def _garbage(c: RawClient) -> None:
    rng = random.Random(1)
    c.send(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" + rng.randbytes(4000))


def _c0_version_6(c: RawClient) -> None:
    c.send(b"\x06" + random.Random(2).randbytes(1536))


def _chunk_size(size: int) -> Callable[[RawClient], None]:
    def send(c: RawClient) -> None:
        c.handshake()
        c.send(set_chunk_size(size))

    return send


def _connect_body(body: bytes) -> Callable[[RawClient], None]:
    def send(c: RawClient) -> None:
        c.handshake()
        c.send(connect_command("live", "rtmp://127.0.0.1/live", body=body))

    return send


CONNECT = amf0_string("connect") + amf0_number(1)

BAD_INPUTS = [
    BadInput("garbage-handshake", _garbage, r"handshake|version"),
    BadInput("c0-version-6", _c0_version_6, r"handshake|version|encrypt|rtmpe"),
    BadInput("chunk-size-0", _chunk_size(0), r"chunk.?size"),
    BadInput("chunk-size-2^31", _chunk_size(0x80000000), r"chunk.?size"),
    BadInput("chunk-size-2^32-1", _chunk_size(0xFFFFFFFF), r"chunk.?size"),
    # The transaction id number ends 4 bytes early.
    BadInput(
        "connect-amf-truncated", _connect_body(amf0_string("connect") + b"\x00\x3f\xf0"), "amf"
    ),
    # A type marker AMF0 does not have, where the command object should be.
    BadInput("connect-amf-bad-marker", _connect_body(CONNECT + b"\x42\x00\x00"), "amf"),
    # A string value that claims 65535 bytes inside an object of a few.
    BadInput(
        "connect-amf-string-overrun",
        _connect_body(CONNECT + b"\x03\x00\x03app\x02\xff\xfflive\x00\x00\x09"),
        "amf",
    ),
]


@pytest.mark.parametrize("bad", BAD_INPUTS, ids=[b.name for b in BAD_INPUTS])
def test_bad_input_ends_only_its_connection(
    bad: BadInput, source: SourceMedia, rtmp_server: ServerProcess
) -> None:
    good_stream = "good"
    good = start_publish("ffmpeg-debian", source.path, rtmp_server.url(good_stream))
    try:
        rtmp_server.wait_publish("start", good_stream)
        with RawClient(rtmp_server.port) as client:
            bad.send(client)
            assert client.wait_closed(10), f"{bad.name}: the server kept the connection open"
            peer = client.local
    except BaseException:
        good.kill()
        raise

    assert_published(good.wait(PUBLISH_TIMEOUT), "ffmpeg-debian")
    assert_recorded_exactly(rtmp_server, good_stream, source)
    # A log line names the peer and what was wrong with it.
    problem = re.compile(bad.problem, re.IGNORECASE)
    lines = rtmp_server.wait_for_log(re.escape(peer), timeout=5)
    assert any(problem.search(line) for line in lines), (
        f"no log line for {peer} matches {bad.problem!r}:\n" + "\n".join(lines)
    )
    assert rtmp_server.alive()


# --- the command line -------------------------------------------------------------------------


def test_port_in_use_is_one_line_error(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        proc = subprocess.run(
            server_command(port, tmp_path / "rec"),
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected a one-line error, got:\n{proc.stderr}"
    assert str(port) in lines[0], lines[0]
    assert "Traceback" not in proc.stderr
