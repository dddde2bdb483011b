"""`rtmp2flvdemux` in real pipelines: live publishes from ffmpeg into `rtmp2serversrc`, files.

Each codec pair is published by a real client, demuxed, and every pad goes through its
standard 1.22 parser and a real decoder. The reference is the source file as ffmpeg 9 demuxes
it (`-copyts -c copy -f framemd5`: every packet's DTS, PTS, size and MD5): the bytes reaching
each parser must be those packets, with the same times, and each decoder must output one frame
per source packet.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gst_support import Gst, GstLaunch, Pipeline, collect, gst_inspect, publish, source_tags
from rtmp2server.gst.caps import caps_for
from rtmp2server.protocol import flv
from support.clients import FFMPEG_DEBIAN, Publisher, ffmpeg9
from support.media import source_media
from support.server import ServerProcess
from test_e2e_play import make_source

pytestmark = pytest.mark.timeout(180)

# Track -> (parser, decoder) for each codec ffmpeg writes.
H264 = ("h264parse", "avdec_h264")
H265 = ("h265parse", "avdec_h265")
AV1 = ("av1parse", "av1dec")
VP9 = ("vp9parse", "vp9dec")
AAC = ("aacparse", "avdec_aac")
OPUS = ("opusparse", "opusdec")
FLAC = ("flacparse", "flacdec")
AC3 = ("ac3parse", "avdec_ac3")
MP3 = ("mpegaudioparse", "mpg123audiodec")
EAC3 = ("ac3parse", "avdec_eac3")


@dataclass(frozen=True)
class Case:
    source: str  # a test_e2e_play source name, or "debian" for support.media's H.264/AAC
    client: str  # the publishing ffmpeg
    pads: dict[str, tuple[str, str]]


CASES = {
    "h264-aac-debian-ffmpeg": Case("debian", FFMPEG_DEBIAN, {"video": H264, "audio": AAC}),
    "h264-aac-ffmpeg9": Case("debian", "ffmpeg9", {"video": H264, "audio": AAC}),
    "h264-mp3-debian-ffmpeg": Case("h264-mp3", FFMPEG_DEBIAN, {"video": H264, "audio": MP3}),
    "hevc-opus": Case("hevc-opus", "ffmpeg9", {"video": H265, "audio": OPUS}),
    "av1-flac": Case("av1-flac", "ffmpeg9", {"video": AV1, "audio": FLAC}),
    "vp9-ac3": Case("vp9-ac3", "ffmpeg9", {"video": VP9, "audio": AC3}),
    "hevc-eac3": Case("hevc-eac3", "ffmpeg9", {"video": H265, "audio": EAC3}),
    "multitrack": Case(
        "multitrack",
        "ffmpeg9",
        {"video": H265, "video_1": AV1, "audio": OPUS, "audio_1": OPUS},
    ),
}

Packet = tuple[int, int, int, str]  # dts, pts (ms), size, MD5
FFMPEG9_QUIET = (ffmpeg9(), "-hide_banner", "-nostdin", "-loglevel", "error")


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent
    path = base / "e2e-play-media"  # the directory test_e2e_play makes its sources in
    path.mkdir(parents=True, exist_ok=True)
    return path


def source_path(media_dir: Path, name: str) -> Path:
    if name == "debian":
        return source_media(media_dir.parent / "e2e-media").path
    if name == "h264-mp3":  # legacy FLV MP3, as Debian's ffmpeg writes it
        return h264_file(media_dir, "320x240", ("-c:a", "libmp3lame", "-b:a", "64k"))
    if name == "hevc-eac3":  # E-RTMP "ec-3", by ffmpeg 9
        return encoded(
            media_dir / "hevc-eac3.flv",
            (ffmpeg9(), "-f", "lavfi", "-i", "testsrc=size=320x240:rate=30", "-f", "lavfi"),
            ("-i", "sine=sample_rate=48000", "-t", "2", "-c:v", "libx265", "-preset", "ultrafast"),
            ("-x265-params", "log-level=error:keyint=30", "-pix_fmt", "yuv420p", "-c:a", "eac3"),
            ("-ac", "2", "-b:a", "96k"),
        )
    return make_source(media_dir, name)


def reference(path: Path) -> dict[str, list[Packet]]:
    """Per pad name (video, video_1, ..., audio, ...), the packets ffmpeg 9 demuxes."""
    out = subprocess.run(
        [
            *FFMPEG9_QUIET,
            "-copyts",
            "-i",
            str(path),
            "-map",
            "0",
            "-c",
            "copy",
            "-f",
            "framemd5",
            "-",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    names: dict[str, str] = {}
    seen: dict[str, int] = {}
    packets: dict[str, list[Packet]] = {}
    for line in out.splitlines():
        if line.startswith("#media_type"):
            index, kind = line.split()[1].rstrip(":"), line.split()[2]
            n = seen.get(kind, 0)
            seen[kind] = n + 1
            names[index] = kind if n == 0 else f"{kind}_{n}"
            packets[names[index]] = []
        elif line and not line.startswith("#"):
            f = [x.strip() for x in line.split(",")]
            packets[names[f[0]]].append((int(f[1]), int(f[2]), int(f[4]), f[5]))
    return packets


def got_packets(buffers: list[dict[str, Any]]) -> list[Packet]:
    return [
        (
            b["dts"] // Gst.MSECOND,
            b["pts"] // Gst.MSECOND,
            b["size"],
            hashlib.md5(b["data"]).hexdigest(),
        )
        for b in buffers
    ]


def first_difference(expected: list[Packet], got: list[Packet]) -> str:
    for i, (a, b) in enumerate(zip(expected, got, strict=False)):
        if a != b:
            return f"packet {i}: expected dts/pts/size/md5 {a}, got {b}"
    if len(expected) != len(got):
        return f"{len(expected)} packets expected, {len(got)} arrived"
    return ""


def branches(pads: dict[str, tuple[str, str]]) -> str:
    out = []
    for pad, (parser, decoder) in pads.items():
        tag = pad.replace("_", "")
        out.append(
            f"d.{pad} ! queue max-size-time=0 max-size-bytes=0 max-size-buffers=0 ! "
            f"{parser} name=p{tag} ! {decoder} ! fakesink name=s{tag} sync=false"
        )
    return " ".join(out)


def publisher(client: str, src: Path, url: str) -> Publisher:
    exe = ffmpeg9() if client == "ffmpeg9" else client
    args = [exe, "-hide_banner", "-nostdin", "-loglevel", "error", "-re", "-i", str(src)]
    return Publisher([*args, "-map", "0", "-c", "copy", "-f", "flv", url])


def check_pads(
    p: Pipeline, pads: dict[str, tuple[str, str]], ref: dict[str, list[Packet]], got: dict[str, Any]
) -> None:
    for pad in pads:
        tag = pad.replace("_", "")
        es, decoded = got[f"p{tag}"], got[f"s{tag}"]
        problem = first_difference(ref[pad], got_packets(es.buffers))
        assert not problem, f"{pad}: {problem}"
        assert len(decoded) == len(ref[pad]), f"{pad}: decoded {len(decoded)} frames"
        flags = [b["flags"] & Gst.BufferFlags.DELTA_UNIT for b in es.buffers]
        if pad.startswith("video"):
            assert not flags[0] and any(flags), f"{pad}: keyframe flags {flags[:5]}"
    assert not p.errors(), p.errors()


@pytest.mark.parametrize("name", list(CASES))
def test_live_publish_demuxed_parsed_and_decoded(media_dir: Path, name: str) -> None:
    case = CASES[name]
    src = source_path(media_dir, case.source)
    ref = reference(src)
    assert sorted(ref) == sorted(case.pads), ref.keys()
    p = Pipeline(f"rtmp2serversrc name=src port=0 ! rtmp2flvdemux name=d {branches(case.pads)}")
    got = {}
    for pad in case.pads:
        tag = pad.replace("_", "")
        got[f"p{tag}"] = collect(p[f"p{tag}"])
        got[f"s{tag}"] = collect(p[f"s{tag}"], data=False)
    p.play()
    try:
        port = int(p["src"].get_property("port"))
        pub = publisher(case.client, src, f"rtmp://127.0.0.1:{port}/live/{name}")
        assert pub.wait(60).returncode == 0
        p.wait_eos(60)
        check_pads(p, case.pads, ref, got)
        print(f"{name}: {[(pad, len(ref[pad])) for pad in case.pads]} packets, all equal")
    finally:
        p.stop()


# --- decodebin and playbin ----------------------------------------------------------------------


class Counter:
    """Decoded buffers per media type ("video"/"audio") at dynamically linked fakesinks."""

    def __init__(self, pipeline: Gst.Pipeline) -> None:
        self.pipeline = pipeline
        self.counts: dict[str, int] = {}
        self.caps: list[str] = []
        self.lock = threading.Lock()
        self.sinks: dict[str, Gst.Element] = {}

    def pad_removed(self, _element: Gst.Element, pad: Gst.Pad) -> None:
        """decodebin drops a finished group's pads (chained streams): so go their sinks, or
        the pipeline would wait for their EOS, which decodebin keeps back."""
        sink = self.sinks.pop(pad.get_name(), None)
        if sink is not None:
            sink.set_locked_state(True)
            sink.set_state(Gst.State.NULL)
            self.pipeline.remove(sink)

    def pad_added(self, _element: Gst.Element, pad: Gst.Pad) -> None:
        caps = pad.get_current_caps() or pad.query_caps(None)
        kind = caps.get_structure(0).get_name().split("/")[0]
        sink = Gst.ElementFactory.make("fakesink")
        sink.set_property("sync", False)
        self.pipeline.add(sink)
        sink.sync_state_with_parent()
        assert pad.link(sink.get_static_pad("sink")) == Gst.PadLinkReturn.OK
        self.sinks[pad.get_name()] = sink
        sink.get_static_pad("sink").add_probe(
            Gst.PadProbeType.BUFFER | Gst.PadProbeType.EVENT_DOWNSTREAM, self._probe, kind
        )

    def _probe(self, _pad: Gst.Pad, info: Gst.PadProbeInfo, kind: str) -> Gst.PadProbeReturn:
        if info.type & Gst.PadProbeType.BUFFER:
            with self.lock:
                self.counts[kind] = self.counts.get(kind, 0) + 1
        else:
            event = info.get_event()
            if event.type == Gst.EventType.CAPS:
                s = event.parse_caps().get_structure(0)
                with self.lock:
                    self.caps.append(f"{s.get_name()} {s.get_value('width') or ''}")
        return Gst.PadProbeReturn.OK

    def wait_for(self, expected: dict[str, int], timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if all(self.counts.get(k, 0) >= n for k, n in expected.items()):
                    return
            time.sleep(0.1)


def decodebin_pipeline(description: str) -> tuple[Pipeline, Counter]:
    p = Pipeline(description)
    counter = Counter(p.pipeline)
    p["db"].connect("pad-added", counter.pad_added)
    p["db"].connect("pad-removed", counter.pad_removed)
    return p, counter


def expected_counts(ref: dict[str, list[Packet]]) -> dict[str, int]:
    """Decoded buffers per kind over every track (decodebin exposes each)."""
    counts: dict[str, int] = {}
    for pad, packets in ref.items():
        kind = pad.split("_")[0]
        counts[kind] = counts.get(kind, 0) + len(packets)
    return counts


@pytest.mark.parametrize("name", list(CASES))
def test_decodebin_picks_it_for_a_live_publish(media_dir: Path, name: str) -> None:
    case = CASES[name]
    src = source_path(media_dir, case.source)
    ref = reference(src)
    p, counter = decodebin_pipeline("rtmp2serversrc name=src port=0 ! decodebin name=db")
    p.play()
    try:
        port = int(p["src"].get_property("port"))
        pub = publisher(case.client, src, f"rtmp://127.0.0.1:{port}/live/{name}")
        assert pub.wait(60).returncode == 0
        p.wait_eos(60)
        assert counter.counts == expected_counts(ref), p.summary()
        names = [e.get_factory().get_name() for e in p["db"].iterate_elements()]
        assert "rtmp2flvdemux" in names and "flvdemux" not in names, names
    finally:
        p.stop()


def record(server: ServerProcess, src: Path, name: str) -> Path:
    """Publish `src` (ffmpeg 9) to the server; its recording (closed at publish stop)."""
    assert publisher("ffmpeg9", src, server.url(name)).wait(60).returncode == 0
    server.wait_publish("stop", name)
    return server.recording(name)


@pytest.mark.parametrize(
    "name", ["h264-aac-ffmpeg9", "hevc-opus", "av1-flac", "vp9-ac3", "multitrack"]
)
def test_playbin_plays_our_recording(
    media_dir: Path, name: str, rtmp_server: ServerProcess
) -> None:
    src = source_path(media_dir, CASES[name].source)
    recording = record(rtmp_server, src, name)
    ref = reference(recording)
    # The recording holds the source's packets, so the counts below are the source's.
    assert [len(v) for v in ref.values()] == [len(v) for v in reference(src).values()]
    playbin(recording, ref)


def playbin(path: Path, ref: dict[str, list[Packet]]) -> None:
    """playbin plays `path` (with fake sinks): one decoded buffer per packet of track 0."""
    src = path
    p = Pipeline(f"playbin uri=file://{src} video-sink=fakesink audio-sink=fakesink")
    video = audio = 0
    lock = threading.Lock()

    def count(kind: str) -> Callable[..., Gst.PadProbeReturn]:
        def probe(_pad: Gst.Pad, _info: Gst.PadProbeInfo) -> Gst.PadProbeReturn:
            nonlocal video, audio
            with lock:
                if kind == "video":
                    video += 1
                else:
                    audio += 1
            return Gst.PadProbeReturn.OK

        return probe

    for kind in ("video", "audio"):
        sink = p.pipeline.get_property(f"{kind}-sink")
        sink.set_property("sync", False)
        sink.get_static_pad("sink").add_probe(Gst.PadProbeType.BUFFER, count(kind))
    p.play()
    try:
        p.wait_eos(60)
        assert (video, audio) == (len(ref["video"]), len(ref["audio"])), p.summary()
    finally:
        p.stop()


# --- changes in the middle of a stream ----------------------------------------------------------


def encoded(path: Path, *args: tuple[str, ...]) -> Path:
    """`path`, made once (under a lock shared by xdist workers) by the ffmpeg command `args`."""
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not path.exists():
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            cmd = [a for part in args for a in part]
            cmd[1:1] = ["-hide_banner", "-loglevel", "error", "-y"]
            subprocess.run(
                [*cmd, "-f", "flv", str(tmp)], check=True, capture_output=True, timeout=60
            )
            os.replace(tmp, path)
    return path


def h264_file(media_dir: Path, size: str, audio: tuple[str, ...] = ()) -> Path:
    """One second of H.264 (and with `audio`'s codec arguments, a sine) by Debian's ffmpeg."""
    path = media_dir / f"h264-{size}{''.join('-' + a for a in audio[1:2])}.flv"
    inputs = (FFMPEG_DEBIAN, "-f", "lavfi", "-i", f"testsrc=size={size}:rate=30")
    if audio:
        inputs += ("-f", "lavfi", "-i", "sine=sample_rate=44100")
    video = ("-t", "1", "-c:v", "libx264", "-preset", "ultrafast", "-g", "30")
    return encoded(path, inputs, video, ("-pix_fmt", "yuv420p", *audio))


def test_resolution_change_mid_stream_updates_the_caps(media_dir: Path) -> None:
    first = source_tags(h264_file(media_dir, "320x240"))
    second = source_tags(h264_file(media_dir, "640x480"))
    last = max(t.timestamp for t in first) + 33
    tags = first + [flv.Tag(t.tag_type, t.timestamp + last, t.body) for t in second]
    frames = sum(1 for t in tags if t.tag_type == 9 and t.body[1] == 1)
    p = Pipeline(
        "rtmp2serversrc name=src port=0 ! rtmp2flvdemux name=d d.video ! h264parse name=parse ! "
        "avdec_h264 name=dec ! fakesink name=sink sync=false"
    )
    decoded = collect(p["sink"], data=False)
    widths: list[int] = []

    def on_caps(_pad: Gst.Pad, info: Gst.PadProbeInfo) -> Gst.PadProbeReturn:
        event = info.get_event()
        if event.type == Gst.EventType.CAPS:
            widths.append(event.parse_caps().get_structure(0).get_value("width"))
        return Gst.PadProbeReturn.OK

    p["sink"].get_static_pad("sink").add_probe(Gst.PadProbeType.EVENT_DOWNSTREAM, on_caps)
    segments: dict[str, list[tuple[Any, int, int]]] = {"in": [], "out": []}

    def on_segment(where: str) -> Callable[..., Gst.PadProbeReturn]:
        def probe(_pad: Gst.Pad, info: Gst.PadProbeInfo) -> Gst.PadProbeReturn:
            event = info.get_event()
            if event.type == Gst.EventType.SEGMENT:
                seg = event.parse_segment()
                segments[where].append((seg.format, seg.start, seg.base))
            return Gst.PadProbeReturn.OK

        return probe

    p["d"].get_static_pad("sink").add_probe(Gst.PadProbeType.EVENT_DOWNSTREAM, on_segment("in"))
    p["parse"].get_static_pad("sink").add_probe(
        Gst.PadProbeType.EVENT_DOWNSTREAM, on_segment("out")
    )
    p.play()
    try:
        port = int(p["src"].get_property("port"))
        assert publish(port, "resize", tags) == "NetStream.Publish.Start"
        p.wait_eos(60)
        assert len(decoded) == frames
        assert widths == [320, 640], widths
        # The live source's TIME segment (base: the running time the publish began at) is
        # passed on as it is.
        assert segments["out"] == segments["in"][-1:], segments
        assert segments["out"][0][0] == Gst.Format.TIME
    finally:
        p.stop()


def test_loop_with_two_publishers_of_different_codecs(media_dir: Path) -> None:
    h264 = source_path(media_dir, "debian")
    hevc = source_path(media_dir, "hevc-opus")
    first, second = reference(h264), reference(hevc)
    p, counter = decodebin_pipeline("rtmp2serversrc name=src port=0 loop=true ! decodebin name=db")
    p.play()
    try:
        port = int(p["src"].get_property("port"))
        url = f"rtmp://127.0.0.1:{port}/live/loop"
        assert publisher(FFMPEG_DEBIAN, h264, url).wait(60).returncode == 0
        # A decoder holds its last frames until it drains: at the codec change the demuxer
        # ends the old pads (EOS), so they come out then.
        assert publisher("ffmpeg9", hevc, url).wait(60).returncode == 0
        # The looping source never ends; an EOS into the demuxer, once the source has pushed
        # the last buffer of the second publish (publish-stop follows it), drains the chain.
        deadline = time.monotonic() + 30
        while len(p.element_messages("rtmp2serversrc-publish-stop")) < 2:
            assert time.monotonic() < deadline, p.summary()
            time.sleep(0.05)
        demux = next(e for e in p["db"].iterate_recurse() if e.get_name().startswith("rtmp2"))
        demux.get_static_pad("sink").send_event(Gst.Event.new_eos())
        p.wait_eos(60)
        total = {k: n + len(second[k]) for k, n in expected_counts(first).items()}
        assert counter.counts == total, p.summary()
        decoders = {e.get_factory().get_name() for e in p["db"].iterate_recurse()}
        # The first group's chain (H.264, AAC) was replaced by the second's.
        assert {"avdec_h265", "opusdec"} <= decoders and "avdec_h264" not in decoders, decoders
        assert not p.errors(), p.errors()
    finally:
        p.stop()


def test_a_corrupted_tag_mid_stream_is_skipped_with_one_warning(media_dir: Path) -> None:
    tags = source_tags(source_path(media_dir, "debian"))
    frames = sum(1 for t in tags if t.tag_type == 9 and t.body[1] == 1)
    audio = sum(1 for t in tags if t.tag_type == 8 and t.body[1] == 1)
    middle = len(tags) // 2
    bad = flv.Tag(9, tags[middle].timestamp, b"\x9f" + os.urandom(40))  # packet type 15
    tags = [*tags[:middle], bad, *tags[middle:]]
    p = Pipeline(
        "rtmp2serversrc name=src port=0 ! rtmp2flvdemux name=d "
        + branches({"video": H264, "audio": AAC})
    )
    video_out, audio_out = collect(p["svideo"], data=False), collect(p["saudio"], data=False)
    p.play()
    try:
        port = int(p["src"].get_property("port"))
        assert publish(port, "corrupt", tags) == "NetStream.Publish.Start"
        p.wait_eos(60)
        warnings = [m for m in p.messages if m.type == Gst.MessageType.WARNING]
        assert len(warnings) == 1, [m.parse_warning()[0].message for m in warnings]
        assert "packet type 15" in warnings[0].parse_warning()[0].message
        assert (len(video_out), len(audio_out)) == (frames, audio)
    finally:
        p.stop()


def test_caps_each_codec_gets_are_accepted_by_its_parser() -> None:
    """The caps themselves, checked against the parsers' sink templates."""
    from rtmp2server.gst.demux import make_caps
    from rtmp2server.protocol import media
    from test_flvdemux import AV1C, AVC_RECORD, FLAC_STREAMINFO, HVCC, OPUS_HEAD, VPCC

    configs = {
        "h264parse": media.avc_config(AVC_RECORD),
        "h265parse": media.hevc_config(HVCC),
        "av1parse": media.av1_config(AV1C),
        "vp9parse": media.vp9_config(VPCC),
        "aacparse": media.aac_config(b"\x12\x10"),
        "opusparse": media.opus_config(OPUS_HEAD),
        "flacparse": media.flac_config(FLAC_STREAMINFO),
        "ac3parse": media.AudioConfig("ac-3", rate=48000, channels=2),
    }
    for parser, config in configs.items():
        caps = make_caps(config)
        factory = Gst.ElementFactory.find(parser)
        assert factory.can_sink_all_caps(caps), (parser, caps.to_string())
        assert caps_for(config)[0] == caps.get_structure(0).get_name()
    assert "codec_data=(buffer)0142c00d" in make_caps(configs["h264parse"]).to_string()


def test_gst_launch_loads_it_through_the_plugin_loader(media_dir: Path) -> None:
    proc = gst_inspect("rtmp2flvdemux")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "primary + 1" in proc.stdout and "Codec/Demuxer" in proc.stdout, proc.stdout
    for template in ("video_%u", "audio_%u", "video/x-h265", "audio/x-opus"):
        assert template in proc.stdout, template
    src = source_path(media_dir, "hevc-opus")
    gst = GstLaunch(
        "playbin", f"uri=file://{src}", "video-sink=fakesink", "audio-sink=fakesink", "-m"
    )
    assert gst.wait(60) == 0, gst.output
    assert "rtmp2flvdemux" in gst.output and "GstFlvDemux" not in gst.output, gst.output


def test_a_track_without_caps_gives_one_warning_and_the_others_play(
    media_dir: Path, tmp_path: Path
) -> None:
    tags = source_tags(source_path(media_dir, "debian"))
    video = [t for t in tags if t.tag_type == 9]
    speex = [flv.Tag(8, t.timestamp, b"\xb2" + bytes(10)) for t in tags if t.tag_type == 8]
    path = tmp_path / "h264-speex.flv"
    body = b"".join(flv.tag(t.tag_type, t.timestamp, t.body) for t in sorted(
        video + speex, key=lambda t: t.timestamp))  # fmt: skip
    path.write_bytes(flv.file_header(audio=True, video=True) + body)
    p = Pipeline(
        f"filesrc location={path} ! rtmp2flvdemux name=d d.video ! h264parse ! avdec_h264 ! "
        "fakesink name=sink sync=false"
    )
    decoded = collect(p["sink"], data=False)
    p.play()
    try:
        p.wait_eos(60)
        warnings = [
            m.parse_warning()[0].message for m in p.messages if m.type == Gst.MessageType.WARNING
        ]
        assert len(warnings) == 1 and "speex" in warnings[0], warnings
        assert len(decoded) == sum(1 for t in video if t.body[1] == 1)
        assert [pad.get_name() for pad in p["d"].srcpads] == ["video"]
    finally:
        p.stop()
