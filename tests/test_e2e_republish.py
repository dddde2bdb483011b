"""End to end: encoders reconnecting to `rtmp2-server` while real players stay attached.

The server runs with its defaults (republish takeover, a 10 s grace for players). One stream
name is published by four ffmpeg processes in turn, the ways an encoder comes back:

1. the first one stalls (SIGSTOP: its connection stays open and says nothing, as an encoder
   on a dead link does) and a second takes the name over;
2. a third publishes while the second still runs, and takes it over;
3. the third is killed (SIGKILL) and a fourth publishes a second later, inside the grace;
4. the fourth runs to its end; the players get the end of the stream once the grace is over.

Players attached all the while (Debian's ffmpeg 5.1, ffmpeg 9, rtmpdump, GStreamer's
rtmp2src) must keep running through every change and exit cleanly at the end, and their files
must hold the frames of all four publishers, each from its first keyframe, bit-exact, with
timestamps that never go back (ffprobe judges). Each publish has its own complete recording.
"""

from __future__ import annotations

import itertools
import os
import signal
import time
from pathlib import Path

import pytest

from support.clients import Publisher
from support.probe import Packet, packets
from test_e2e_play import FFMPEG9, Player, RelayServer, make_source, media_dir, relay_server

__all__ = ["media_dir", "relay_server"]  # test_e2e_play's fixtures, used here by name

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

PLAYERS = ("ffmpeg-debian", "ffmpeg-9", "rtmpdump", "gst-rtmp2src")
NAME = "reconnect"


def start_publisher(server: RelayServer, src: Path, count: int) -> Publisher:
    """ffmpeg 9 publishing `src` in real time; returns once it is the `count`th publish."""
    args = f"-hide_banner -nostdin -loglevel error -re -i {src} -map 0 -c copy -f flv"
    publisher = Publisher([FFMPEG9, *args.split(), server.url(NAME)])
    server.wait_for_log(rf"publish start: .* stream={NAME}\b", count=count)
    return publisher


def recordings_in_order(server: RelayServer) -> list[Path]:
    found = server.recordings(NAME)
    return sorted(found, key=lambda p: p.stat().st_mtime_ns)


def hashes(found: list[Packet]) -> list[str]:
    return [h for _, _, _, h in found]


def test_players_stay_attached_across_takeovers_and_a_reconnect(
    relay_server: RelayServer, media_dir: Path, tmp_path: Path
) -> None:
    src = make_source(media_dir, "h264-aac-gop1s")  # 6 s, a keyframe every second
    stalled = start_publisher(relay_server, src, 1)
    players = [Player(kind, relay_server.url(NAME), tmp_path / f"{kind}.flv") for kind in PLAYERS]
    publishers = [stalled]
    try:
        relay_server.wait_for_log(rf"play start: .* stream={NAME}\b", count=len(PLAYERS))
        time.sleep(2.0)
        # 1. A stalled encoder: its connection is open and silent.
        os.kill(stalled.proc.pid, signal.SIGSTOP)
        time.sleep(1.0)
        second = start_publisher(relay_server, src, 2)
        publishers.append(second)
        relay_server.wait_for_log(r"publish stop: .*\(replaced by peer ", count=1)
        time.sleep(2.0)
        # 2. Another encoder while the second runs normally.
        third = start_publisher(relay_server, src, 3)
        publishers.append(third)
        relay_server.wait_for_log(r"publish stop: .*\(replaced by peer ", count=2)
        assert second.proc.wait(10) != 0  # its connection was closed under it
        time.sleep(2.0)
        # 3. An encoder killed, then restarted a second later.
        third.kill()
        relay_server.wait_for_log(rf"publish stop: .* stream={NAME}\b", count=3)
        time.sleep(1.0)
        fourth = start_publisher(relay_server, src, 4)
        publishers.append(fourth)
        for p in players:
            assert p.proc.poll() is None, f"{p.name} stopped at a reconnect: {p.wait(1)}"
        # 4. The fourth runs to its end; the players end 10 s (the grace) later.
        assert fourth.wait(30).returncode == 0, fourth.output
        ended = time.monotonic()
        for p in players:
            p.wait(30)
        waited = time.monotonic() - ended
    finally:
        os.kill(stalled.proc.pid, signal.SIGKILL)
        stalled.kill()
        for pub in publishers:
            if pub.running():
                pub.kill()
    relay_server.wait_for_log(rf"publish stop: .* stream={NAME}\b", count=4)
    print(f"players ended {waited:.1f} s after the last publisher")
    assert waited >= 9.5  # not before the grace ran out
    assert len(relay_server.log_lines("publisher back after")) == 3
    assert relay_server.log_lines("no publisher within 10 s")
    recordings = recordings_in_order(relay_server)
    assert len(recordings) == 4, recordings
    recorded = [packets(r) for r in recordings]
    for rec in recorded[1:]:
        assert rec["video"] and rec["audio"]
    for p in players:
        got = packets(p.out)
        counts = {}
        for kind in ("video", "audio"):
            mine = hashes(got[kind])
            # From the first publisher: from the keyframe the player joined at to its end;
            # then everything of the second, third and fourth (each starts at a keyframe).
            rest = [h for rec in recorded[1:] for h in hashes(rec[kind])]
            first = hashes(recorded[0][kind])
            joined = len(mine) - len(rest)
            assert 0 < joined <= len(first), (p.name, kind, len(mine), len(rest), len(first))
            if kind == "video":  # joined at a keyframe (one every 30 frames)
                assert (len(first) - joined) % 30 == 0, (p.name, len(first), joined)
            assert mine == first[-joined:] + rest, f"{p.name}: {kind} frames lost or changed"
            dts = [d for _, d, _, _ in got[kind]]
            assert all(d is not None for d in dts)
            steps = [b - a for a, b in itertools.pairwise(dts)]  # type: ignore[operator]
            assert min(steps) >= 0, f"{p.name}: {kind} timestamps go back"
            counts[kind] = (joined, len(mine))
        print(f"{p.name}: (frames from the first publisher, total) {counts}")
