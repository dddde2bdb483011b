"""Recording: one FLV file per publish, `<record-dir>/<app>/<stream>-<UTC time>.flv`.

The recorder is a `Sink`. It opens its file at the first message (so the name carries the
time the media began), never overwrites an existing file, writes every message as a tag
unchanged (a repeated onMetaData only once), and on end fixes the header flags to what the
stream really carried and closes the file. Every complete message that reached it is in the
file, whatever the publisher did.
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path

from ..protocol.flv import FLVWriter
from ..protocol.messages import DATA_AMF0, ON_METADATA, Message
from .registry import Stream

log = logging.getLogger(__name__)

_UNSAFE = re.compile(r"[^A-Za-z0-9._=+@,-]")
# Bytes of tags held before a write (0.7 s of a 3 Mbit/s stream): one system call for many
# frames of a live stream. Every tag is in the file once the publish ends.
WRITE_BUFFER = 256 * 1024


def safe_component(name: str) -> str:
    """A file name component from an app or stream name: no separators, no leading dot."""
    cleaned = _UNSAFE.sub("_", name).lstrip(".")
    return cleaned or "_"


def recording_path(record_dir: Path, app: str, name: str, when: float) -> Path:
    """A new, unused path for a recording of app/name started at `when` (UNIX time)."""
    folder = record_dir / safe_component(app)
    folder.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(when))
    millis = int(when * 1000) % 1000
    base = f"{safe_component(name)}-{stamp}.{millis:03d}Z"
    path = folder / f"{base}.flv"
    n = 1
    while path.exists():
        path = folder / f"{base}-{n}.flv"
        n += 1
    return path


class Recorder:
    """Writes one stream to an FLV file."""

    def __init__(self, record_dir: Path) -> None:
        self.record_dir = record_dir
        self.path: Path | None = None
        self._writer: FLVWriter | None = None
        self._metadata_written = False

    def _open(self, stream: Stream) -> FLVWriter:
        while True:
            path = recording_path(self.record_dir, stream.app, stream.name, time.time())
            try:
                # Unbuffered: FLVWriter gathers tags and writes them with one writev.
                f = open(path, "xb", buffering=0)  # noqa: SIM115 - closed in on_end
            except FileExistsError:
                continue
            break
        self.path = path
        log.info("recording %s/%s to %s", stream.app, stream.name, path)
        self._writer = FLVWriter(f, buffer_size=WRITE_BUFFER)
        return self._writer

    def on_message(self, stream: Stream, msg: Message) -> None:
        self.on_messages(stream, [msg])

    def on_messages(self, stream: Stream, msgs: list[Message]) -> None:
        for msg in msgs:
            if msg.type_id == DATA_AMF0:
                msgs = self._first_metadata_only(msgs)
                break
        (self._writer or self._open(stream)).write_messages(msgs)

    def _first_metadata_only(self, msgs: list[Message]) -> list[Message]:
        """One onMetaData per file, as nginx-rtmp records it: GStreamer's flvmux repeats it
        every second, and players read a later one as a data (subtitle) stream."""
        out = []
        for msg in msgs:
            if msg.type_id == DATA_AMF0 and msg.payload.startswith(ON_METADATA):
                if self._metadata_written:
                    continue
                self._metadata_written = True
            out.append(msg)
        return out

    def on_end(self, stream: Stream) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
