"""One FLV file being written: the file descriptor, the tags held back, and when they go out.

This module owns the file side of a recording; the bytes come from `protocol.flv.FLVEncoder`.
Tags are held and written with one `os.writev` for many of them (the bodies go to the kernel
as the views they arrived in, uncopied), so a live stream does not cost a system call per
frame. What is held goes out when `buffer_size` bytes are waiting, or `flush_interval` seconds
after the first of them was queued (a timer on the running event loop, since a publisher may
go silent), whichever comes first. Every write ends on a tag boundary, so a killed process
leaves a readable FLV file that lacks at most the last `flush_interval` seconds. With
`fsync_interval`, written tags are also forced to the disk that often (for a power cut, not
only a killed process).

A recording is written, not read back, so its pages do not stay in the page cache: every
`drop_window` bytes written, the pages of that window are handed to the kernel's writeback and
those of the window before, on the disk by then, are dropped from the cache
(`posix_fadvise(POSIX_FADV_DONTNEED)` drops clean pages only: nothing is lost, and a page still
being written stays). A recording's next writes then take the pages its last ones freed, a few
megabytes in use, instead of a fresh page of free memory for every 4 KiB. On the bench's VM a
page of memory nobody touched for a while costs several times its copy the first time it backs
the page cache, and which pages a write gets depends on everything else the machine did: the
ingest figure of the same build ranged 1.1-3.1 s of CPU per GB from run to run, 1.2-1.9 with
the pages dropped (bench/README.md, "Recordings and the page cache"). The costs: the writeback
of the recording runs in the writer's system calls instead of the kernel's flusher threads
(0.15 s/GB on warm memory, `rtmpbench.pagecache`), and the cache is no help to a reader of a
recording while it is being written. The disk gets the stream as it comes, not in bursts of
dirty memory every 30 s.

A file that its owner never closes is still finished: when the `FLVFile` is garbage-collected,
and at interpreter exit for every file still open, held tags are written, the header flags
fixed and the descriptor closed.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import time
import weakref
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import NoReturn

from ..logs import get_logger
from ..protocol.flv import FLAGS_OFFSET, FLVEncoder, TagSource

log = get_logger(__name__)

#: Bytes of tags held before a write (0.7 s of a 3 Mbit/s stream).
WRITE_BUFFER = 256 * 1024
#: Seconds a held tag waits at most before it is written.
FLUSH_INTERVAL = 1.0
#: Bytes written between two hand-overs of a file's pages to writeback and out of the cache.
DROP_WINDOW = 2 * 1024 * 1024
# Pieces per writev: Linux's IOV_MAX (a longer list fails with EINVAL).
_IOV_MAX = 1024
# Only whole pages are dropped, never the first: close() rewrites the header flags in it, which
# would read it back from the disk first.
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_fadvise = getattr(os, "posix_fadvise", None)  # not on macOS

_open_files: weakref.WeakSet[FLVFile] = weakref.WeakSet()


def _close_all_at_exit() -> None:
    """Finish every file still open: a library user who never closed the server keeps them."""
    for f in list(_open_files):
        try:
            f.close()
        except OSError as exc:
            log.error("recording %s: not finished at exit: %s", f.path, exc)


atexit.register(_close_all_at_exit)


class FLVFile:
    """Writes an FLV stream to a file descriptor it owns (see the module's description).

    Errors of the file (a full disk, an I/O error) raise `OSError` from `write_messages`,
    `flush` and `close`; one in a timer's write is kept and raised by the next call, and the
    file is then closed.
    """

    __slots__ = (
        "__weakref__",
        "_dirty",
        "_drop_from",
        "_drop_mark",
        "_encoder",
        "_error",
        "_fd",
        "_held_since",
        "_queue",
        "_queued",
        "_sync_timer",
        "_synced",
        "_timer",
        "_written",
        "buffer_size",
        "drop_window",
        "flush_interval",
        "fsync_interval",
        "path",
    )

    def __init__(
        self,
        fd: int,
        path: Path,
        *,
        audio: bool = True,
        video: bool = True,
        buffer_size: int = WRITE_BUFFER,
        flush_interval: float = FLUSH_INTERVAL,
        fsync_interval: float = 0.0,
        drop_window: int = DROP_WINDOW,
    ) -> None:
        """Write to `fd` (opened for writing at offset 0), which is the file's from now on:
        closed by `close()`, or at once if this raises. `drop_window` 0 leaves the written
        pages in the page cache."""
        self._fd = -1
        self.path = path
        self._error: OSError | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._sync_timer: asyncio.TimerHandle | None = None
        try:
            if min(buffer_size, flush_interval, fsync_interval, drop_window) < 0:
                raise ValueError(
                    f"buffer_size {buffer_size}, flush_interval {flush_interval}, fsync_interval "
                    f"{fsync_interval} and drop_window {drop_window} must not be negative"
                )
            self.buffer_size = buffer_size
            self.drop_window = drop_window if _fadvise is not None else 0
            self._written = 0  # bytes written to fd
            # Pages from _drop_from on may be cached; from _drop_mark on, not yet handed over.
            self._drop_from = self._drop_mark = _PAGE
            self.flush_interval = flush_interval
            self.fsync_interval = fsync_interval
            self._encoder = FLVEncoder(audio=audio, video=video)
            self._queue: list[bytes | memoryview] = []
            self._queued = 0
            self._held_since = 0.0
            self._synced = time.monotonic()
            self._dirty = False
            self._fd = fd
            self._write([self._encoder.file_header()])
        except BaseException:
            self._fd = -1
            os.close(fd)
            raise
        _open_files.add(self)

    @classmethod
    def create(
        cls,
        path: Path,
        *,
        buffer_size: int = WRITE_BUFFER,
        flush_interval: float = FLUSH_INTERVAL,
        fsync_interval: float = 0.0,
        drop_window: int = DROP_WINDOW,
    ) -> FLVFile:
        """A new file at `path` (FileExistsError if there is one: nothing is overwritten)."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        return cls(
            fd,
            path,
            buffer_size=buffer_size,
            flush_interval=flush_interval,
            fsync_interval=fsync_interval,
            drop_window=drop_window,
        )

    @property
    def closed(self) -> bool:
        return self._fd < 0

    @property
    def tags(self) -> int:
        """Tags written or held."""
        return self._encoder.tags

    @property
    def size(self) -> int:
        """Bytes of the file once the tags held are written."""
        return self._encoder.size

    def write_messages(self, msgs: Iterable[TagSource]) -> None:
        """Append one tag per message (type id, timestamp and payload unchanged)."""
        if self._fd < 0:
            self._raise_closed()
        n = self._encoder.encode(msgs, self._queue)
        if not n:
            return
        queued = self._queued + n
        self._queued = queued
        if queued >= self.buffer_size:
            self.flush()
        elif queued == n:
            # The first tag held: it goes out within flush_interval, whatever comes next.
            self._held_since = time.monotonic()
            if self.flush_interval <= 0:
                self.flush()
                return
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return  # no loop: the next write or close() checks the time
            self._timer = loop.call_later(self.flush_interval, self._flush_due)
        elif time.monotonic() - self._held_since >= self.flush_interval:
            # The timer is late (a busy loop) or there is no loop.
            self.flush()

    def flush(self) -> None:
        """Write the tags held back now."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._fd < 0:
            self._raise_closed()
        if not self._queued:
            return
        queue = self._queue
        self._queue = []
        self._queued = 0
        self._write(queue)
        if self.drop_window and self._written - self._drop_mark >= self.drop_window:
            self._drop_cache()
        if self.fsync_interval > 0:
            self._after_write()

    def close(self) -> None:
        """Write what is held, fix the header flags to the tracks the stream really carried,
        and close the file. Closing twice does nothing."""
        fd = self._fd
        if fd < 0:
            return
        for timer in (self._timer, self._sync_timer):
            if timer is not None:
                timer.cancel()
        self._timer = self._sync_timer = None
        try:
            queue = self._queue
            self._queue = []
            self._queued = 0
            self._write(queue)
            fixup = self._encoder.flags_fixup()
            if fixup is not None:
                os.pwrite(fd, fixup, FLAGS_OFFSET)
            if self.fsync_interval > 0:
                os.fsync(fd)
        finally:
            self._fd = -1
            _open_files.discard(self)
            os.close(fd)

    def __del__(self) -> None:
        # A recorder dropped without on_end (a library user's server never closed).
        if getattr(self, "_fd", -1) >= 0:
            try:
                self.close()
            except OSError as exc:
                log.error("recording %s: not finished when dropped: %s", self.path, exc)

    # --- internals ---------------------------------------------------------------------

    def _write(self, parts: list[bytes | memoryview]) -> None:
        fd = self._fd
        while parts:
            batch = parts[:_IOV_MAX]
            done = os.writev(fd, batch)
            total = sum(map(len, batch))
            if done > 0:
                self._written += done
            if done == total:
                del parts[: len(batch)]
                continue
            if done <= 0:
                raise OSError(f"writev wrote {done} of {total} bytes")
            # A short write (a signal, a full disk): drop what went out, go on from there.
            i = 0
            while done >= len(parts[i]):
                done -= len(parts[i])
                i += 1
            parts[i] = parts[i][done:]
            del parts[:i]

    def _drop_cache(self) -> None:
        """Hand the pages written since the last call to writeback, and drop the ones of the
        window before, written back by now (a page still being written stays cached)."""
        end = self._written - self._written % _PAGE
        if end <= self._drop_from:
            return  # (a length of 0 would mean: to the end of the file)
        assert _fadvise is not None
        try:
            _fadvise(self._fd, self._drop_from, end - self._drop_from, os.POSIX_FADV_DONTNEED)
        except OSError:
            self.drop_window = 0  # not a file with a page cache (a pipe): nothing to drop
            return
        self._drop_from = self._drop_mark
        self._drop_mark = end

    def _after_write(self) -> None:
        """fsync now if the last one is fsync_interval old, else arm a timer for it."""
        self._dirty = True
        if self._sync_timer is not None:
            return
        wait = self._synced + self.fsync_interval - time.monotonic()
        if wait <= 0:
            self._sync()
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop: the next write or close() syncs
        self._sync_timer = loop.call_later(wait, self._sync_due)

    def _sync(self) -> None:
        os.fsync(self._fd)
        self._synced = time.monotonic()
        self._dirty = False

    def _flush_due(self) -> None:
        self._timer = None
        self._in_timer(self.flush)

    def _sync_due(self) -> None:
        self._sync_timer = None
        # What is held is on its way anyway: write it first, then force both to disk.
        self._in_timer(self._flush_and_sync)

    def _flush_and_sync(self) -> None:
        self.flush()
        if self._dirty:
            self._sync()

    def _in_timer(self, action: Callable[[], None]) -> None:
        if self._fd < 0:
            return
        try:
            action()
        except OSError as exc:
            # Nobody to raise to in a timer: close the file (what was written stays
            # readable) and raise it from the next call.
            log.error("recording %s: write failed, recording stopped: %s", self.path, exc)
            self._error = exc
            fd, self._fd = self._fd, -1
            _open_files.discard(self)
            with contextlib.suppress(OSError):
                os.close(fd)

    def _raise_closed(self) -> NoReturn:
        if self._error is not None:
            raise OSError(self._error.errno, f"{self.path}: {self._error}") from self._error
        raise ValueError(f"{self.path}: write to a closed FLV file")
