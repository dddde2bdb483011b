"""Recording: file names for any accepted name, the FLV file writer, and a killed server.

- Names: Unicode kept, separators and control characters replaced, 5000-character names
  shortened with a hash to exactly the file system's 255 bytes, collisions never overwrite.
- The writer (`server.flvfile`): writev batches and short writes, held tags written by size and
  by time on a real event loop, fsync when configured (counted through `os.fsync`), files
  finished when dropped or at interpreter exit, a failing disk stops one recording cleanly;
  written pages handed to writeback and out of the page cache a window behind (the real
  posix_fadvise, the calls logged), never with drop_window 0, and a pipe written all the same.
- End to end: Debian ffmpeg publishes a 240 kbit/s stream in real time into `rtmp2-server`,
  which is SIGKILLed 5 s in; ffprobe must find every frame sent up to a second before the kill.
"""

from __future__ import annotations

import asyncio
import errno
import gc
import hashlib
import logging
import os
import subprocess
import sys
import tempfile
import textwrap
import time
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtmp2server.protocol import flv
from rtmp2server.protocol.messages import Message
from rtmp2server.server import flvfile
from rtmp2server.server.flvfile import FLVFile
from rtmp2server.server.recorder import (
    NAME_MAX,
    Recorder,
    RecordingError,
    create_recording,
    fit_component,
    recording_names,
    safe_component,
)
from rtmp2server.server.registry import Stream
from support.clients import publish, start_looping_publisher
from support.media import SourceMedia
from support.probe import av_counts
from support.server import ServerProcess, running_server

WHEN = 1_764_633_600.25  # 2025-12-02T00:00:00.250Z
STAMP = "-20251202T000000.250Z"

# --- names -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("cam1", "cam1"),
        ("Ünïcödé 日本語 🎥 кириллица", "Ünïcödé 日本語 🎥 кириллица"),
        ("a b=c+d@e,f~g'h", "a b=c+d@e,f~g'h"),  # printable ASCII stays
        ("a/b\\c", "a_b_c"),
        ("../../etc/passwd", "___.._etc_passwd"),
        (".", "_"),
        ("..", "__"),
        ("...hidden.x", "___hidden.x"),
        ("", "_"),
        ("nul\x00here", "nul_here"),
        ("line\nforged\r\x1b[31m", "line_forged__[31m"),
        ("del\x7fc1\x80\x85\x9f", "del_c1___"),
        ("\u00a0nbsp", "\u00a0nbsp"),  # U+00A0 is past C1: kept
        ("lone\udc80surrogate", "lone_surrogate"),
    ],
)
def test_safe_component(name: str, expected: str) -> None:
    assert safe_component(name) == expected


def test_fit_component_keeps_what_fits_and_shortens_by_bytes() -> None:
    assert fit_component("a" * 255, 255) == "a" * 255
    long = "a" * 256
    short = fit_component(long, 255)
    digest = hashlib.sha256(long.encode()).hexdigest()[:8]
    assert short == "a" * 246 + "-" + digest
    assert len(short.encode()) == 255
    # Three-byte characters: the cut falls between characters, never inside one.
    cjk = fit_component("日" * 100, 100)
    head, _, tail = cjk.rpartition("-")
    assert head == "日" * 30 and len(tail) == 8 and len(cjk.encode()) == 99
    # Names with a common long prefix stay apart.
    assert fit_component("x" * 5000 + "1", 255) != fit_component("x" * 5000 + "2", 255)


def test_5000_character_names_fit_in_255_bytes() -> None:
    for name in ("s" * 5000, "ß" * 5000, "🎥" * 5000):
        first, second = _first(name, 2)
        assert len(first.encode()) <= NAME_MAX and len(second.encode()) <= NAME_MAX
        assert first.endswith(STAMP + ".flv") and second.endswith(STAMP + "-1.flv")
        assert first.startswith(name[:50])


def _first(name: str, n: int, limit: int = NAME_MAX) -> list[str]:
    names = recording_names(name, WHEN, limit)
    return [next(names) for _ in range(n)]


def test_byte_limit_exactly_at_255() -> None:
    room = NAME_MAX - len(STAMP) - len(".flv")  # 230 bytes for the stream name
    exact = "é" * (room // 2)  # 2 bytes each, 230 bytes
    assert _first(exact, 1) == [exact + STAMP + ".flv"]
    assert len(_first(exact, 1)[0].encode()) == 255
    # One byte more: shortened; 221 bytes of name are left, the cut between two characters.
    over = exact + "a"
    (name,) = _first(over, 1)
    assert name == "é" * 110 + "-" + hashlib.sha256(over.encode()).hexdigest()[:8] + STAMP + ".flv"
    assert len(name.encode()) == 254
    (name,) = _first("a" * (room + 1), 1)
    assert len(name.encode()) == 255 and name.startswith("a" * 221 + "-")
    # The collision suffix counts too: `-1` takes two more bytes from the name.
    first, second = _first("a" * room, 2)
    assert first == "a" * room + STAMP + ".flv"
    assert len(second.encode()) == 255 and second.endswith(STAMP + "-1.flv")
    assert not second.startswith("a" * room)


def test_collision_suffixes_keep_counting_within_the_limit() -> None:
    names = list(recording_names("a" * 500, WHEN))
    assert len(set(names)) == len(names) == 10_000
    assert all(len(n.encode()) <= NAME_MAX for n in names)
    assert names[9999].endswith(STAMP + "-9999.flv")


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=400), st.text(max_size=300))
def test_any_name_makes_a_real_file(app: str, name: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        f = create_recording(Path(tmp), app, name, WHEN, flush_interval=0)
        f.close()
        rel = f.path.relative_to(tmp)
        assert len(rel.parts) == 2, rel  # <app>/<file>: nothing escaped, nothing nested
        for part in rel.parts:
            assert len(os.fsencode(part)) <= NAME_MAX
            assert not part.startswith(".")
            assert not any(unicodedata.category(c) == "Cc" for c in part)
        assert f.path.read_bytes()[:3] == b"FLV"


def test_collisions_never_overwrite(tmp_path: Path) -> None:
    made = [create_recording(tmp_path, "live", "cam", WHEN) for _ in range(3)]
    for f in made:
        f.close()
    assert [f.path.name for f in made] == [
        f"cam{STAMP}.flv",
        f"cam{STAMP}-1.flv",
        f"cam{STAMP}-2.flv",
    ]
    # Two names that clean to the same component share the numbering, no file is reused.
    other = create_recording(tmp_path, "live", "cam", WHEN)
    other.close()
    assert other.path.name == f"cam{STAMP}-3.flv"


def test_long_app_gets_a_short_folder(tmp_path: Path) -> None:
    app = "ä" * 300  # 600 bytes
    f = create_recording(tmp_path, app, "s", WHEN)
    f.close()
    folder = f.path.parent.name
    assert f.path.parent.parent == tmp_path
    assert len(folder.encode()) == 255 and folder.startswith("ä" * 100)


def test_an_unmakeable_file_is_a_recording_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    with pytest.raises(RecordingError) as info:
        create_recording(blocker, "live", "s", WHEN)
    assert info.value.reason == os.strerror(errno.ENOTDIR)
    assert str(tmp_path) not in info.value.reason  # safe to tell the publisher
    rec = Recorder(blocker / "sub")
    with pytest.raises(RecordingError):
        rec.open(stream("live", "s"))
    assert rec.path is None


# --- the recorder ---------------------------------------------------------------------------


def stream(app: str = "live", name: str = "s") -> Stream:
    return Stream(app=app, name=name)


def video(ts: int, body: bytes = b"\x27\x01" + bytes(20)) -> Message:
    return Message(6, ts, 9, 1, body)


def audio(ts: int, body: bytes = b"\xaf\x01" + bytes(10)) -> Message:
    return Message(4, ts, 8, 1, body)


def meta() -> Message:
    return Message(5, 0, 18, 1, b"\x02\x00\x0aonMetaData\x08\x00\x00\x00\x00\x00\x00\x09")


def test_recorder_open_at_publish_then_records_long_unicode_names(tmp_path: Path) -> None:
    s = stream("ä" * 300, "名前" * 2500)
    rec = Recorder(tmp_path)
    s.add_sink(rec)
    path = rec.open(s)
    assert path.exists() and path.stat().st_size == 13
    assert rec.open(s) == path  # open twice: the same file
    s.deliver_all([meta(), video(0, b"\x17\x00" + bytes(8)), video(33), meta(), audio(40)])
    s.end()
    _header, tags = flv.read_flv(path.read_bytes())
    assert [(t.tag_type, t.timestamp) for t in tags] == [(18, 0), (9, 0), (9, 33), (8, 40)]


def test_recorder_without_open_makes_its_file_at_the_first_message(tmp_path: Path) -> None:
    s = stream()
    rec = Recorder(tmp_path)
    s.add_sink(rec)
    assert not (tmp_path / "live").exists()
    s.deliver(video(0))
    s.end()
    assert rec.path is not None
    assert len(flv.read_flv(rec.path.read_bytes())[1]) == 1


def test_recorder_that_cannot_open_lazily_leaves_one_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    s = stream()
    rec = Recorder(blocker)
    s.add_sink(rec)
    with caplog.at_level(logging.ERROR):
        s.deliver(video(0))
        s.deliver(video(33))
    assert rec not in s.sinks and rec.error is not None
    lines = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(lines) == 1 and "cannot record" in lines[0].getMessage()
    assert lines[0].exc_info is None  # a line, not a traceback


def test_recorder_options_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="flush_interval"):
        Recorder(Path("."), flush_interval=-1)
    with pytest.raises(ValueError, match="drop_window -1"):
        Recorder(Path("."), drop_window=-1)
    rec = Recorder(tmp_path, flush_interval=0.5, fsync_interval=2.0, drop_window=0)
    assert (rec.flush_interval, rec.fsync_interval) == (0.5, 2.0)
    s = stream()
    rec.open(s)
    assert rec._file is not None and rec._file.drop_window == 0  # handed to the file
    rec.on_end(s)


def test_disk_error_stops_one_recording_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    s = stream()
    rec = Recorder(tmp_path, buffer_size=0)
    s.add_sink(rec)
    path = rec.open(s)
    s.deliver(video(0))

    def full(fd: int, parts: list[bytes]) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(flvfile.os, "writev", full)
    with caplog.at_level(logging.ERROR):
        s.deliver(video(33))
    monkeypatch.undo()
    assert rec not in s.sinks
    assert rec.error is not None and rec.error.reason == os.strerror(errno.ENOSPC)
    (line,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert "No space left" in line.getMessage() and line.exc_info is None
    s.end()
    _header, tags = flv.read_flv(path.read_bytes())  # what was written stays readable
    assert [t.timestamp for t in tags] == [0]


# --- the file writer ------------------------------------------------------------------------


def item(tag_type: int, ts: int, body: bytes) -> flv.TagItem:
    return flv.TagItem(tag_type, ts, body)


def new_file(path: Path, **options: Any) -> FLVFile:
    return FLVFile.create(path, **options)


def test_close_fixes_the_header_flags_to_what_was_written(tmp_path: Path) -> None:
    f = new_file(tmp_path / "a.flv")
    f.write_messages([item(18, 0, b"\x02\x00\x0aonMetaData\x05"), item(9, 0, b"\x17\x00")])
    f.write_messages([item(9, 33, b"\x27\x01")])
    f.close()
    f.close()  # twice: nothing
    header, tags = flv.read_flv((tmp_path / "a.flv").read_bytes())
    assert (header.audio, header.video) == (False, True)
    assert [(t.tag_type, t.timestamp) for t in tags] == [(18, 0), (9, 0), (9, 33)]
    with pytest.raises(ValueError, match="closed"):
        f.write_messages([item(9, 66, b"\x27\x01")])


def test_create_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "x.flv"
    path.write_bytes(b"keep")
    with pytest.raises(FileExistsError):
        new_file(path)
    assert path.read_bytes() == b"keep"


def test_batches_larger_than_one_writev_are_split(tmp_path: Path) -> None:
    # More pieces than one writev takes (1024): split, and nothing lost.
    path = tmp_path / "b.flv"
    f = new_file(path, buffer_size=0)
    tags = [
        flv.Tag(8 if i % 3 else 9, (i * 0x1234567) & 0xFFFFFFFF, bytes([i & 0xFF]) * (i % 50))
        for i in range(1500)
    ]
    msgs = [item(t.tag_type, t.timestamp, t.body) for t in tags]
    f.write_messages(msgs[:1])
    f.write_messages(msgs[1:])
    f.write_messages([])
    f.close()
    data = path.read_bytes()
    assert len(data) == f.size
    assert flv.read_flv(data)[1] == tags


def test_short_writes_are_resumed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "c.flv"
    f = new_file(path, buffer_size=0)
    real = os.writev
    calls = 0

    def short(fd: int, parts: list[bytes]) -> int:  # at most 7 bytes per call
        nonlocal calls
        calls += 1
        return real(fd, [bytes(b"".join(parts)[:7])])

    monkeypatch.setattr(flvfile.os, "writev", short)
    f.write_messages([item(9, 40, b"\x17\x01" + bytes(30)), item(8, 41, b"\xaf\x01xyz")])
    monkeypatch.undo()
    assert calls == -(-(47 + 21) // 7)
    f.close()
    _header, got = flv.read_flv(path.read_bytes())
    assert [(t.tag_type, t.timestamp, t.body) for t in got] == [
        (9, 40, b"\x17\x01" + bytes(30)),
        (8, 41, b"\xaf\x01xyz"),
    ]


def test_a_writev_that_writes_nothing_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    f = new_file(tmp_path / "z.flv", buffer_size=0)
    monkeypatch.setattr(flvfile.os, "writev", lambda fd, parts: 0)
    with pytest.raises(OSError, match="wrote 0"):
        f.write_messages([item(8, 0, b"\xaf\x01x")])
    monkeypatch.undo()
    f.close()


def test_tags_are_held_until_the_size_threshold(tmp_path: Path) -> None:
    path = tmp_path / "d.flv"
    f = new_file(path, buffer_size=100, flush_interval=3600)
    f.write_messages([item(8, 0, b"\xaf\x01" + bytes(30))])  # 47 bytes: held
    assert path.stat().st_size == 13
    f.write_messages([item(8, 23, b"\xaf\x01" + bytes(60))])  # 47 + 77 >= 100: out
    assert path.stat().st_size == 13 + 47 + 77
    f.write_messages([item(9, 40, b"\x17\x01" + bytes(200))])  # big: straight out
    assert path.stat().st_size == f.size
    f.write_messages([item(8, 46, b"\xaf\x01x")])
    f.flush()
    assert path.stat().st_size == f.size
    f.write_messages([item(8, 69, b"\xaf\x01y")])
    f.close()
    _header, tags = flv.read_flv(path.read_bytes())
    assert [t.timestamp for t in tags] == [0, 23, 40, 46, 69]


def test_without_a_loop_the_next_write_checks_the_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [1000.0]
    monkeypatch.setattr(flvfile.time, "monotonic", lambda: now[0])
    path = tmp_path / "e.flv"
    f = new_file(path, flush_interval=1.0)
    f.write_messages([item(8, 0, b"\xaf\x01x")])
    now[0] += 0.5
    f.write_messages([item(8, 23, b"\xaf\x01y")])
    assert path.stat().st_size == 13  # half a second: still held
    now[0] += 0.5
    f.write_messages([item(8, 46, b"\xaf\x01z")])
    assert path.stat().st_size == f.size  # the first is a second old: all out
    f.close()


def test_flush_interval_zero_writes_every_call(tmp_path: Path) -> None:
    path = tmp_path / "f.flv"
    f = new_file(path, flush_interval=0)
    f.write_messages([item(8, 0, b"\xaf\x01x")])
    assert path.stat().st_size == f.size == 13 + 18
    f.close()


def test_held_tags_are_written_by_the_loop_timer_when_the_publisher_goes_silent(
    tmp_path: Path,
) -> None:
    path = tmp_path / "g.flv"

    async def main() -> tuple[float, float]:
        loop = asyncio.get_running_loop()
        f = new_file(path, flush_interval=0.3)
        queued = loop.time()
        f.write_messages([item(9, 0, b"\x17\x00" + bytes(10))])
        f.write_messages([item(8, 5, b"\xaf\x01x")])
        await asyncio.sleep(0)
        assert path.stat().st_size == 13  # held: nothing more comes, only the timer is left
        deadline = queued + 30
        while path.stat().st_size < f.size and loop.time() < deadline:
            await asyncio.sleep(0.01)
        seen = loop.time()
        size = path.stat().st_size
        f.close()
        return seen - queued, size

    waited, size = asyncio.run(main())
    assert size == 13 + 27 + 18, "the timer never wrote the held tags"
    assert waited >= 0.29  # not before flush_interval (less the loop's clock resolution)
    assert [t.timestamp for t in flv.read_flv(path.read_bytes())[1]] == [0, 5]


def test_a_size_flush_cancels_the_timer(tmp_path: Path) -> None:
    async def main() -> int:
        f = new_file(tmp_path / "h.flv", buffer_size=50, flush_interval=0.05)
        f.write_messages([item(8, 0, b"\xaf\x01x")])
        timer = f._timer
        assert timer is not None
        f.write_messages([item(8, 1, b"\xaf\x01" + bytes(40))])  # over 50: out now
        assert timer.cancelled() and f._timer is None
        await asyncio.sleep(0.1)
        size = f.size
        f.close()
        return size

    assert asyncio.run(main()) == 13 + 18 + 57


class FsyncCounter:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.fds: list[int] = []
        self.sizes: list[int] = []
        real = os.fsync

        def counting(fd: int) -> None:
            self.fds.append(fd)
            self.sizes.append(os.fstat(fd).st_size)
            real(fd)

        monkeypatch.setattr(flvfile.os, "fsync", counting)


@pytest.fixture
def fsyncs(monkeypatch: pytest.MonkeyPatch) -> Iterator[FsyncCounter]:
    yield FsyncCounter(monkeypatch)


def test_no_fsync_unless_configured(tmp_path: Path, fsyncs: FsyncCounter) -> None:
    async def main() -> None:
        f = new_file(tmp_path / "i.flv", buffer_size=0, flush_interval=0.01)
        for ts in range(20):
            f.write_messages([item(8, ts, b"\xaf\x01x")])
            await asyncio.sleep(0.01)
        f.close()

    asyncio.run(main())
    assert fsyncs.fds == []


def test_fsync_every_interval_and_at_close(tmp_path: Path, fsyncs: FsyncCounter) -> None:
    path = tmp_path / "j.flv"

    async def main() -> tuple[int, int]:
        loop = asyncio.get_running_loop()
        f = new_file(path, flush_interval=0.05, fsync_interval=0.2)
        fd = f._fd
        f.write_messages([item(8, 0, b"\xaf\x01x")])
        # Nothing more arrives: the flush timer writes, the fsync timer syncs.
        deadline = loop.time() + 30
        while not fsyncs.fds and loop.time() < deadline:
            await asyncio.sleep(0.01)
        f.write_messages([item(8, 1, b"\xaf\x01y")])
        f.close()
        return fd, f.size

    fd, size = asyncio.run(main())
    assert fsyncs.fds == [fd, fd]  # one by the timer, one at close
    assert fsyncs.sizes == [13 + 18, size]  # the held tag was written before the sync


def test_fsync_without_a_loop_on_the_next_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fsyncs: FsyncCounter
) -> None:
    now = [50.0]
    monkeypatch.setattr(flvfile.time, "monotonic", lambda: now[0])
    f = new_file(tmp_path / "k.flv", buffer_size=0, fsync_interval=2.0)
    f.write_messages([item(8, 0, b"\xaf\x01x")])
    now[0] += 1
    f.write_messages([item(8, 1, b"\xaf\x01x")])
    assert fsyncs.fds == []
    now[0] += 1
    f.write_messages([item(8, 2, b"\xaf\x01x")])
    assert len(fsyncs.fds) == 1
    f.close()
    assert len(fsyncs.fds) == 2


# --- the page cache ------------------------------------------------------------------------

PAGE = flvfile._PAGE


class FadviseLog:
    """Every posix_fadvise of the writer, with the file's size at the call; then the real one."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[int, int, int, int]] = []  # offset, length, advice, size
        real = os.posix_fadvise

        def logged(fd: int, offset: int, length: int, advice: int) -> None:
            self.calls.append((offset, length, advice, os.fstat(fd).st_size))
            real(fd, offset, length, advice)

        monkeypatch.setattr(flvfile, "_fadvise", logged)


@pytest.fixture
def fadvise(monkeypatch: pytest.MonkeyPatch) -> FadviseLog:
    return FadviseLog(monkeypatch)


def page_tags(n: int) -> list[flv.Tag]:
    """`n` video tags of a quarter page of body each (the writer's page size)."""
    return [flv.Tag(9, ts, bytes([ts & 0xFF]) * (PAGE // 4)) for ts in range(n)]


def test_written_pages_leave_the_cache_one_window_behind(
    tmp_path: Path, fadvise: FadviseLog
) -> None:
    path = tmp_path / "p.flv"
    f = new_file(path, buffer_size=0, drop_window=3 * PAGE)
    tags = page_tags(60)
    for t in tags:
        f.write_messages([item(t.tag_type, t.timestamp, t.body)])
    f.close()
    assert flv.read_flv(path.read_bytes())[1] == tags  # through the real fadvise: all there
    # A call each time 3 more whole pages were written (the first page stays cached): from
    # where the call before last ended, so each window is advised twice, once to start its
    # writeback and once to drop it, up to the last whole page written, never beyond.
    ends = list(range(4 * PAGE, f.size + 1, 3 * PAGE))
    assert len(ends) >= 4
    starts = [PAGE, PAGE, *ends[:-2]]
    assert [(o, o + n) for o, n, _, _ in fadvise.calls] == list(zip(starts, ends, strict=True))
    assert all(a == os.POSIX_FADV_DONTNEED for _, _, a, _ in fadvise.calls)
    assert all(o + n <= size for o, n, _, size in fadvise.calls)


def test_drop_window_zero_leaves_the_cache_alone(tmp_path: Path, fadvise: FadviseLog) -> None:
    f = new_file(tmp_path / "q.flv", buffer_size=0, drop_window=0)
    for t in page_tags(40):
        f.write_messages([item(t.tag_type, t.timestamp, t.body)])
    f.close()
    assert fadvise.calls == []


def test_a_pipe_is_written_without_dropping_anything(tmp_path: Path) -> None:
    # posix_fadvise fails on a pipe (ESPIPE): the writer stops advising and goes on writing.
    r, w = os.pipe()
    try:
        f = FLVFile(w, tmp_path / "pipe", audio=False, buffer_size=0, drop_window=PAGE)
        tags = page_tags(16)  # 4 pages and a bit, within the pipe buffer (no flags to fix)
        for t in tags:
            f.write_messages([item(t.tag_type, t.timestamp, t.body)])
        assert f.drop_window == 0
        f.close()
        data = b""
        while chunk := os.read(r, 1 << 16):
            data += chunk
    finally:
        os.close(r)
    assert flv.read_flv(data)[1] == tags


def test_a_failing_timer_write_closes_the_file_and_the_next_write_raises(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "l.flv"

    def failing(fd: int, parts: list[bytes]) -> int:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    async def main() -> FLVFile:
        f = new_file(path, flush_interval=0.01)
        monkeypatch.setattr(flvfile.os, "writev", failing)
        f.write_messages([item(8, 0, b"\xaf\x01x")])
        for _ in range(3000):
            await asyncio.sleep(0.01)
            if f.closed:
                break
        return f

    with caplog.at_level(logging.ERROR):
        f = asyncio.run(main())
    monkeypatch.undo()
    assert f.closed
    assert any("write failed" in r.getMessage() for r in caplog.records)
    with pytest.raises(OSError) as info:
        f.write_messages([item(8, 1, b"\xaf\x01x")])
    assert info.value.errno == errno.EIO
    assert path.read_bytes() == flv.file_header(audio=True, video=True)


def test_a_dropped_recorder_finishes_its_file(tmp_path: Path) -> None:
    s = stream()
    rec = Recorder(tmp_path)
    path = rec.open(s)
    rec.on_messages(s, [video(0), video(33)])  # held (far below the size threshold)
    assert path.stat().st_size == 13
    open_before = len(flvfile._open_files)
    gc.disable()
    try:
        del rec  # reference counting alone: no gc.collect()
    finally:
        gc.enable()
    assert len(flvfile._open_files) == open_before - 1
    header, tags = flv.read_flv(path.read_bytes())
    assert (header.audio, header.video) == (False, True)
    assert [t.timestamp for t in tags] == [0, 33]


def test_close_all_at_exit_finishes_every_open_file(tmp_path: Path) -> None:
    files = [new_file(tmp_path / f"{i}.flv") for i in range(3)]
    for f in files:
        f.write_messages([item(8, 0, b"\xaf\x01x")])
    flvfile._close_all_at_exit()
    assert all(f.closed for f in files)
    for f in files:
        assert len(flv.read_flv(f.path.read_bytes())[1]) == 1


def test_a_library_user_who_never_closes_gets_the_file_at_exit(tmp_path: Path) -> None:
    # The recorder is kept alive to the end (in a module global and a reference cycle), so
    # only the interpreter's exit can finish it.
    script = textwrap.dedent(
        f"""
        import asyncio, gc
        from pathlib import Path
        from rtmp2server.protocol.messages import Message
        from rtmp2server.server.recorder import Recorder
        from rtmp2server.server.registry import Stream

        gc.disable()
        s = Stream(app="live", name="never-closed")
        rec = Recorder(Path({str(tmp_path)!r}))
        s.add_sink(rec)
        rec.cycle = rec

        async def main():
            rec.open(s)
            s.deliver_all([Message(6, ts, 9, 1, b"\\x27\\x01" + bytes(50)) for ts in range(10)])
            print(rec.path)
            # The loop ends at once: the flush timer never fires.

        asyncio.run(main())
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env
    )
    assert out.returncode == 0, out.stderr
    path = Path(out.stdout.strip())
    header, tags = flv.read_flv(path.read_bytes())
    assert len(tags) == 10 and (header.audio, header.video) == (False, True)


# --- end to end: a killed server -------------------------------------------------------------

FPS = 30  # the source of support.media
AUDIO_RATE = 44100 / 1024  # AAC frames a second
KILL_AFTER = 5.0
# What a frame may take from ffmpeg's pacing to the recorder's queue on a busy 2-core machine.
SLACK = 0.5


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_sigkilled_server_keeps_all_but_the_last_second(
    tmp_path: Path, source: SourceMedia, request: pytest.FixtureRequest
) -> None:
    server = ServerProcess(tmp_path / "rec", tmp_path / "server.log").start()
    request.node._rtmp_server = server
    publisher = start_looping_publisher(source.path, server.url("killed"))
    try:
        server.wait_publish("start", "killed", timeout=30)
        published = time.time()  # the publish began at or before this moment
        time.sleep(max(0.0, published + KILL_AFTER - time.time()))
        killed = time.time()
        server.kill()
    finally:
        publisher.kill()
    path = server.recording("killed")
    _header, tags, rest = flv.parse_flv(path.read_bytes())  # consistent up to its last tag
    # A frame ffmpeg paces to time p after the publish began left it by `published + p`; the
    # server queued it straight away and must have written it within flush_interval (1 s).
    sent = killed - 1.0 - SLACK - published
    want_video = int(sent * FPS)
    want_audio = int(sent * AUDIO_RATE)
    counts = av_counts(path)
    assert counts["video"] >= want_video and counts["audio"] >= want_audio, (
        f"{path.name}: {counts} after a kill {killed - published:.2f} s into the publish, "
        f"expected at least {want_video} video and {want_audio} audio frames; "
        f"{path.stat().st_size} bytes, {len(tags)} complete tags, {rest} trailing"
    )


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_ffmpeg_publish_with_long_unicode_app_and_name_is_recorded_whole(
    tmp_path: Path, source: SourceMedia
) -> None:
    # Names that used to get Publish.Start and then no file (File name too long): a 300-byte
    # app (over NAME_MAX) and a 400-byte name (over the 230 left beside the time stamp).
    # 300 characters is over the default name limit (256): raised here, to show that every
    # name the server accepts records.
    app = "a" * 300
    name = "ü" * 200
    with running_server(
        tmp_path / "rec", tmp_path / "log", args=["--max-name-length", "300"]
    ) as rtmp_server:
        _record_long_names(rtmp_server, source, app, name)


def _record_long_names(
    rtmp_server: ServerProcess, source: SourceMedia, app: str, name: str
) -> None:
    result = publish("ffmpeg-debian", source.path, rtmp_server.url(name, app=app))
    assert result.returncode == 0, result.stdout
    rtmp_server.wait_publish("stop", name)
    (folder,) = rtmp_server.record_dir.iterdir()
    (path,) = folder.iterdir()
    assert len(folder.name.encode()) == NAME_MAX
    assert len(path.name.encode()) == NAME_MAX - 1  # 221 bytes of name: the cut between two ü
    assert path.name.startswith("ü" * 50)
    deadline = time.monotonic() + 5.0
    counts = av_counts(path)
    while counts != source.counts and time.monotonic() < deadline:
        time.sleep(0.1)  # the recorder may still be writing out the last tags
        counts = av_counts(path)
    assert counts == source.counts, f"recorded {counts}, source has {source.counts}"
