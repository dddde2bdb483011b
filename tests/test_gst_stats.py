"""`rtmp2serversrc`'s `stats` property and `publish-accept` signal, with real publishes."""

from __future__ import annotations

import asyncio
import threading

import pytest

from gst_support import Gst, Pipeline, publish_async, source_tags
from rtmp2server.protocol import flv
from support.media import source_media

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="session")
def tags(tmp_path_factory: pytest.TempPathFactory) -> list[flv.Tag]:
    return source_tags(source_media(tmp_path_factory.getbasetemp().parent / "media").path)


def test_stats_during_and_after_a_publish(tags: list[flv.Tag]) -> None:
    p = Pipeline("rtmp2serversrc name=src port=0 loop=true ! fakesink sync=false")
    p.play()
    try:
        src = p["src"]
        before = src.get_property("stats")
        assert before.get_name() == "rtmp2serversrc-stats"
        assert before.get_value("publishing") is False and before.get_value("publishes") == 0
        port = int(src.get_property("port"))
        during: list[Gst.Structure] = []

        async def main() -> None:
            task = asyncio.ensure_future(publish_async(port, "cam", tags, realtime=True, hold=1.0))
            while not task.done():
                await asyncio.sleep(0.3)
                during.append(src.get_property("stats"))
            assert task.result() == "NetStream.Publish.Start"

        asyncio.run(asyncio.wait_for(main(), 60))
        live = [s for s in during if s.get_value("publishing")]
        assert live, [s.to_string() for s in during]
        assert any(s.get_value("bitrate") > 0 for s in live)
        last = live[-1]
        assert last.get_value("peer").startswith("127.0.0.1:")
        assert (last.get_value("application"), last.get_value("stream-key")) == ("live", "cam")
        assert (last.get_value("video-codec"), last.get_value("audio-codec")) == ("avc1", "mp4a")
        # After publish-stop (posted once the last buffer went out) the counts are final.
        p.wait_for(lambda m: _is(m, "rtmp2serversrc-publish-stop"))
        after = src.get_property("stats")
        assert after.get_value("publishing") is False and after.get_value("publishes") == 1
        assert after.get_value("bitrate") == 0
        video = sum(1 for t in tags if t.tag_type == 9)
        audio = sum(1 for t in tags if t.tag_type == 8)
        assert (after.get_value("video-frames"), after.get_value("audio-frames")) == (video, audio)
        assert after.get_value("bytes") == sum(len(t.body) for t in tags)
        assert after.get_value("peer") == last.get_value("peer")
    finally:
        p.stop()


def _is(msg: Gst.Message, name: str) -> bool:
    s = msg.get_structure()
    return msg.type == Gst.MessageType.ELEMENT and s is not None and s.get_name() == name


def test_publish_accept_decides_each_publish(tags: list[flv.Tag]) -> None:
    p = Pipeline("rtmp2serversrc name=src port=0 loop=true ! fakesink sync=false")
    asked: list[tuple[str, str, str]] = []
    threads: list[str] = []

    def on_publish(_src: Gst.Element, info: Gst.Structure) -> bool:
        asked.append(
            (info.get_value("stream-key"), info.get_value("query"), info.get_value("peer"))
        )
        threads.append(threading.current_thread().name)
        return bool(info.get_value("stream-key") == "good")

    p["src"].connect("publish-accept", on_publish)
    p.play()
    try:
        port = int(p["src"].get_property("port"))
        refused = asyncio.run(publish_async(port, "bad", tags[:5]))
        accepted = asyncio.run(publish_async(port, "good", tags[:5]))
        assert refused == "NetStream.Publish.BadName"
        assert accepted == "NetStream.Publish.Start"
        assert [a[0] for a in asked] == ["bad", "good"]
        assert all(peer.startswith("127.0.0.1:") for _, _, peer in asked)
        assert threading.main_thread().name not in threads
        # Posted by the streaming thread when it takes the publish: wait for the stop (which
        # comes after it), then only the accepted publish may have started.
        p.wait_for(lambda m: _is(m, "rtmp2serversrc-publish-stop"))
        starts = p.element_messages("rtmp2serversrc-publish-start")
        assert [s.get_value("stream-key") for s in starts] == ["good"]
    finally:
        p.stop()


def test_without_a_handler_every_publish_is_accepted(tags: list[flv.Tag]) -> None:
    p = Pipeline("rtmp2serversrc name=src port=0 ! fakesink sync=false")
    p.play()
    try:
        port = int(p["src"].get_property("port"))
        assert asyncio.run(publish_async(port, "any", tags[:5])) == "NetStream.Publish.Start"
    finally:
        p.stop()
