"""Recording: one FLV file per publish, `<record-dir>/<app>/<stream>-<UTC time>.flv`.

The recorder is a `Sink`. Its file is made by `Recorder.open` when the publish is accepted (or
at the first message if nobody called it), so a file that cannot be made refuses the publish
instead of failing later. It never overwrites an existing file, writes every message as a tag
unchanged (a repeated onMetaData only once), and on end fixes the header flags to what the
stream really carried and closes the file. Every complete message that reached it is in the
file, whatever the publisher did; a killed server loses at most the last `flush_interval`
seconds (see `flvfile`).

This module also owns the file names: any app and stream name the server accepts maps to a
valid, readable name (only separators, control characters and leading dots replaced; names
longer than the file system takes shortened with a hash of the whole name).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

from ..logs import get_logger
from ..protocol.messages import DATA_AMF0, ON_METADATA, Message
from .flvfile import DROP_WINDOW, FLUSH_INTERVAL, WRITE_BUFFER, FLVFile
from .registry import Stream

__all__ = [
    "DROP_WINDOW",
    "FLUSH_INTERVAL",
    "WRITE_BUFFER",
    "Recorder",
    "RecordingError",
    "create_recording",
    "fit_component",
    "safe_component",
]

log = get_logger(__name__)

# Separators, C0 and C1 control characters, DEL, and lone surrogates (a str from a library
# user may hold them; they cannot be encoded as UTF-8). Everything else is kept, so a name
# in any script stays readable in a directory listing.
_UNSAFE = re.compile("[/\\\\\x00-\x1f\x7f-\x9f\ud800-\udfff]")
# The longest file name component on Linux file systems (ext4, xfs, btrfs, tmpfs), in bytes.
NAME_MAX = 255
_HASH_HEX = 8
# Collision suffixes tried before giving up (`-1` ... `-9999`).
_MAX_COLLISIONS = 10_000


class RecordingError(Exception):
    """A recording's file could not be made or written.

    `reason` is short and safe to tell the publisher (no server path); `path` is the file (or
    directory) concerned, for the log.
    """

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def safe_component(name: str) -> str:
    """A file name component from an app or stream name: separators and control characters
    replaced by `_`, leading dots too (no hidden files, no `.` or `..`); never empty."""
    cleaned = _UNSAFE.sub("_", name)
    stripped = cleaned.lstrip(".")
    cleaned = "_" * (len(cleaned) - len(stripped)) + stripped
    return cleaned or "_"


def fit_component(name: str, limit: int, whole: str | None = None) -> str:
    """`name`, or when its UTF-8 form is longer than `limit` bytes, its first bytes (cut at a
    character boundary) + `-` + 8 hex digits of the SHA-256 of `whole` (default `name`), in
    `limit` bytes. Two names that share a long prefix get different short names."""
    data = name.encode("utf-8")
    if len(data) <= limit:
        return name
    keep = limit - 1 - _HASH_HEX
    if keep < 1:
        raise ValueError(f"no room for a name in {limit} bytes")
    digest = hashlib.sha256(
        (name if whole is None else whole).encode("utf-8", "surrogatepass")
    ).hexdigest()
    head = data[:keep].decode("utf-8", "ignore")  # a character cut in two is left out
    return f"{head}-{digest[:_HASH_HEX]}"


def _name_max(folder: Path) -> int:
    """The longest component `folder`'s file system takes, at most NAME_MAX (eCryptfs: 143)."""
    try:
        return min(NAME_MAX, os.pathconf(folder, "PC_NAME_MAX"))
    except (OSError, ValueError):
        return NAME_MAX


def _stamp(when: float) -> str:
    millis = int(when * 1000) % 1000
    return f"-{time.strftime('%Y%m%dT%H%M%S', time.gmtime(when))}.{millis:03d}Z"


def recording_dir(record_dir: Path, app: str) -> Path:
    """`<record_dir>/<app>` as a directory name, made if missing."""
    component = fit_component(safe_component(app), _name_max(record_dir), whole=app)
    folder = record_dir / component
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def recording_names(name: str, when: float, limit: int = NAME_MAX) -> Iterator[str]:
    """File names for a recording of stream `name` started at `when` (UNIX time), in the
    order to try them: `<name>-<UTC time>.flv`, then `-1`, `-2`, ... before `.flv`. Each is
    at most `limit` bytes of UTF-8, the name shortened (see `fit_component`) when needed."""
    safe = safe_component(name)
    stamp = _stamp(when)
    for n in range(_MAX_COLLISIONS):
        suffix = f"{stamp}-{n}.flv" if n else f"{stamp}.flv"
        yield fit_component(safe, limit - len(suffix.encode()), whole=name) + suffix


def create_recording(
    record_dir: Path,
    app: str,
    name: str,
    when: float,
    *,
    buffer_size: int = WRITE_BUFFER,
    flush_interval: float = FLUSH_INTERVAL,
    fsync_interval: float = 0.0,
    drop_window: int = DROP_WINDOW,
) -> FLVFile:
    """A new FLV file for app/name started at `when`, at a path no file had (each candidate
    is made with O_EXCL, so two recorders never share a file). RecordingError if the
    directory or the file cannot be made."""
    try:
        folder = recording_dir(record_dir, app)
        for candidate in recording_names(name, when, _name_max(folder)):
            try:
                return FLVFile.create(
                    folder / candidate,
                    buffer_size=buffer_size,
                    flush_interval=flush_interval,
                    fsync_interval=fsync_interval,
                    drop_window=drop_window,
                )
            except FileExistsError:
                continue
    except OSError as exc:
        where = Path(exc.filename) if isinstance(exc.filename, str) else record_dir
        raise RecordingError(where, exc.strerror or str(exc)) from exc
    raise RecordingError(folder, f"{_MAX_COLLISIONS} recordings of one name in one millisecond")


class Recorder:
    """Writes one stream to an FLV file.

    `flush_interval`: seconds a received tag may wait in memory before it is written (what a
    killed server can lose); `fsync_interval`: seconds between fsyncs of the file, 0 for none
    (what a power cut can lose beyond that); `buffer_size`: bytes held at most between writes;
    `drop_window`: bytes written between two hand-overs of the file's pages to writeback and out
    of the page cache, 0 to leave them cached (see `flvfile`).
    """

    def __init__(
        self,
        record_dir: Path,
        *,
        flush_interval: float = FLUSH_INTERVAL,
        fsync_interval: float = 0.0,
        buffer_size: int = WRITE_BUFFER,
        drop_window: int = DROP_WINDOW,
    ) -> None:
        if min(flush_interval, fsync_interval, buffer_size, drop_window) < 0:
            raise ValueError(
                f"flush_interval {flush_interval}, fsync_interval {fsync_interval}, buffer_size "
                f"{buffer_size} and drop_window {drop_window} must not be negative"
            )
        self.record_dir = record_dir
        self.flush_interval = flush_interval
        self.fsync_interval = fsync_interval
        self.buffer_size = buffer_size
        self.drop_window = drop_window
        self.path: Path | None = None
        #: Why the recording stopped early (its file could not be made or written), or None.
        self.error: RecordingError | None = None
        self._file: FLVFile | None = None
        self._metadata_written = False

    def open(self, stream: Stream) -> Path:
        """Make the file now (the publish handler calls this before accepting the publish);
        its path. Raises RecordingError if it cannot be made: refuse the publish then."""
        if self._file is not None:
            return self._file.path
        f = create_recording(
            self.record_dir,
            stream.app,
            stream.name,
            time.time(),
            buffer_size=self.buffer_size,
            flush_interval=self.flush_interval,
            fsync_interval=self.fsync_interval,
            drop_window=self.drop_window,
        )
        self._file = f
        self.path = f.path
        log.info("recording %r/%r to %s", stream.app, stream.name, f.path)
        return f.path

    def on_message(self, stream: Stream, msg: Message) -> None:
        self.on_messages(stream, [msg])

    def on_messages(self, stream: Stream, msgs: list[Message]) -> None:
        f = self._file
        if f is None:
            if self.error is not None:
                return
            try:
                self.open(stream)
            except RecordingError as exc:
                # Nobody called open() at publish time: too late to refuse; say it once.
                self.error = exc
                log.error("recording %r/%r: cannot record: %s", stream.app, stream.name, exc)
                stream.remove_sink(self)
                return
            f = self._file
            assert f is not None
        for msg in msgs:
            if msg.type_id == DATA_AMF0:
                msgs = self._first_metadata_only(msgs)
                break
        try:
            f.write_messages(msgs)
        except OSError as exc:
            self._failed(stream, exc)

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

    def _failed(self, stream: Stream, exc: OSError) -> None:
        """A write failed (a full disk): what is in the file stays readable; stop recording
        with one log line and leave the stream (the publisher and other sinks go on)."""
        f = self._file
        self._file = None
        path = self.path or self.record_dir
        self.error = RecordingError(path, exc.strerror or str(exc))
        kept = -1
        if f is not None:
            with contextlib.suppress(OSError):
                f.close()
            with contextlib.suppress(OSError):
                kept = path.stat().st_size
        log.error(
            "recording %r/%r to %s stopped: %s (%d bytes kept)",
            stream.app,
            stream.name,
            path,
            self.error.reason,
            kept,
        )
        stream.remove_sink(self)

    def on_end(self, stream: Stream) -> None:
        f = self._file
        if f is None:
            return
        self._file = None
        try:
            f.close()
        except OSError as exc:
            self.error = RecordingError(f.path, exc.strerror or str(exc))
            log.error(
                "recording %r/%r to %s: not finished: %s", stream.app, stream.name, f.path, exc
            )
