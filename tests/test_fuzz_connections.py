"""Mutation fuzzing of recorded real client connections, beside a good publisher.

The captures (ffmpeg, GStreamer rtmp2sink and librtmp publishing the source media, rtmpdump
playing) are made once per session; see `support/capture.py`. The mutants, the replay and the
promise checked are described in `support/fuzz.py`. CI runs 300 mutants of seed 0; a longer run
is `scripts/fuzz.sh` (which sets the RTMP2_FUZZ_* variables read here).
"""

from __future__ import annotations

import asyncio
import os
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtmp2server.server.server import RTMPServer, ServerConfig
from support.capture import CAPTURE_STREAM, PUBLISHERS, Capture, record_captures
from support.clients import chunk_message, set_chunk_size
from support.fuzz import HANDSHAKE_END, FuzzConfig, Mutant, chunk_map, replay, run_fuzz
from support.media import SourceMedia
from support.probe import av_counts


@pytest.fixture(scope="session")
def captures(tmp_path_factory: pytest.TempPathFactory, source: SourceMedia) -> dict[str, Capture]:
    """The real clients' connections, recorded once and shared by all xdist workers."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent
    return record_captures(base / "fuzz-captures", source)


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    return int(value) if value else default


def _config() -> FuzzConfig:
    only = os.environ.get("RTMP2_FUZZ_ONLY", "")
    return FuzzConfig(
        seed=_env_int("RTMP2_FUZZ_SEED", 0),
        mutants=_env_int("RTMP2_FUZZ_MUTANTS", 300),
        seconds=float(os.environ.get("RTMP2_FUZZ_SECONDS", "") or 0),
        only=[int(i) for i in only.split(",")] if only else None,
        concurrency=_env_int("RTMP2_FUZZ_CONCURRENCY", 8),
    )


# --- the harness's own parts -------------------------------------------------------------------


def test_captures_are_whole_real_sessions(captures: dict[str, Capture]) -> None:
    for name in PUBLISHERS:
        capture = captures[name]
        assert capture.role == "publish"
        assert capture.data[0] == 3, f"{name}: C0 is {capture.data[0]}"
        # The name is in releaseStream/FCPublish/publish: a replay can rename every copy.
        assert capture.data.count(CAPTURE_STREAM.encode()) >= 1, name
        assert len(capture.data) > 50_000, f"{name} sent only {len(capture.data)} bytes"
    play = captures["rtmpdump-play"]
    assert play.role == "play" and b"play" in play.data and play.bytes_down > 50_000


def test_chunk_map_follows_a_real_capture_to_its_end(captures: dict[str, Capture]) -> None:
    """The header map is right: walking chunk sizes and lengths lands exactly on the end of
    each capture, and every chunk stream's type fields are ones the client really sends."""
    for capture in captures.values():
        cmap = chunk_map(capture.data)
        assert cmap.boundaries and cmap.boundaries[0] == HANDSHAKE_END
        types = {capture.data[f.offset] for f in cmap.fields if f.kind == "type"}
        assert types <= {1, 3, 4, 5, 8, 9, 15, 17, 18, 20}, (capture.name, types)
        assert 8 in types or capture.role == "play", capture.name


def test_chunk_map_of_hand_built_chunks() -> None:
    body = bytes(300)
    data = (
        bytes(HANDSHAKE_END)
        + set_chunk_size(256)
        + chunk_message(4, 9, body, stream_id=1, chunk_size=256)
    )
    cmap = chunk_map(data)
    first = HANDSHAKE_END
    second = first + 12 + 4  # the Set Chunk Size message
    third = second + 12 + 256  # the rest of the video message comes after one fmt 3 byte
    assert cmap.boundaries == [first, second, third]
    kinds = [(f.offset - first, f.kind) for f in cmap.fields]
    assert kinds[:6] == [
        (0, "basic"),
        (1, "timestamp"),
        (4, "length"),
        (7, "type"),
        (8, "stream"),
        (16, "basic"),
    ]


@given(seed=st.integers(0, 2**32), index=st.integers(0, 10**6))
@settings(max_examples=50, deadline=None)
def test_mutants_are_deterministic(captures: dict[str, Capture], seed: int, index: int) -> None:
    a = Mutant.make(seed, index, captures)
    b = Mutant.make(seed, index, captures)
    assert (a.data, a.pieces, a.steps) == (b.data, b.pieces, b.steps)
    assert a.data != captures[a.capture].data  # a mutant differs from its capture
    if a.pieces:
        assert sum(a.pieces) >= len(a.data) or a.mode == "segments"


def test_mutations_cover_every_kind(captures: dict[str, Capture]) -> None:
    rng = random.Random(1)
    seen = set()
    for _ in range(400):
        mutant = Mutant.make(0, rng.randrange(10**6), captures)
        seen.update(step.split()[0].split("@")[0] for step in mutant.steps)
        seen.add(mutant.mode)
    expected = {"bitflip", "bytes", "header", "truncate", "delete", "duplicate", "insert"}
    assert expected | {"splice", "blast", "segments", "resplit"} <= seen, seen


def test_control_ranges_are_the_commands(captures: dict[str, Capture]) -> None:
    capture = captures["ffmpeg-debian"]
    cmap = chunk_map(capture.data)
    joined = b"".join(capture.data[a:b] for a, b in cmap.control)
    for word in (b"connect", b"createStream", b"publish", b"@setDataFrame"):
        assert word in joined, word
    assert sum(b - a for a, b in cmap.control) < 5_000  # and not the media


@pytest.mark.parametrize("client", PUBLISHERS)
def test_unchanged_capture_sent_in_one_write_records_every_frame(
    client: str, captures: dict[str, Capture], source: SourceMedia, tmp_path: Path
) -> None:
    """What the fuzzer's "blast" mode sends, unmutated: the whole publish in one write, as a
    client that does not wait for answers would send it. The server must keep every frame
    (issue 9, item 1: today the media that arrives with the publish is dropped)."""
    stream = "fb0000000"

    async def main() -> None:
        server = RTMPServer(ServerConfig(host="127.0.0.1", port=0, record_dir=tmp_path))
        await server.start()
        try:
            data = captures[client].with_stream_name(stream)
            result = await replay(server.port, data, [], close_timeout=10, send_timeout=30)
            assert result.problem is None, result.problem
            for _ in range(100):
                if not server.sessions:
                    break
                await asyncio.sleep(0.05)
        finally:
            await server.close()

    asyncio.run(main())
    found = sorted((tmp_path / "live").glob(f"{stream}-*.flv"))
    assert found, f"{client}'s publish sent in one write left no recording"
    assert av_counts(found[0]) == source.counts


# --- the fuzz run --------------------------------------------------------------------------------


def test_mutated_real_connections_beside_a_good_publisher(
    captures: dict[str, Capture], source: SourceMedia, tmp_path: Path
) -> None:
    config = _config()
    report = asyncio.run(run_fuzz(captures, source, tmp_path / "rec", config, tmp_path / "out"))
    print(report.summary())
    rerun = (
        f"rerun one with RTMP2_FUZZ_SEED={config.seed} RTMP2_FUZZ_ONLY=<index> "
        "scripts/fuzz.sh (or scripts/fuzz.sh --seed S --only N); kept mutants are in "
        f"{tmp_path / 'out' / 'mutants'}"
    )
    assert not report.log_errors, (
        "the server logged errors:\n" + "\n".join(report.log_errors) + f"\n{rerun}"
    )
    assert not report.problems, "\n".join(report.problems) + f"\n{report.summary()}\n{rerun}"
    expected = len(config.only) if config.only is not None else config.mutants
    assert report.mutants_run == expected or config.seconds, report.summary()
