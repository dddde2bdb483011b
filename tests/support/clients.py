"""Real RTMP publishers run as processes, and a raw-socket client for hand-built bad input.

The four publishers are the ones people point at an RTMP server: Debian's ffmpeg, a current
ffmpeg (the static build that imageio-ffmpeg ships), GStreamer's own `rtmp2sink` and GStreamer's
librtmp-based `rtmpsink`. Each sends the source FLV at its real rate, as a live encoder would.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import time
from pathlib import Path

import imageio_ffmpeg

FFMPEG_DEBIAN = shutil.which("ffmpeg") or "ffmpeg"
GST_LAUNCH = shutil.which("gst-launch-1.0") or "gst-launch-1.0"

CLIENTS = ("ffmpeg-debian", "ffmpeg-9", "gst-rtmp2sink", "gst-rtmpsink")


def ffmpeg9() -> str:
    return str(imageio_ffmpeg.get_ffmpeg_exe())


def _ffmpeg_args(exe: str, src: Path, url: str, loop: bool = False) -> list[str]:
    args = [exe, "-hide_banner", "-nostdin", "-loglevel", "error", "-re"]
    if loop:
        args += ["-stream_loop", "-1"]
    return [*args, "-i", str(src), "-c", "copy", "-f", "flv", url]


def _gst_args(src: Path, sink: list[str]) -> list[str]:
    # flvdemux/flvmux re-mux the file unchanged; the sink's clock sync (on by default) paces it.
    return [
        GST_LAUNCH,
        "--eos-on-shutdown",
        "filesrc",
        f"location={src}",
        "!",
        "flvdemux",
        "name=d",
        "d.video",
        "!",
        "queue",
        "!",
        "h264parse",
        "!",
        "flvmux",
        "name=m",
        "streamable=true",
        "!",
        *sink,
        "d.audio",
        "!",
        "queue",
        "!",
        "aacparse",
        "!",
        "m.",
    ]


def publish_command(client: str, src: Path, url: str) -> list[str]:
    """The command line with which `client` publishes `src` to `url` once, in real time."""
    if client == "ffmpeg-debian":
        return _ffmpeg_args(FFMPEG_DEBIAN, src, url)
    if client == "ffmpeg-9":
        return _ffmpeg_args(ffmpeg9(), src, url)
    if client == "gst-rtmp2sink":
        return _gst_args(src, ["rtmp2sink", f"location={url}"])
    if client == "gst-rtmpsink":
        return _gst_args(src, ["rtmpsink", f"location={url} live=1"])
    raise ValueError(f"unknown client {client!r}; known: {', '.join(CLIENTS)}")


class Publisher:
    """A client process (publisher or gst-launch); its output is kept for failure messages."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None) -> None:
        self.args = args
        self.proc = subprocess.Popen(
            args,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
        )
        self.output = ""

    def wait(self, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        """Wait for the publisher to finish; on timeout it is killed and TimeoutError raised."""
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
            self.output = out or ""
            raise TimeoutError(
                f"publisher did not finish in {timeout} s: {' '.join(self.args)}\n{self.output}"
            ) from None
        self.output = out or ""
        return subprocess.CompletedProcess(self.args, self.proc.returncode, self.output, "")

    def kill(self) -> None:
        """SIGKILL: the publisher vanishes without closing anything."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.output = self.proc.communicate()[0] or ""

    def running(self) -> bool:
        return self.proc.poll() is None


def start_publish(client: str, src: Path, url: str) -> Publisher:
    return Publisher(publish_command(client, src, url))


def publish(
    client: str, src: Path, url: str, timeout: float = 30.0
) -> subprocess.CompletedProcess[str]:
    """Publish `src` to `url` with `client` and wait for it to finish."""
    return start_publish(client, src, url).wait(timeout)


def start_looping_publisher(src: Path, url: str) -> Publisher:
    """ffmpeg sending `src` over and over in real time until it is killed."""
    return Publisher(_ffmpeg_args(FFMPEG_DEBIAN, src, url, loop=True))


# --- raw RTMP over a plain socket, for input no real client would send ----------------------

HANDSHAKE_SIZE = 1536


def chunk_message(
    csid: int,
    type_id: int,
    payload: bytes,
    stream_id: int = 0,
    timestamp: int = 0,
    chunk_size: int = 128,
) -> bytes:
    """One message as a fmt 0 chunk followed by fmt 3 continuations (csid 2..63)."""
    assert 2 <= csid <= 63 and timestamp < 0xFFFFFF
    header = bytes([csid]) + struct.pack(">I", timestamp)[1:] + struct.pack(">I", len(payload))[1:]
    header += bytes([type_id]) + struct.pack("<I", stream_id)
    parts = [header + payload[:chunk_size]]
    for i in range(chunk_size, len(payload), chunk_size):
        parts.append(bytes([0xC0 | csid]) + payload[i : i + chunk_size])
    return b"".join(parts)


def set_chunk_size(size: int) -> bytes:
    """Protocol control message 1 on csid 2; `size` is sent as is, valid or not."""
    return chunk_message(2, 1, struct.pack(">I", size & 0xFFFFFFFF))


def amf0_string(s: str) -> bytes:
    data = s.encode()
    return b"\x02" + struct.pack(">H", len(data)) + data


def amf0_number(n: float) -> bytes:
    return b"\x00" + struct.pack(">d", n)


def amf0_object(props: dict[str, str]) -> bytes:
    out = b"\x03"
    for key, value in props.items():
        k = key.encode()
        out += struct.pack(">H", len(k)) + k + amf0_string(value)
    return out + b"\x00\x00\x09"


def connect_command(app: str, tc_url: str, body: bytes | None = None) -> bytes:
    """An AMF0 `connect` (type 20 on csid 3); `body` replaces the encoded body when given."""
    if body is None:
        body = (
            amf0_string("connect")
            + amf0_number(1)
            + amf0_object({"app": app, "type": "nonprivate", "tcUrl": tc_url})
        )
    return chunk_message(3, 20, body)


class RawClient:
    """A TCP connection that speaks just enough RTMP to reach the point of interest."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 5.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        local_host, local_port = self.sock.getsockname()[:2]
        self.local = f"{local_host}:{local_port}"  # how the server names this peer

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def send(self, data: bytes) -> bool:
        """Send all of `data`; False if the server had already closed or reset the connection."""
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            return False
        return True

    def recv_exact(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            data = self.sock.recv(n - len(buf))
            if not data:
                raise ConnectionError(f"server closed after {len(buf)} of {n} bytes")
            buf += data
        return bytes(buf)

    def handshake(self, rng: random.Random | None = None) -> None:
        """The simple handshake: C0=3, C1 = time + zero + random; C2 echoes S1."""
        rng = rng or random.Random(0)
        c1 = struct.pack(">II", int(time.monotonic() * 1000) & 0xFFFFFFFF, 0)
        c1 += rng.randbytes(HANDSHAKE_SIZE - 8)
        self.send(b"\x03" + c1)
        s0 = self.recv_exact(1)
        if s0 != b"\x03":
            raise ConnectionError(f"S0 is {s0!r}, expected version 3")
        s1 = self.recv_exact(HANDSHAKE_SIZE)
        self.recv_exact(HANDSHAKE_SIZE)  # S2
        self.send(s1)

    def wait_closed(self, timeout: float = 5.0) -> bool:
        """Read and discard until the server closes or resets; False if still open at timeout."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.sock.settimeout(left)
            try:
                if not self.sock.recv(65536):
                    return True
            except (ConnectionResetError, BrokenPipeError):
                return True
            except TimeoutError:
                return False
