"""Helpers for the `rtmp2serversrc` tests: GStreamer in-process and as gst-launch/gst-inspect
processes, free ports, and an in-process publisher that sends FLV tags over real sockets.

Subprocesses get a fresh GST_REGISTRY per test run (one file per xdist worker) and
GST_PLUGIN_PATH pointing at the repository's `gst-plugins/`, so they load the element through
GStreamer's Python plugin loader exactly as a user's gst-launch does.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gi

gi.require_version("Gst", "1.0")
from gi.repository import Gst  # noqa: E402

Gst.init(None)

from rtmp2server.client import ClientError, StatusError, connect  # noqa: E402
from rtmp2server.gst import register  # noqa: E402
from rtmp2server.protocol import flv  # noqa: E402
from support.clients import Publisher  # noqa: E402
from support.server import free_port  # noqa: E402, F401 - re-exported for the gst tests

REPO = Path(__file__).resolve().parent.parent
PLUGIN_PATH = REPO / "gst-plugins"
GST_LAUNCH = shutil.which("gst-launch-1.0") or "gst-launch-1.0"
GST_INSPECT = shutil.which("gst-inspect-1.0") or "gst-inspect-1.0"

_registry_dir = Path(tempfile.mkdtemp(prefix="rtmp2serversrc-registry-"))


def gst_env() -> dict[str, str]:
    """The environment for gst-launch/gst-inspect: our plugin path, a registry of this run."""
    env = dict(os.environ)
    env["GST_PLUGIN_PATH"] = str(PLUGIN_PATH)
    env["GST_REGISTRY"] = str(_registry_dir / "registry.bin")
    env.pop("GST_REGISTRY_FORK", None)
    return env


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
        return True


def wait_listening(
    port: int, timeout: float = 20.0, proc: subprocess.Popen[str] | None = None
) -> None:
    """Wait until something accepts connections on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            raise AssertionError(f"gst-launch exited {proc.returncode} before listening:\n{out}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on port {port} after {timeout} s")


class GstLaunch(Publisher):
    """A gst-launch-1.0 process with our plugin path and registry."""

    def __init__(self, *pipeline: str) -> None:
        super().__init__([GST_LAUNCH, *pipeline], env=gst_env())

    def wait(self, timeout: float = 30.0) -> int:  # type: ignore[override]
        """The exit code; a process still running after `timeout` is killed (TimeoutError)."""
        return super().wait(timeout).returncode


def gst_inspect(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [GST_INSPECT, *args], env=gst_env(), capture_output=True, text=True, timeout=60
    )


# --- in-process GStreamer --------------------------------------------------------------------


def init_gst() -> None:
    assert register(), "rtmp2serversrc could not be registered"


@dataclass
class Collected:
    """What reached a sink pad: buffers (with their metadata) and events, in order."""

    buffers: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def data(self) -> bytes:
        with self.lock:
            return b"".join(b["data"] for b in self.buffers)

    def __len__(self) -> int:
        with self.lock:
            return len(self.buffers)


def collect(element: Gst.Element, pad_name: str = "sink", data: bool = True) -> Collected:
    """Record every buffer arriving at `element`'s pad."""
    out = Collected()
    pad = element.get_static_pad(pad_name)

    def probe(_pad: Gst.Pad, info: Gst.PadProbeInfo) -> Gst.PadProbeReturn:
        buf = info.get_buffer()
        entry = {
            "pts": buf.pts,
            "dts": buf.dts,
            "offset": buf.offset,
            "flags": buf.get_flags(),
            "size": buf.get_size(),
            "data": buf.extract_dup(0, buf.get_size()) if data else b"",
        }
        with out.lock:
            out.buffers.append(entry)
        return Gst.PadProbeReturn.OK

    pad.add_probe(Gst.PadProbeType.BUFFER, probe)
    return out


def pull_from_appsink(appsink: Gst.Element) -> Collected:
    """Pull every sample from `appsink` as the application would (new-sample signal)."""
    out = Collected()
    appsink.set_property("emit-signals", True)

    def on_sample(sink: Gst.Element) -> Gst.FlowReturn:
        sample = sink.emit("pull-sample")
        buf = sample.get_buffer()
        entry = {"pts": buf.pts, "dts": buf.dts, "offset": buf.offset, "flags": buf.get_flags(),
                 "size": buf.get_size(), "data": b"", "caps": sample.get_caps()}  # fmt: skip
        with out.lock:
            out.buffers.append(entry)
        return Gst.FlowReturn.OK

    appsink.connect("new-sample", on_sample)
    return out


class Pipeline:
    """A parsed pipeline whose bus messages are all kept, for tests."""

    def __init__(self, description: str) -> None:
        init_gst()
        self.pipeline = Gst.parse_launch(description)
        self.bus = self.pipeline.get_bus()
        self.messages: list[Gst.Message] = []

    def __getitem__(self, name: str) -> Any:
        element = self.pipeline.get_by_name(name)
        assert element is not None, name
        return element

    def play(self) -> None:
        """To PLAYING. The source is started (its port bound) when this returns; the sinks
        complete their state change (ASYNC) only when the first buffer reaches them."""
        ret = self.pipeline.set_state(Gst.State.PLAYING)
        assert ret != Gst.StateChangeReturn.FAILURE, self.errors()

    def stop(self) -> None:
        self.drain()  # going to NULL flushes the bus
        self.pipeline.set_state(Gst.State.NULL)
        self.drain()

    def drain(self) -> None:
        while True:
            msg = self.bus.pop()
            if msg is None:
                return
            self.messages.append(msg)

    def wait_for(self, pred: Callable[[Gst.Message], bool], timeout: float = 20.0) -> Gst.Message:
        """The first message (already seen or arriving within `timeout`) matching `pred`."""
        for msg in self.messages:
            if pred(msg):
                return msg
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no such bus message within {timeout} s; {self.summary()}")
            msg = self.bus.timed_pop(int(min(left, 0.2) * Gst.SECOND))
            if msg is None:
                continue
            self.messages.append(msg)
            if pred(msg):
                return msg

    def wait_eos(self, timeout: float = 20.0) -> None:
        msg = self.wait_for(
            lambda m: m.type in (Gst.MessageType.EOS, Gst.MessageType.ERROR), timeout
        )
        assert msg.type == Gst.MessageType.EOS, self.summary()

    def element_messages(self, name: str) -> list[Gst.Structure]:
        self.drain()
        out = []
        for msg in self.messages:
            s = msg.get_structure()
            if msg.type == Gst.MessageType.ELEMENT and s is not None and s.get_name() == name:
                out.append(s)
        return out

    def errors(self) -> list[str]:
        self.drain()
        return [
            f"{m.src.get_name()}: {m.parse_error()[0].message} ({m.parse_error()[1]})"
            for m in self.messages
            if m.type == Gst.MessageType.ERROR
        ]

    def summary(self) -> str:
        seen = [m.get_structure().to_string() for m in self.messages
                if m.type == Gst.MessageType.ELEMENT]  # fmt: skip
        return f"errors={self.errors()} element messages={seen}"


# --- an in-process publisher -------------------------------------------------------------------


class PublishRefused(Exception):
    pass


async def publish_async(
    port: int,
    name: str,
    tags: Iterable[flv.Tag],
    app: str = "live",
    realtime: bool = False,
    hold: float = 0.0,
) -> str:
    """Publish `tags` to rtmp://127.0.0.1:port/app/name; returns the onStatus code.

    `realtime` paces the tags by their timestamps; `hold` keeps the publish open, silent,
    for that many seconds after the last tag.
    """
    try:
        async with connect(f"rtmp://127.0.0.1:{port}/{app}") as client:
            try:
                await client.publish(name)
            except StatusError as err:
                return err.code
            start = time.monotonic()
            for tag in tags:
                if realtime:
                    delay = tag.timestamp / 1000 - (time.monotonic() - start)
                    if delay > 0:
                        await asyncio.sleep(delay)
                # Every tag as it is, data tags (onMetaData of the file) too.
                await client.send_media(tag.tag_type, tag.timestamp, tag.body)
            if hold:
                await asyncio.sleep(hold)
            # Leaving the block: FCUnpublish and deleteStream, then the close.
            return "NetStream.Publish.Start"
    except ClientError as err:  # refused, closed, timed out: as the socket errors it was
        raise ConnectionError(str(err)) from err


def publish(
    port: int,
    name: str,
    tags: Iterable[flv.Tag],
    app: str = "live",
    realtime: bool = False,
    hold: float = 0.0,
) -> str:
    """`publish_async` from synchronous code."""
    coro = publish_async(port, name, tags, app, realtime, hold)
    return asyncio.run(asyncio.wait_for(coro, 60))


def publish_all(port: int, jobs: list[tuple[str, list[flv.Tag]]], app: str = "live") -> list[str]:
    """Several publishes at once; returns their onStatus codes."""

    async def main() -> list[str]:
        return list(await asyncio.gather(*(publish_async(port, n, t, app) for n, t in jobs)))

    return asyncio.run(asyncio.wait_for(main(), 60))


def source_tags(path: Path) -> list[flv.Tag]:
    _header, tags = flv.read_flv(path.read_bytes())
    return tags


def video_frames(tags: list[flv.Tag]) -> int:
    """Coded video frames (AVC NALU packets, not the sequence header) among `tags`."""
    return sum(1 for t in tags if t.tag_type == 9 and len(t.body) > 1 and t.body[1] == 1)


def threads_and_fds() -> tuple[int, int]:
    return len(os.listdir("/proc/self/task")), len(os.listdir("/proc/self/fd"))
