"""End to end: real players against the `rtmp2-server` process while a real publisher streams.

Players: Debian's ffmpeg 5.1, ffmpeg 9, `rtmpdump` (librtmp) and GStreamer's `rtmp2src`. Each
joins a live stream mid-GOP and must receive every frame from the join point to the end, starting
at a keyframe, bit-exact: the RTMP payloads in its output file (FLV tag bodies) are compared with
those of the server's own recording of the publish, which the ingest tests compare with the
source. A late joiner must decode its first frame from the GOP cache at once; twenty players with
one that never reads must leave the others and the recording complete; and ffmpeg 9 must carry
HEVC, AV1, VP9, Opus, FLAC and AC-3 over Enhanced RTMP through publish, recording and playback
with the same packets (count and MD5) as the source.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import imageio_ffmpeg
import pytest

from rtmp2server.protocol import enhanced, flv
from rtmp2server.protocol.messages import AUDIO, VIDEO
from support.clients import Publisher
from support.server import ServerProcess, free_port, server_command
from test_relay import Peer, Stalled

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

FFMPEG9 = imageio_ffmpeg.get_ffmpeg_exe()
FFMPEG_DEBIAN = shutil.which("ffmpeg") or "ffmpeg"
RTMPDUMP = shutil.which("rtmpdump") or "rtmpdump"
GST_LAUNCH = shutil.which("gst-launch-1.0") or "gst-launch-1.0"

PLAYERS = ("ffmpeg-debian", "ffmpeg-9", "rtmpdump", "gst-rtmp2src")


# --- media ------------------------------------------------------------------------------------

TESTSRC = "-f lavfi -i testsrc=size=320x240:rate=30"
H264_AAC = f"{TESTSRC} {{sine}} -c:v libx264 -preset ultrafast -pix_fmt yuv420p -c:a aac -b:a 64k"
SINE44 = "-f lavfi -i sine=frequency=440:sample_rate=44100"
SINE48 = "-f lavfi -i sine=frequency=440:sample_rate=48000"

# name: (seconds, ffmpeg 9 arguments); every source is an FLV file made by ffmpeg 9.
SOURCES: dict[str, tuple[float, str]] = {
    "h264-aac-gop1s": (6.0, H264_AAC.format(sine=SINE44) + " -g 30"),
    "h264-aac-gop5s": (
        6.0,
        H264_AAC.format(sine=SINE44) + " -g 150 -keyint_min 150 -sc_threshold 0",
    ),
    # ~10 Mbit/s: more than the kernel's socket buffers can hide from a player that never reads.
    "h264-heavy": (
        8.0,
        f"-f lavfi -i testsrc2=size=960x540:rate=30 {SINE44} -c:v libx264 -preset ultrafast "
        "-qp 0 -g 30 -pix_fmt yuv420p -c:a aac",
    ),
    "hevc-opus": (
        3.0,
        f"{TESTSRC} {SINE48} -c:v libx265 -preset ultrafast "
        "-x265-params log-level=error:keyint=30:min-keyint=30 -pix_fmt yuv420p "
        "-c:a libopus -b:a 64k",
    ),
    "av1-flac": (
        3.0,
        f"{TESTSRC} {SINE48} -c:v libsvtav1 -preset 12 -g 30 -svtav1-params log-level=0 "
        "-pix_fmt yuv420p -c:a flac",
    ),
    # E-RTMP multitrack as ffmpeg 9 writes it: track 0 plain, track 1 in Multitrack/OneTrack.
    "multitrack": (
        3.0,
        f"{TESTSRC} {SINE48} -f lavfi -i sine=frequency=880:sample_rate=48000 "
        "-map 0:v -map 0:v -map 1:a -map 2:a -c:v:0 libx265 -preset:v:0 ultrafast "
        "-x265-params log-level=error:keyint=30 -c:v:1 libsvtav1 -preset:v:1 12 -g 30 "
        "-svtav1-params log-level=0 -pix_fmt yuv420p -c:a libopus -b:a 64k",
    ),
    "vp9-ac3": (
        3.0,
        f"{TESTSRC} {SINE48} -c:v libvpx-vp9 -deadline realtime -cpu-used 8 -g 30 "
        "-pix_fmt yuv420p -c:a ac3 -b:a 128k",
    ),
}


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # shared by every xdist worker
    path = base / "e2e-play-media"
    path.mkdir(parents=True, exist_ok=True)
    return path


def make_source(media_dir: Path, name: str) -> Path:
    """The FLV source `name` (made once, under a lock shared by xdist workers)."""
    seconds, args = SOURCES[name]
    path = media_dir / f"{name}.flv"
    with open(media_dir / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not path.exists():
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            cmd = [FFMPEG9, "-hide_banner", "-loglevel", "error", "-y", *args.split()]
            cmd += ["-t", str(seconds), "-f", "flv", str(tmp)]
            subprocess.run(cmd, check=True, capture_output=True, timeout=120)
            os.replace(tmp, path)
    return path


# --- what a file holds --------------------------------------------------------------------------


def frames(path: Path) -> list[flv.Tag]:
    """The audio and video tags that carry coded frames (no configuration, no end markers)."""
    _, tags, _ = flv.parse_flv(path.read_bytes())
    out = []
    for tag in tags:
        if tag.tag_type == VIDEO:
            info = enhanced.classify_video(tag.body)
            if info.is_config or info.is_sequence_end or info.command is not None:
                continue
        elif tag.tag_type == AUDIO:
            if enhanced.classify_audio(tag.body).is_config:
                continue
        else:
            continue
        out.append(tag)
    return out


@dataclass
class Joined:
    video_from: int  # index of the first received video frame in the recording
    audio_from: int
    video: int  # frames received
    audio: int


def assert_suffix_from_keyframe(received: Path, recording: Path) -> Joined:
    """`received` holds the recording's frames from a keyframe on to the end, bit-exact."""
    got, ref = frames(received), frames(recording)
    result = []
    for kind in (VIDEO, AUDIO):
        g = [t.body for t in got if t.tag_type == kind]
        r = [t.body for t in ref if t.tag_type == kind]
        assert g, f"{received.name}: no {'video' if kind == VIDEO else 'audio'} frames"
        # Every frame to the end: the received frames are the recording's last len(g) ones
        # (matched by position: identical payloads, such as silence, repeat).
        start = len(r) - len(g)
        assert start >= 0, f"{received.name}: {len(g)} frames of type {kind}, recorded {len(r)}"
        mismatch = next(
            (i for i, (a, b) in enumerate(zip(g, r[start:], strict=True)) if a != b), None
        )
        assert mismatch is None, (
            f"{received.name}: type {kind} frame {mismatch} of {len(g)} differs from recorded "
            f"frame {start + (mismatch or 0)}: received frames are lost, added or changed"
        )
        if kind == VIDEO:
            assert enhanced.classify_video(g[0]).is_keyframe, "playback starts mid-GOP"
        result.append((start, len(g)))
    # Timestamps: rebased near zero, never backwards per kind.
    for kind in (VIDEO, AUDIO):
        ts = [t.timestamp for t in got if t.tag_type == kind]
        assert ts == sorted(ts), f"{received.name}: type {kind} timestamps go back"
    assert min(t.timestamp for t in got) < 200
    (vs, vn), (as_, an) = result
    return Joined(vs, as_, vn, an)


def ffmpeg9(
    *args: str, check: bool = False, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    cmd = [FFMPEG9, "-hide_banner", "-nostdin", "-loglevel", "error", *args]
    return subprocess.run(cmd, capture_output=True, text=True, check=check, timeout=timeout)


def packet_hashes(path: Path) -> dict[str, list[tuple[int, str]]]:
    """Per media type, the (size, MD5) of every packet ffmpeg 9 demuxes (codec agnostic)."""
    out = ffmpeg9("-i", str(path), "-map", "0", "-c", "copy", "-f", "framemd5", "-", check=True)
    out = out.stdout
    kinds: dict[str, str] = {}
    packets: dict[str, list[tuple[int, str]]] = {}
    for line in out.splitlines():
        if line.startswith("#media_type"):
            index, kind = line.split()[1].rstrip(":"), line.split()[2]
            kinds[index] = kind
            packets[kind] = []
        elif line and not line.startswith("#"):
            fields = [f.strip() for f in line.split(",")]
            packets[kinds[fields[0]]].append((int(fields[4]), fields[5]))
    return packets


# --- processes --------------------------------------------------------------------------------


class RelayServer(ServerProcess):
    """`rtmp2-server` with extra command-line options."""

    def __init__(self, record_dir: Path, log_path: Path, extra: list[str]) -> None:
        super().__init__(record_dir, log_path, free_port())
        self.extra = extra

    def start(self, timeout: float = 15.0) -> RelayServer:
        self.record_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [*server_command(self.port, self.record_dir), *self.extra],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.wait_listening(timeout)
        return self

    def peak_rss_kib(self) -> int:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        return 0


@pytest.fixture
def relay_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RelayServer]:
    extra: list[str] = getattr(request, "param", [])
    server = RelayServer(tmp_path / "rec", tmp_path / "server.log", extra).start()
    request.node._rtmp_server = server  # conftest attaches the log to a failure report
    try:
        yield server
    finally:
        code = server.stop()
        assert code == 0, f"rtmp2-server exited {code} on SIGTERM:\n{server.log()}"


def play_command(player: str, url: str, out: Path) -> list[str]:
    if player in ("ffmpeg-debian", "ffmpeg-9"):
        exe = FFMPEG_DEBIAN if player == "ffmpeg-debian" else FFMPEG9
        args = "-hide_banner -nostdin -loglevel error -y -i {} -map 0 -c copy -f flv {}"
        return [exe, *args.format(url, out).split()]
    if player == "rtmpdump":
        return [RTMPDUMP, "-q", "--live", "-r", url, "-o", str(out)]
    if player == "gst-rtmp2src":
        return [GST_LAUNCH, *f"-q -e rtmp2src location={url} ! filesink location={out}".split()]
    raise ValueError(player)


class Player:
    def __init__(self, player: str, url: str, out: Path) -> None:
        self.name = player
        self.out = out
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            play_command(player, url, out),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
        )

    def wait(self, timeout: float = 20.0) -> str:
        try:
            output, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            output, _ = self.proc.communicate()
            raise AssertionError(
                f"{self.name} did not stop at the end of the stream:\n{output}"
            ) from None
        assert self.proc.returncode == 0, f"{self.name} exited {self.proc.returncode}:\n{output}"
        return output


def publish(server: ServerProcess, src: Path, stream: str, *extra: str) -> Publisher:
    args = f"-hide_banner -nostdin -loglevel error -re -i {src} -map 0 -c copy {' '.join(extra)}"
    publisher = Publisher([FFMPEG9, *args.split(), "-f", "flv", server.url(stream)])
    server.wait_publish("start", stream)
    return publisher


def wait_recording(server: ServerProcess, stream: str) -> Path:
    server.wait_publish("stop", stream)
    return server.recording(stream)


# --- tests ------------------------------------------------------------------------------------


@pytest.mark.parametrize("player", PLAYERS)
def test_player_joins_live_stream_and_gets_every_frame_bit_exact(
    player: str, relay_server: RelayServer, media_dir: Path, tmp_path: Path
) -> None:
    src = make_source(media_dir, "h264-aac-gop1s")
    publisher = publish(relay_server, src, "live1")
    time.sleep(2.4)  # mid-GOP (keyframes every second)
    out = tmp_path / f"{player}.flv"
    p = Player(player, relay_server.url("live1"), out)
    result = publisher.wait(30)
    assert result.returncode == 0, result.stdout
    p.wait()
    recording = wait_recording(relay_server, "live1")
    joined = assert_suffix_from_keyframe(out, recording)
    print(
        f"{player}: joined at video frame {joined.video_from}, received {joined.video} video "
        f"and {joined.audio} audio frames, all bit-exact to the end"
    )
    # Joined mid-stream, at a keyframe (one a second): the GOP cache's, or a later one if the
    # player took long to start.
    assert joined.video_from > 0 and joined.video_from % 30 == 0
    assert joined.video >= 30
    lines = relay_server.log_lines("play stop", "live1")
    assert len(lines) == 1 and "dropped=0" in lines[0], lines


def test_late_joiner_decodes_its_first_frame_from_the_gop_cache(
    relay_server: RelayServer, media_dir: Path
) -> None:
    # One keyframe every 5 s: joining at 2 s, a server without a GOP cache would make the
    # player wait 3 s for the next keyframe; this one sends the cached GOP at once.
    src = make_source(media_dir, "h264-aac-gop5s")
    first_frame = ("-map", "0:v", "-frames:v", "1", "-f", "framemd5", "-")
    decoded = ffmpeg9("-i", str(src), *first_frame, check=True).stdout.splitlines()[-1]
    publisher = publish(relay_server, src, "late")
    time.sleep(2.0)

    async def first_keyframe_ms() -> float:
        peer = await Peer.open(relay_server.port)
        await peer.play("late")
        t0 = time.monotonic()
        await peer.wait(lambda: any(m.type_id == VIDEO and _key(m.payload) for m in peer.av()))
        took = next(t for t, m in peer.media if m.type_id == VIDEO and _key(m.payload)) - t0
        await peer.close()
        return took * 1000

    sans_io_ms = asyncio.run(first_keyframe_ms())
    t0 = time.monotonic()
    out = ffmpeg9("-i", relay_server.url("late"), *first_frame, timeout=30)
    ffmpeg_ms = (time.monotonic() - t0) * 1000
    publisher.wait(30)
    print(
        f"late joiner at 2 s of a 5 s GOP: play -> first keyframe {sans_io_ms:.1f} ms "
        f"(sans-IO client); ffmpeg 9 connect+play+decode of the first frame {ffmpeg_ms:.0f} ms"
    )
    assert out.returncode == 0, out.stderr
    first = out.stdout.splitlines()[-1]
    # The first decoded frame is the source's keyframe at 0 s, picture for picture.
    assert first.split(",")[-1] == decoded.split(",")[-1]
    assert sans_io_ms < 500
    assert ffmpeg_ms < 2500
    assert relay_server.log_lines("joins from the GOP cache")


def _key(payload: bytes) -> bool:
    return enhanced.classify_video(payload).is_keyframe


@pytest.mark.parametrize("relay_server", [["--player-buffer", str(512 * 1024)]], indirect=True)
def test_twenty_players_one_stalled_others_and_recording_complete(
    relay_server: RelayServer, media_dir: Path, tmp_path: Path
) -> None:
    src = make_source(media_dir, "h264-heavy")
    size = src.stat().st_size
    stalled = Stalled(relay_server.port, "crowd")
    url = relay_server.url("crowd")
    kinds = ("ffmpeg-debian", "rtmpdump")
    players = [Player(kinds[i % 2], url, tmp_path / f"p{i}.flv") for i in range(19)]
    relay_server.wait_for_log("play start", count=20)
    baseline = relay_server.peak_rss_kib()
    publisher = publish(relay_server, src, "crowd")
    assert publisher.wait(40).returncode == 0, publisher.output
    for p in players:
        p.wait(30)
    recording = wait_recording(relay_server, "crowd")
    rss = relay_server.peak_rss_kib()
    stalled.close()
    assert packet_hashes(recording) == packet_hashes(src)
    for p in players:
        joined = assert_suffix_from_keyframe(p.out, recording)
        assert joined.video_from == 0 and joined.audio_from == 0, p.name  # all from the start
    lines = relay_server.wait_for_log("play stop.*crowd", count=20)
    behind = [ln for ln in lines if "dropped=0 " not in ln]
    print(
        f"20 players, 1 stalled: source {size / 1e6:.1f} MB; stalled player: {behind}; "
        f"server peak RSS {baseline / 1024:.0f} MiB before the publish, {rss / 1024:.0f} MiB "
        "after"
    )
    # The stalled player fell behind once, was cut back to keyframes and never caught up;
    # nobody else lost anything.
    assert len(behind) == 1 and "skips=1" in behind[0], lines
    assert relay_server.log_lines("bytes behind (bound 524288)")
    # Bounded: its queue stays near its 512 KiB bound instead of growing with the stream.
    assert rss - baseline < 64 * 1024


CODEC_PAIRS = ("hevc-opus", "av1-flac", "vp9-ac3")


@pytest.mark.parametrize("name", CODEC_PAIRS)
def test_enhanced_rtmp_published_recorded_and_played_with_ffmpeg9(
    name: str, relay_server: RelayServer, media_dir: Path, tmp_path: Path
) -> None:
    src = make_source(media_dir, name)
    source = packet_hashes(src)
    early = Player("ffmpeg-9", relay_server.url(name), tmp_path / "early.flv")
    relay_server.wait_for_log("play start")
    # The publisher announces its codecs in connect (fourCcList); the server answers with its
    # videoFourCcInfoMap / audioFourCcInfoMap / capsEx.
    codecs = "-rtmp_enhanced_codecs hvc1,av01,vp09,Opus,fLaC,ac-3"
    publisher = publish(relay_server, src, name, codecs)
    time.sleep(1.3)
    late = Player("ffmpeg-9", relay_server.url(name), tmp_path / "late.flv")
    assert publisher.wait(30).returncode == 0, publisher.output
    early.wait()
    late.wait()
    recording = wait_recording(relay_server, name)
    counts = {kind: len(p) for kind, p in source.items()}
    print(f"{name}: source packets {counts}")
    assert packet_hashes(recording) == source, "recording differs from the source"
    assert packet_hashes(early.out) == source, "the player from the start differs"
    joined = assert_suffix_from_keyframe(late.out, recording)
    print(f"{name}: late joiner from video frame {joined.video_from}: {joined}")
    assert joined.video_from > 0  # a keyframe after the first one: the GOP cache, not the start
    late_hashes = packet_hashes(late.out)
    for kind, packets in late_hashes.items():
        assert packets == source[kind][-len(packets) :]


def test_multitrack_recorded_whole_legacy_player_gets_track_zero_enhanced_client_all(
    relay_server: RelayServer, media_dir: Path, tmp_path: Path
) -> None:
    src = make_source(media_dir, "multitrack")
    source = packet_hashes(src)  # two video and two audio streams
    legacy = Player("ffmpeg-9", relay_server.url("mt"), tmp_path / "legacy.flv")
    relay_server.wait_for_log("play start")

    async def enhanced_client() -> list[tuple[int, bytes]]:
        peer = await Peer.open(relay_server.port, fourCcList=["*"], capsEx=2.0)
        await peer.play("mt")
        await peer.status("NetStream.Play.Start")
        publisher = publish(relay_server, src, "mt")
        await peer.status("NetStream.Play.UnpublishNotify", timeout=30)
        await peer.close()
        assert publisher.wait(30).returncode == 0, publisher.output
        return [(m.type_id, m.payload) for m in peer.av()]

    received = asyncio.run(enhanced_client())
    legacy.wait()
    recording = wait_recording(relay_server, "mt")
    _, tags, _ = flv.parse_flv(recording.read_bytes())
    assert received == [(t.tag_type, t.body) for t in tags if t.tag_type in (AUDIO, VIDEO)]
    recorded = packet_hashes(recording)
    assert sorted(map(len, recorded.values())) == sorted(map(len, source.values()))
    assert recorded == source
    # The legacy player: only the default track of each kind, as plain E-RTMP messages.
    played = packet_hashes(legacy.out)
    counts = {kind: len(p) for kind, p in played.items()}
    print(f"multitrack: source {[(k, len(v)) for k, v in source.items()]}; legacy got {counts}")
    _, legacy_tags, _ = flv.parse_flv(legacy.out.read_bytes())
    for tag in legacy_tags:
        if tag.tag_type == VIDEO:
            info = enhanced.classify_video(tag.body)
            assert info.multitrack is None and info.codec in ("hvc1", "av01"), info
        elif tag.tag_type == AUDIO:
            assert enhanced.classify_audio(tag.body).multitrack is None
    track0 = [t for t in frames(recording) if _track(t) == 0]
    assert [t.body for t in frames(legacy.out)] == [t.body for t in track0]


def _track(tag: flv.Tag) -> int:
    info = (enhanced.classify_video if tag.tag_type == VIDEO else enhanced.classify_audio)(tag.body)
    return info.tracks[0].track_id if info.tracks else 0
