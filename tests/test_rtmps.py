"""RTMPS end to end: one `rtmp2-server` process with a plain and a TLS listener.

ffmpeg 9 publishes over rtmps:// (checking our certificate against the test CA) and plays over
rtmps://; GStreamer's rtmp2sink publishes over rtmps:// with `tls-validation-flags=0`; every
recording holds exactly the source's packets. A plain RTMP client on the TLS port and a TLS
client on the plain port each get one log line naming the peer and what arrived, and only their
own connection closes: a publish running meanwhile on the same port is recorded complete. The
certificates are made by the test (trustme).
"""

from __future__ import annotations

import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme

from support.clients import RawClient, ffmpeg9, publish_command, start_publish
from support.media import SourceMedia
from support.server import ServerProcess, free_port, running_server
from test_e2e_ingest import assert_recorded_exactly
from test_e2e_play import assert_suffix_from_keyframe

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


@dataclass
class Certs:
    ca: Path
    cert: Path
    key: Path


@pytest.fixture
def certs(tmp_path: Path) -> Certs:
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1", "localhost")
    out = Certs(tmp_path / "ca.pem", tmp_path / "cert.pem", tmp_path / "key.pem")
    ca.cert_pem.write_to_path(str(out.ca))
    out.cert.write_bytes(b"".join(pem.bytes() for pem in issued.cert_chain_pems))
    issued.private_key_pem.write_to_path(str(out.key))
    return out


class TLSServer(ServerProcess):
    tls_port: int

    def tls_url(self, stream: str, app: str = "live") -> str:
        return f"rtmps://127.0.0.1:{self.tls_port}/{app}/{stream}"


@pytest.fixture
def server(request: pytest.FixtureRequest, tmp_path: Path, certs: Certs) -> Iterator[TLSServer]:
    """Plain RTMP on `port` (from --host/--port) and RTMPS on `tls_port` (from --listen)."""
    tls_port = free_port()
    args = [
        "--listen",
        f"rtmps://127.0.0.1:{tls_port}",
        "--tls-cert",
        str(certs.cert),
        "--tls-key",
        str(certs.key),
    ]
    with running_server(tmp_path / "rec", tmp_path / "server.log", args=args) as s:
        s.__class__ = TLSServer
        assert isinstance(s, TLSServer)
        s.tls_port = tls_port
        request.node._rtmp_server = s
        s.wait_for_log(f"listening on rtmps://127.0.0.1:{tls_port}")
        yield s
    assert s.returncode == 0, f"rtmp2-server exited {s.returncode} on SIGTERM:\n{s.log()}"


def ffmpeg9_publish_tls(src: Path, url: str, ca: Path) -> list[str]:
    """ffmpeg 9 publishing over rtmps://, verifying the server's certificate with `ca`."""
    cmd = publish_command("ffmpeg-9", src, url)
    at = cmd.index(url)
    return [*cmd[:at], "-tls_verify", "1", "-ca_file", str(ca), *cmd[at:]]


def run(cmd: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


def test_ffmpeg9_publishes_over_rtmps_recorded_exactly(
    server: TLSServer, source: SourceMedia, certs: Certs
) -> None:
    result = run(ffmpeg9_publish_tls(source.path, server.tls_url("f9tls"), certs.ca))
    assert result.returncode == 0, result.stdout + result.stderr
    assert_recorded_exactly(server, "f9tls", source)


def test_ffmpeg9_refuses_a_certificate_it_cannot_verify(
    server: TLSServer, source: SourceMedia, tmp_path: Path
) -> None:
    """The check above verifies something: with another CA, ffmpeg refuses our certificate,
    and the server logs the failed handshake in one line."""
    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    result = run(ffmpeg9_publish_tls(source.path, server.tls_url("f9bad"), other))
    assert result.returncode != 0
    lines = server.wait_for_log(r"rtmps://127\.0\.0\.1:\d+: TLS handshake failed")
    assert len(lines) == 1, lines
    assert "Traceback" not in server.log()
    assert server.recordings("f9bad") == []


def test_gst_rtmp2sink_publishes_over_rtmps_recorded_exactly(
    server: TLSServer, source: SourceMedia
) -> None:
    url = server.tls_url("gsttls")
    cmd = publish_command("gst-rtmp2sink", source.path, url)
    at = cmd.index(f"location={url}") + 1
    cmd = [*cmd[:at], "tls-validation-flags=0", *cmd[at:]]
    result = run(cmd)
    assert result.returncode == 0, result.stdout + result.stderr
    assert_recorded_exactly(server, "gsttls", source)


def test_ffmpeg9_plays_over_rtmps(
    server: TLSServer, source: SourceMedia, certs: Certs, tmp_path: Path
) -> None:
    out = tmp_path / "played.flv"
    url = server.tls_url("playtls")
    player = subprocess.Popen(
        [
            ffmpeg9(),
            *[
                "-hide_banner",
                "-nostdin",
                "-loglevel",
                "error",
                "-y",
                "-tls_verify",
                "1",
                "-ca_file",
            ],
            str(certs.ca),
            "-i",
            url,
            *f"-map 0 -c copy -f flv {out}".split(),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        server.wait_for_log("play start: .*stream=playtls")
        # Published over plain RTMP: the two listeners serve the same streams.
        publisher = start_publish("ffmpeg-9", source.path, server.url("playtls"))
        assert publisher.wait(30).returncode == 0, publisher.output
        recording = assert_recorded_exactly(server, "playtls", source)
        # The player stays for a publisher that comes back; stop it once its file is whole.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (not out.exists() or out.stat().st_size < 1000):
            time.sleep(0.1)
        time.sleep(1.0)
    finally:
        player.send_signal(signal.SIGINT)
        output, _ = player.communicate(timeout=20)
    joined = assert_suffix_from_keyframe(out, server.recording("playtls"))
    # It asked before the publish started: it got every frame, from the first.
    assert (joined.video_from, joined.audio_from) == (0, 0), (joined, output)
    assert (joined.video, joined.audio) == (recording["video"], recording["audio"]), output


def test_plain_rtmp_on_the_tls_port_ends_only_itself(
    server: TLSServer, source: SourceMedia, certs: Certs
) -> None:
    publisher = subprocess.Popen(
        ffmpeg9_publish_tls(source.path, server.tls_url("besideplain"), certs.ca),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    server.wait_publish("start", "besideplain")
    with RawClient(server.tls_port) as c:
        with pytest.raises(ConnectionError):
            c.handshake()  # C0+C1 go out; no S0 comes back
        lines = server.wait_for_log(rf"peer {c.local}: .*first byte 0x03")
    assert len(lines) == 1
    assert "expected a TLS ClientHello" in lines[0] and "plain RTMP client" in lines[0]
    output, _ = publisher.communicate(timeout=30)
    assert publisher.returncode == 0, output
    assert_recorded_exactly(server, "besideplain", source)


def test_tls_on_the_plain_port_ends_only_itself(server: TLSServer, source: SourceMedia) -> None:
    publisher = start_publish("ffmpeg-9", source.path, server.url("besidetls"))
    server.wait_publish("start", "besidetls")
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw:
        host, port = raw.getsockname()[:2]
        local = f"{host}:{port}"
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            context.wrap_socket(raw, server_hostname="127.0.0.1")
    lines = server.wait_for_log(rf"peer {local}: handshake: C0 version 22")
    assert len(lines) == 1
    assert "TLS ClientHello" in lines[0] and "rtmps://" in lines[0]
    assert publisher.wait(30).returncode == 0, publisher.output
    assert_recorded_exactly(server, "besidetls", source)


def test_library_server_listens_on_rtmp_and_rtmps_with_the_asyncio_loop(certs: Certs) -> None:
    """The same listeners under the standard event loop (the command runs on uvloop), with
    `ports` and `listeners` naming every bound port."""
    import asyncio

    from rtmp2server.config import Listener, ServerConfig
    from rtmp2server.server import RTMPServer

    async def main() -> None:
        cfg = ServerConfig(
            listen=[Listener("rtmp", "127.0.0.1", 0), Listener("rtmps", "127.0.0.1", 0)],
            tls_cert=certs.cert,
            tls_key=certs.key,
        )
        async with RTMPServer(cfg) as server:
            plain, tls = server.ports
            assert server.port == plain and plain != tls and 0 not in (plain, tls)
            assert [lst.url for lst in server.listeners] == [
                f"rtmp://127.0.0.1:{plain}",
                f"rtmps://127.0.0.1:{tls}",
            ]
            context = ssl.create_default_context(cafile=str(certs.ca))
            for port, ctx in ((plain, None), (tls, context)):
                reader, writer = await asyncio.open_connection(
                    "127.0.0.1", port, ssl=ctx, server_hostname="127.0.0.1" if ctx else None
                )
                writer.write(b"\x03" + bytes(1536))
                assert await asyncio.wait_for(reader.readexactly(1), 5) == b"\x03"
                writer.close()
            # A TLS client on the plain port: that connection closes, the server goes on.
            with pytest.raises((ssl.SSLError, ConnectionError)):
                await asyncio.open_connection(
                    "127.0.0.1", plain, ssl=context, server_hostname="127.0.0.1"
                )
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", tls, ssl=context, server_hostname="127.0.0.1"
            )
            writer.write(b"\x03" + bytes(1536))
            assert await asyncio.wait_for(reader.readexactly(1), 5) == b"\x03"
            writer.close()

    asyncio.run(main())
