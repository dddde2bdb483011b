"""Prometheus metrics at `/metrics`, with prometheus-client.

This module owns the metric names and labels. One custom collector reads the live state at
scrape time (the registry's streams with their `StreamStats`, the sessions, the relay's
players), so a stream's series exist exactly while it is published: cardinality stays that
of the live streams. Each server has its own `CollectorRegistry` (several servers in one
process, as in the tests, do not share series); the process metrics (CPU, memory, file
descriptors) are prometheus-client's own collectors. The one series that cannot be read at
scrape time, the access callbacks' latency, is a histogram fed by an `AccessControl.on_callback`
observer that this module adds with the routes and removes when the application is cleaned up.
The pushes of the live streams have their series per target, read the same way.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CollectorRegistry, Histogram, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..server.push import Push, PushState

if TYPE_CHECKING:
    from .server import HttpServer

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class ServerCollector(Collector):
    """Every series of one server, made from its state when scraped."""

    def __init__(self, side: HttpServer) -> None:
        self.side = side

    def collect(self) -> Iterator[Metric]:
        side = self.side
        rtmp = side.rtmp
        labels = ["app", "stream"]

        bytes_in = CounterMetricFamily(
            "rtmp2_stream_bytes_in", "Bytes received from the publisher", labels=labels
        )
        bytes_out = CounterMetricFamily(
            "rtmp2_stream_bytes_out", "Bytes queued to the stream's players", labels=labels
        )
        frames = CounterMetricFamily(
            "rtmp2_stream_frames", "Messages received, by kind", labels=[*labels, "kind"]
        )
        players = GaugeMetricFamily("rtmp2_stream_players", "Players", labels=labels)
        bitrate_in = GaugeMetricFamily(
            "rtmp2_stream_bitrate_in_bits", "Bits/s received over 5 s", labels=labels
        )
        bitrate_out = GaugeMetricFamily(
            "rtmp2_stream_bitrate_out_bits", "Bits/s sent over 5 s", labels=labels
        )
        duration = GaugeMetricFamily(
            "rtmp2_stream_duration_seconds", "Seconds since the publish started", labels=labels
        )
        fps = GaugeMetricFamily("rtmp2_stream_fps", "Measured video frame rate", labels=labels)
        key_iv = GaugeMetricFamily(
            "rtmp2_stream_keyframe_interval_seconds", "Keyframe interval", labels=labels
        )
        drift = GaugeMetricFamily(
            "rtmp2_stream_av_drift_seconds", "Last video minus last audio timestamp", labels=labels
        )
        ratio = GaugeMetricFamily(
            "rtmp2_stream_realtime_ratio", "Media time / wall time over 5 s", labels=labels
        )
        jumps = CounterMetricFamily(
            "rtmp2_stream_timestamp_jumps", "Timestamp steps forward over 1 s", labels=labels
        )
        backward = CounterMetricFamily(
            "rtmp2_stream_timestamp_backward", "Timestamp steps backward", labels=labels
        )
        dropped = CounterMetricFamily(
            "rtmp2_stream_dropped_frames",
            "Frames dropped for slow players (current players)",
            labels=labels,
        )
        for stream in rtmp.registry:
            lv = [stream.app, stream.name]
            plist = side.players(stream.key)
            bytes_in.add_metric(lv, stream.bytes)
            bytes_out.add_metric(lv, sum(p.bytes_out for p in plist))
            players.add_metric(lv, len(plist))
            duration.add_metric(lv, stream.duration)
            stats = side.stats.get(stream.key)
            keyframes = 0
            if stats is not None and stats.stream is stream:
                keyframes = stats.keyframes
                r_in, r_out = stats.rates()
                bitrate_in.add_metric(lv, r_in)
                bitrate_out.add_metric(lv, r_out)
                h = stats.health()
                if h["fps"] is not None:
                    fps.add_metric(lv, h["fps"])
                if h["keyframe_interval"] is not None:
                    key_iv.add_metric(lv, h["keyframe_interval"])
                if h["av_drift_ms"] is not None:
                    drift.add_metric(lv, h["av_drift_ms"] / 1000)
                if h["realtime_ratio"] is not None:
                    ratio.add_metric(lv, h["realtime_ratio"])
                jumps.add_metric(lv, h["timestamp_jumps"])
                backward.add_metric(lv, h["timestamp_backward"])
            dropped.add_metric(lv, sum(p.dropped for p in plist))
            frames.add_metric([*lv, "video"], stream.video_frames)
            frames.add_metric([*lv, "audio"], stream.audio_frames)
            frames.add_metric([*lv, "data"], stream.data_messages)
            frames.add_metric([*lv, "keyframe"], keyframes)
        yield from (bytes_in, bytes_out, frames, players, bitrate_in, bitrate_out, duration)
        yield from (fps, key_iv, drift, ratio, jumps, backward, dropped)

        yield from _push_metrics(rtmp.pushes.all())

        states: Counter[str] = Counter()
        relay = rtmp.relay
        playing = {id(p.session) for p in relay.players()} if relay is not None else set()
        for session in rtmp.sessions:
            if session.published:
                states["publishing"] += 1
            elif id(session) in playing:
                states["playing"] += 1
            else:
                states["other"] += 1
        conns = GaugeMetricFamily("rtmp2_connections", "Open connections", labels=["state"])
        for state in ("publishing", "playing", "other"):
            conns.add_metric([state], states[state])
        yield conns
        yield GaugeMetricFamily("rtmp2_streams", "Live streams", value=len(rtmp.registry))
        refused = CounterMetricFamily(
            "rtmp2_refused_connections", "Connections refused at accept", labels=["reason"]
        )
        for reason, count in sorted(rtmp.refusal_counts.items()):
            refused.add_metric([reason], count)
        yield refused
        errors = CounterMetricFamily(
            "rtmp2_protocol_errors",
            "Connections closed for bad input from the peer, by error kind",
            labels=["kind"],
        )
        for kind, count in sorted(rtmp.protocol_errors.items()):
            errors.add_metric([kind], count)
        yield errors
        webhooks = rtmp.webhooks
        hooks = CounterMetricFamily(
            "rtmp2_webhook_events",
            "Webhook events delivered (sent), given up after every attempt failed (given_up), "
            "or dropped for a full queue (dropped)",
            labels=["outcome"],
        )
        for outcome in ("sent", "given_up", "dropped"):
            hooks.add_metric([outcome], getattr(webhooks, outcome))
        yield hooks
        yield CounterMetricFamily(
            "rtmp2_webhook_failed_deliveries",
            "Webhook deliveries that failed (not 2xx, a timeout, a refused connection); "
            "each is retried until the event is given up",
            value=webhooks.failed,
        )
        yield GaugeMetricFamily(
            "rtmp2_webhook_queue", "Webhook events waiting to be sent", value=webhooks.pending
        )
        yield GaugeMetricFamily(
            "rtmp2_http_flv_players", "HTTP-FLV players", value=len(side.flv_players())
        )
        yield CounterMetricFamily(
            "rtmp2_http_unauthorized_requests",
            "HTTP requests refused for a missing or wrong bearer token",
            value=side.refused_requests,
        )


def _push_metrics(pushes: list[Push]) -> Iterator[Metric]:
    """Per push target of the live streams: its index among the stream's targets and its
    URL without the stream key label it (two targets may differ only by their key)."""
    labels = ["app", "stream", "target", "url"]
    state = GaugeMetricFamily(
        "rtmp2_push_state", "1 for the push target's current state", labels=[*labels, "state"]
    )
    sent = CounterMetricFamily("rtmp2_push_bytes", "Bytes sent to the push target", labels=labels)
    skipped = CounterMetricFamily(
        "rtmp2_push_skipped_frames",
        "Messages dropped (to the next keyframe) as the push target fell behind",
        labels=labels,
    )
    reconnects = CounterMetricFamily(
        "rtmp2_push_reconnects", "Reconnects to the push target", labels=labels
    )
    index: Counter[tuple[str, str]] = Counter()
    for push in pushes:
        key = (push.app, push.name)
        lv = [push.app, push.name, str(index[key]), push.display]
        index[key] += 1
        for s in PushState:
            if s is not PushState.STOPPED:
                state.add_metric([*lv, s.value], 1.0 if push.state is s else 0.0)
        sent.add_metric(lv, push.bytes)
        skipped.add_metric(lv, push.skipped)
        reconnects.add_metric(lv, push.reconnects)
    yield from (state, sent, skipped, reconnects)


def add_routes(app: web.Application, side: HttpServer) -> None:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServerCollector(side))
    ProcessCollector(registry=registry)
    latency = Histogram(
        "rtmp2_access_callback_duration_seconds",
        "Time until the access callback service answered (or failed), by action and outcome",
        labelnames=["action", "outcome"],
        registry=registry,
    )

    def observe(action: str, outcome: str, seconds: float) -> None:
        latency.labels(action, outcome).observe(seconds)

    observers = side.rtmp.access.on_callback
    observers.append(observe)

    async def forget(_app: web.Application) -> None:
        if observe in observers:
            observers.remove(observe)

    app.on_cleanup.append(forget)

    async def metrics(request: web.Request) -> web.Response:
        body = generate_latest(registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    app.router.add_get("/metrics", metrics)
