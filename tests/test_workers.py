"""`rtmp2-server --workers 2`: two processes on one port, with real publishers and players.

Each test runs the command as a user would, plus the test-only environment setting
`RTMP2SERVER_WORKER_PORTS` that gives worker i a port of its own as well (SO_REUSEPORT alone
spreads connections at random), so that a test chooses the worker each client reaches:

- a publisher (ffmpeg 9) on worker 0 and players (rtmpdump, Debian's ffmpeg) on worker 1: the
  players get every frame from a keyframe on, bit-exact to worker 0's recording, and the
  stream is recorded once;
- a second publisher of the name on worker 1 takes it over (the default policy, as in one
  process) or is refused (`--republish refuse`), and never are two recordings open at once;
- worker 1 killed with SIGKILL while it plays a stream of worker 0: it is restarted (a log
  line), its player is gone, and the publisher, the recording and a player on worker 0 go on;
  the restarted worker plays the stream again;
- the two workers share the public port, and SIGTERM ends them all with exit code 0.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from rtmp2server import config
from rtmp2server import workers as workers_module
from rtmp2server.server.registry import Stream
from rtmp2server.workers import (
    ENV_TEST_PORTS,
    Supervisor,
    WorkerRegistry,
    _Slot,
    worker_count,
)
from support.clients import Publisher, start_looping_publisher
from support.probe import av_counts, probe_errors
from support.server import ServerProcess, free_port, running_server, server_command
from test_e2e_play import (
    FFMPEG9,
    Player,
    assert_suffix_from_keyframe,
    make_source,
    media_dir,
)

__all__ = ["media_dir"]  # test_e2e_play's fixture, used here by name

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

WORKERS = 2


class Workers(ServerProcess):
    """`rtmp2-server --workers 2` with a port of its own for each worker (`url(worker=i)`)."""

    def __init__(self, tmp: Path, args: list[str]) -> None:
        super().__init__(tmp / "rec", tmp / "server.log", free_port(), args)
        self.worker_ports = [free_port() for _ in range(WORKERS)]

    def start(self, timeout: float = 20.0) -> Workers:
        self.record_dir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, **{ENV_TEST_PORTS: ",".join(map(str, self.worker_ports))})
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                server_command(self.port, self.record_dir, extra=self.args),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.wait_ready(WORKERS, timeout)
        return self

    def wait_ready(self, count: int, timeout: float = 20.0) -> None:
        """Until `count` "worker i ready" lines in all, and every port accepts."""
        self.wait_for_log(r"rtmp2server: worker \d ready", count=count, timeout=timeout)
        for port in (self.port, *self.worker_ports):
            with socket.create_connection(("127.0.0.1", port), timeout=5):
                pass

    def url(self, stream: str, app: str = "live", worker: int | None = None) -> str:
        port = self.port if worker is None else self.worker_ports[worker]
        return f"rtmp://127.0.0.1:{port}/{app}/{stream}"

    def pid(self, worker: int) -> int:
        lines = self.log_lines(f"worker {worker} started (pid ")
        match = re.search(r"\(pid (\d+)\)", lines[-1])
        assert match, lines
        return int(match.group(1))

    def worker_lines(self, worker: int, *needles: str) -> list[str]:
        return self.log_lines(f"[worker {worker}]:", *needles)


@pytest.fixture
def workers(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Workers]:
    extra: list[str] = getattr(request, "param", [])
    # A short grace: players end 1 s after the stream does, not 10.
    server = Workers(tmp_path, ["--workers", str(WORKERS), "--republish-grace", "1", *extra])
    server.start()
    request.node._rtmp_server = server  # conftest attaches the log to a failure report
    try:
        yield server
    finally:
        code = server.stop(20)
        assert code == 0, f"rtmp2-server --workers exited {code} on SIGTERM:\n{server.log()}"
        assert not server.log_lines("Traceback"), server.log()


def start_publisher(src: Path, url: str) -> Publisher:
    """ffmpeg 9 publishing `src` to `url` once, in real time."""
    args = f"-hide_banner -nostdin -loglevel error -re -i {src} -map 0 -c copy -f flv {url}"
    return Publisher([FFMPEG9, *args.split()])


def publish(server: Workers, src: Path, stream: str, worker: int, count: int = 1) -> Publisher:
    """`start_publisher` to `worker`; returns once its publish started (the `count`th
    "publish start" of `stream`)."""
    publisher = start_publisher(src, server.url(stream, worker=worker))
    server.wait_for_log(rf"publish start: .* stream={stream}\b", count=count)
    return publisher


# --- configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"), [("1", 1), ("2", 2), ("16", 16), ("auto", 0), ("0", 0)]
)
def test_workers_flag_values(text: str, expected: int) -> None:
    assert config.KEY_BY_NAME["workers"].parse_flag(text) == expected


@pytest.mark.parametrize("text", ["-1", "two", "", "257", "1.5"])
def test_workers_flag_refuses_what_is_not_a_count(text: str) -> None:
    with pytest.raises(config.ConfigError, match=r"--workers: .*expected auto, or a number"):
        config.KEY_BY_NAME["workers"].parse_flag(text)


def test_workers_in_the_file_and_auto_is_one_per_cpu(tmp_path: Path) -> None:
    for value, count in (('"auto"', os.cpu_count() or 1), ("3", 3)):
        path = tmp_path / "server.toml"
        path.write_text(f"[server]\nworkers = {value}\n")
        cfg = config.resolve(path, {}).config
        assert worker_count(cfg) == count
    path.write_text("[server]\nworkers = true\n")
    with pytest.raises(config.ConfigError, match=r"server\.workers"):
        config.resolve(path, {})
    assert worker_count(config.ServerConfig()) == 1  # the library's default: one process


# --- the supervisor's names, in process -------------------------------------------------------


class FakeWriter:
    """The supervisor's end of one worker's control socket: what it was sent."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def is_closing(self) -> bool:
        return False

    def write(self, data: bytes) -> None:
        self.sent.extend(json.loads(line) for line in data.splitlines())

    def take(self) -> list[dict[str, Any]]:
        sent, self.sent = self.sent, []
        return sent


def arbiter(count: int = 3) -> tuple[Supervisor, list[FakeWriter]]:
    sup = Supervisor([], count, Path("/nonexistent"))
    writers = [FakeWriter() for _ in range(count)]
    sup.slots = [_Slot(i, writer=cast(Any, w)) for i, w in enumerate(writers)]
    return sup, writers


def claim(sup: Supervisor, worker: int, request: int, takeover: bool) -> None:
    message = {"op": "claim", "id": request, "app": "live", "name": "x", "takeover": takeover}
    sup._on_message(sup.slots[worker], {**message, "peer": f"10.0.0.{worker}:5000"})


def owner_line(worker: int | None) -> dict[str, Any]:
    return {"op": "owner", "app": "live", "name": "x", "worker": worker}


def answer(request: int, granted: bool, owner: int | None) -> dict[str, Any]:
    return {"op": "answer", "id": request, "granted": granted, "owner": owner}


def test_a_free_name_is_granted_and_every_worker_is_told_its_owner() -> None:
    sup, w = arbiter()
    claim(sup, 1, 7, takeover=True)
    assert w[1].take() == [owner_line(1), answer(7, True, 1)]
    assert w[0].take() == w[2].take() == [owner_line(1)]
    claim(sup, 1, 8, takeover=False)  # the same worker again: its own registry decides
    assert w[1].take() == [answer(8, True, 1)]
    sup._on_message(sup.slots[2], {"op": "release", "app": "live", "name": "x"})
    assert sup.owners == {("live", "x"): 1}  # only the owner gives a name back
    sup._on_message(sup.slots[1], {"op": "release", "app": "live", "name": "x"})
    assert sup.owners == {} and w[0].take() == [owner_line(None)]


def test_refuse_across_workers() -> None:
    sup, w = arbiter()
    claim(sup, 0, 1, takeover=False)
    for writer in w:
        writer.take()
    claim(sup, 2, 2, takeover=False)
    assert w[2].take() == [answer(2, False, 0)]
    assert w[0].take() == [] and sup.owners == {("live", "x"): 0}


def test_a_takeover_waits_for_the_owner_to_let_go() -> None:
    async def scenario() -> None:
        sup, w = arbiter()
        claim(sup, 0, 1, takeover=True)
        for writer in w:
            writer.take()
        claim(sup, 1, 2, takeover=True)
        release = {"op": "release", "app": "live", "name": "x", "by": "10.0.0.1:5000"}
        assert w[0].take() == [{**release, "worker": 1}]
        assert w[1].take() == []  # not before the old publish (and recording) has ended
        sup._on_message(sup.slots[0], {"op": "release", "app": "live", "name": "x"})
        assert w[1].take() == [owner_line(None), owner_line(1), answer(2, True, 1)]
        assert sup.owners == {("live", "x"): 1} and not sup.takeovers

    asyncio.run(scenario())


def test_a_takeover_the_owner_does_not_answer_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(workers_module, "TAKEOVER_TIMEOUT", 0.05)

    async def scenario() -> None:
        sup, w = arbiter()
        claim(sup, 0, 1, takeover=True)
        claim(sup, 1, 2, takeover=True)
        w[1].take()
        await asyncio.sleep(0.2)
        assert w[1].take() == [answer(2, False, 0)]
        assert sup.owners == {("live", "x"): 0} and not sup.takeovers

    asyncio.run(scenario())


def test_a_dead_workers_names_are_freed_and_a_waiting_takeover_granted() -> None:
    async def scenario() -> None:
        sup, w = arbiter()
        claim(sup, 0, 1, takeover=True)
        claim(sup, 1, 2, takeover=True)  # waits for worker 0
        for writer in w:
            writer.take()
        sup.slots[0].writer = None
        sup._forget(0)
        assert w[1].take() == [owner_line(None), owner_line(1), answer(2, True, 1)]
        sup.slots[1].writer = None
        sup._forget(1)
        assert sup.owners == {}
        assert w[2].take() == [owner_line(None), owner_line(1), owner_line(None)]

    asyncio.run(scenario())


def test_a_publisher_on_this_worker_replaces_a_link_whatever_the_policy() -> None:
    registry = WorkerRegistry("refuse")
    link = Stream("live", "x", peer="worker 0")
    closed: list[str] = []
    link.close = closed.append
    registry.internal.add(link)
    registry.claim(link)
    local = Stream("live", "x", peer="10.0.0.9:5000")
    assert not registry.refuses(local)
    registry.claim(local)
    assert closed and registry.get("live", "x") is local and link.ended
    assert link not in registry.internal
    assert registry.refuses(Stream("live", "x"))  # a second publisher: the policy applies


# --- end to end ------------------------------------------------------------------------------


def test_players_on_another_worker_get_every_frame_and_the_stream_is_recorded_once(
    workers: Workers, media_dir: Path, tmp_path: Path
) -> None:
    src = make_source(media_dir, "h264-aac-gop1s")  # 6 s, a keyframe every second
    early = Player("rtmpdump", workers.url("cross", worker=1), tmp_path / "early.flv")
    workers.wait_for_log(r"\[worker 1\]: play start: .* stream=cross\b")
    publisher = publish(workers, src, "cross", worker=0)
    time.sleep(2.4)  # mid-GOP
    late = [
        Player(kind, workers.url("cross", worker=1), tmp_path / f"{kind}.flv")
        for kind in ("rtmpdump", "ffmpeg-debian")
    ]
    result = publisher.wait(30)
    assert result.returncode == 0, result.stdout
    for player in (early, *late):
        player.wait()
    workers.wait_publish("stop", "cross")
    recording = workers.recording("cross")  # one recording, on the publisher's worker
    assert workers.worker_lines(0, "recording 'live'/'cross'")
    assert not workers.worker_lines(1, "recording")
    assert probe_errors(recording) == ""
    assert av_counts(recording) == av_counts(src)
    joined = assert_suffix_from_keyframe(early.out, recording)
    assert joined.video_from == 0  # waiting before the publish: every frame
    for player in late:
        joined = assert_suffix_from_keyframe(player.out, recording)
        assert joined.video_from > 0 and joined.video_from % 30 == 0
        assert joined.video >= 30
    # Three players on worker 1 cost worker 0 one link.
    assert len(workers.worker_lines(0, "play start: peer=worker-link", "stream=cross")) == 1
    assert len(workers.worker_lines(1, "link live/cross from worker 0: start")) == 1
    stops = workers.worker_lines(1, "play stop", "stream=cross")
    assert len(stops) == 3 and all("dropped=0" in line for line in stops), stops
    workers.wait_for_log(r"\[worker 1\]: link live/cross from worker 0: stop")


def test_a_second_publisher_on_another_worker_takes_the_name_over(
    workers: Workers, media_dir: Path, tmp_path: Path
) -> None:
    src = make_source(media_dir, "h264-aac-gop1s")
    first = start_looping_publisher(src, workers.url("over", worker=0))
    workers.wait_for_log(r"\[worker 0\]: publish start: .* stream=over\b")
    player = Player("ffmpeg-debian", workers.url("over", worker=1), tmp_path / "p.flv")
    workers.wait_for_log(r"\[worker 1\]: link live/over from worker 0: start")
    time.sleep(1.5)
    second = publish(workers, src, "over", worker=1, count=2)
    try:
        workers.wait_for_log(r"\[worker 0\]: publish stop: .*\(replaced by peer .* on worker 1\)")
        assert first.proc.wait(10) != 0  # its connection was closed under it
        result = second.wait(30)
        assert result.returncode == 0, result.stdout
        player.wait()
    finally:
        first.kill()
    workers.wait_for_log(r"\[worker 1\]: publish stop: .* stream=over\b")
    text = workers.log()
    # The old recording was finished before the new one began: never two at once.
    stop_0 = re.search(r"\[worker 0\]: publish stop: .* stream=over\b", text)
    start_1 = re.search(r"\[worker 1\]: publish start: .* stream=over\b", text)
    assert stop_0 and start_1 and stop_0.start() < start_1.start(), text
    found = workers.recordings("over")
    assert len(found) == 2, found
    for path in found:
        assert probe_errors(path) == "", path
    # The player on worker 1 went from the link to the local publisher without a break.
    assert probe_errors(player.out) == ""
    assert av_counts(player.out)["video"] >= 30 * 4
    stops = workers.worker_lines(1, "play stop", "stream=over")
    assert len(stops) == 1 and "dropped=0" in stops[0], stops


@pytest.mark.parametrize("workers", [["--republish", "refuse"]], indirect=True)
def test_with_refuse_a_second_publisher_on_another_worker_is_refused(
    workers: Workers, media_dir: Path
) -> None:
    src = make_source(media_dir, "h264-aac-gop1s")
    first = publish(workers, src, "once", worker=0)
    second = start_publisher(src, workers.url("once", worker=1))
    refused = second.wait(20)
    assert refused.returncode != 0
    lines = workers.worker_lines(1, "publish live/once refused")
    assert len(lines) == 1 and "already being published on worker 0" in lines[0], lines
    result = first.wait(30)
    assert result.returncode == 0, result.stdout
    workers.wait_publish("stop", "once")
    recording = workers.recording("once")
    assert av_counts(recording) == av_counts(src)


def test_a_killed_worker_is_restarted_and_only_its_connections_are_affected(
    workers: Workers, media_dir: Path, tmp_path: Path
) -> None:
    src = make_source(media_dir, "h264-aac-gop1s")
    publisher = start_looping_publisher(src, workers.url("steady", worker=0))
    try:
        workers.wait_for_log(r"\[worker 0\]: publish start: .* stream=steady\b")
        local = Player("ffmpeg-debian", workers.url("steady", worker=0), tmp_path / "local.flv")
        remote = Player("rtmpdump", workers.url("steady", worker=1), tmp_path / "remote.flv")
        workers.wait_for_log(r"\[worker 1\]: link live/steady from worker 0: start")
        time.sleep(2.0)
        victim = workers.pid(1)
        os.kill(victim, signal.SIGKILL)
        workers.wait_for_log(r"worker 1 was killed by SIGKILL after [\d.]+ s; restarting it")
        workers.wait_ready(WORKERS + 1)
        assert workers.pid(1) != victim
        remote.proc.wait(10)  # its worker is gone, and its connection with it
        # Worker 0's side did not notice: the publisher and its player go on.
        time.sleep(2.0)
        assert publisher.running(), publisher.output
        assert local.proc.poll() is None
        assert not workers.worker_lines(0, "publish stop")
        assert not workers.worker_lines(0, "play stop", "peer=127.0.0.1")
        # The restarted worker plays the stream again.
        again = tmp_path / "again.flv"
        url = workers.url("steady", worker=1)
        args = f"-hide_banner -nostdin -loglevel error -y -i {url} -t 3 -map 0 -c copy -f flv"
        subprocess.run(
            [FFMPEG9, *args.split(), str(again)],
            check=True,
            timeout=30,
            capture_output=True,
        )
        assert av_counts(again)["video"] >= 30
        assert probe_errors(again) == ""
    finally:
        publisher.kill()
    workers.wait_publish("stop", "steady")
    local.proc.terminate()
    local.proc.wait(10)
    recording = workers.recording("steady")  # one recording, never interrupted
    assert probe_errors(recording) == ""
    assert av_counts(recording)["video"] >= 30 * 6
    assert av_counts(local.out)["video"] >= 30 * 5
    assert probe_errors(local.out) == ""


def test_two_workers_share_the_port_and_stop_on_sigterm(
    workers: Workers, media_dir: Path, tmp_path: Path
) -> None:
    for worker in range(WORKERS):
        assert workers.worker_lines(worker, f"listening on rtmp://127.0.0.1:{workers.port}")
    src = make_source(media_dir, "h264-aac-gop1s")
    # Through the shared port: whichever worker each lands on, the player gets the stream.
    publisher = start_publisher(src, workers.url("shared"))
    workers.wait_publish("start", "shared")
    time.sleep(1.2)
    players = [Player("rtmpdump", workers.url("shared"), tmp_path / f"p{i}.flv") for i in range(3)]
    assert publisher.wait(30).returncode == 0
    for player in players:
        player.wait()
    recording = workers.recording("shared")
    for player in players:
        assert_suffix_from_keyframe(player.out, recording)
    assert workers.stop(20) == 0
    for worker in range(WORKERS):
        assert workers.worker_lines(worker, "shutting down")


@pytest.mark.parametrize("workers", [["--play-wait", "0"]], indirect=True)
def test_with_play_wait_0_a_play_on_another_worker_waits_for_the_link(
    workers: Workers, media_dir: Path, tmp_path: Path
) -> None:
    # Not published on worker 1, so a single server would refuse the play at once; the
    # stream is live on worker 0, so the play waits for the link and gets it.
    src = make_source(media_dir, "h264-aac-gop1s")
    publisher = publish(workers, src, "nowait", worker=0)
    time.sleep(1.5)
    player = Player("rtmpdump", workers.url("nowait", worker=1), tmp_path / "p.flv")
    assert publisher.wait(30).returncode == 0
    player.wait()
    workers.wait_publish("stop", "nowait")
    assert_suffix_from_keyframe(player.out, workers.recording("nowait"))


def test_when_the_owner_worker_dies_its_names_are_free_and_remote_players_end_cleanly(
    workers: Workers, media_dir: Path, tmp_path: Path
) -> None:
    src = make_source(media_dir, "h264-aac-gop1s")
    first = start_looping_publisher(src, workers.url("orphan", worker=0))
    try:
        workers.wait_for_log(r"\[worker 0\]: publish start: .* stream=orphan\b")
        player = Player("rtmpdump", workers.url("orphan", worker=1), tmp_path / "p.flv")
        workers.wait_for_log(r"\[worker 1\]: link live/orphan from worker 0: start")
        time.sleep(1.5)
        os.kill(workers.pid(0), signal.SIGKILL)
        workers.wait_for_log(r"worker 0 was killed by SIGKILL")
        first.proc.wait(10)  # the publisher's connection was worker 0's
        # The player's connection is worker 1's: it stays, and gets the end of the stream
        # (Stream EOF after the grace), as from a single server whose publisher vanished.
        player.wait()
    finally:
        first.kill()
    workers.wait_ready(WORKERS + 1)
    # The dead worker's name is free: a publisher on worker 1 gets it, and records it.
    second = publish(workers, src, "orphan", worker=1, count=2)
    assert second.wait(30).returncode == 0
    workers.wait_for_log(r"\[worker 1\]: publish stop: .* stream=orphan\b")
    found = workers.recordings("orphan")
    assert len(found) == 2, found  # worker 0's, cut short by its death, and worker 1's
    assert av_counts(max(found, key=lambda p: p.stat().st_mtime_ns)) == av_counts(src)


def test_http_flv_on_worker_0_plays_a_stream_of_worker_1(
    media_dir: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    http = free_port()
    server = Workers(
        tmp_path, ["--workers", "2", "--republish-grace", "1", "--http", f"127.0.0.1:{http}"]
    )
    server.start()
    request.node._rtmp_server = server
    try:
        src = make_source(media_dir, "h264-aac-gop1s")
        publisher = publish(server, src, "web", worker=1)
        time.sleep(1.5)
        out = tmp_path / "web.flv"
        url = f"http://127.0.0.1:{http}/live/web.flv"
        args = f"-hide_banner -nostdin -loglevel error -y -i {url} -map 0 -c copy -f flv {out}"
        player = subprocess.Popen(
            [FFMPEG9, *args.split()],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        assert publisher.wait(30).returncode == 0
        output, _ = player.communicate(timeout=30)
        assert player.returncode == 0, output
        server.wait_publish("stop", "web")
        assert_suffix_from_keyframe(out, server.recording("web"))
        assert server.worker_lines(0, "link live/web from worker 1: start")
    finally:
        assert server.stop(20) == 0, server.log()


def test_a_stream_is_pushed_once_whichever_workers_play_it(
    media_dir: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    with running_server(tmp_path / "target-rec", tmp_path / "target.log") as target:
        push = f"live=rtmp://127.0.0.1:{target.port}/target"
        server = Workers(tmp_path, ["--workers", "2", "--republish-grace", "1", "--push", push])
        server.start()
        request.node._rtmp_server = server
        try:
            src = make_source(media_dir, "h264-aac-gop1s")
            publisher = publish(server, src, "pushed", worker=0)
            time.sleep(1.5)
            # A player on worker 1 links the stream there: worker 1 must not push it too.
            player = Player("rtmpdump", server.url("pushed", worker=1), tmp_path / "p.flv")
            assert publisher.wait(30).returncode == 0
            player.wait()
            server.wait_publish("stop", "pushed")
            assert_suffix_from_keyframe(player.out, server.recording("pushed"))
        finally:
            assert server.stop(20) == 0, server.log()
        assert server.worker_lines(0, "push live/pushed ->")
        assert not server.worker_lines(1, "push live/pushed ->"), server.log()
        target.wait_publish("stop", "pushed")
        assert len(target.log_lines("publish start")) == 1, target.log()
        assert probe_errors(target.recording("pushed", app="target")) == ""


def test_sighup_makes_every_worker_read_the_file_again(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    conf = tmp_path / "server.toml"
    conf.write_text('[server]\nworkers = 2\n\n[log]\nlog_level = "info"\n')
    server = Workers(tmp_path, ["--config", str(conf), "--republish-grace", "1"])
    server.start()
    request.node._rtmp_server = server
    try:
        assert server.proc is not None
        server.proc.send_signal(signal.SIGHUP)
        server.wait_for_log(r"\[worker \d\]: reload: configuration read again", count=WORKERS)
        for worker in range(WORKERS):
            assert server.worker_lines(worker, "reload: configuration read again")
        assert not server.log_lines("restarting"), server.log()
    finally:
        assert server.stop(20) == 0, server.log()


def test_a_static_pull_is_recorded_once_by_one_worker(
    media_dir: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    src = make_source(media_dir, "h264-aac-gop1s")
    with running_server(tmp_path / "origin-rec", tmp_path / "origin.log") as origin:
        feed = start_looping_publisher(src, origin.url("feed"))
        try:
            origin.wait_publish("start", "feed")
            conf = tmp_path / "server.toml"
            conf.write_text(f'[apps.live]\npull_static = ["{origin.url("feed")}"]\n')
            server = Workers(tmp_path, ["--workers", "2", "--config", str(conf)])
            server.start()
            request.node._rtmp_server = server
            try:
                server.wait_for_log(r"pull start: app=live stream=feed")
                time.sleep(3.0)  # both workers have tried by now
                out = tmp_path / "p.flv"
                url = server.url("feed", worker=1)
                args = f"-hide_banner -nostdin -loglevel error -y -i {url} -t 2 -c copy -f flv"
                subprocess.run([FFMPEG9, *args.split(), str(out)], check=True, timeout=30)
                assert av_counts(out)["video"] >= 30
            finally:
                assert server.stop(20) == 0, server.log()
        finally:
            feed.kill()
    starts = [
        line
        for line in server.log_lines("pull start: app=live stream=feed")
        if "worker_key" not in line  # a link is a pull too
    ]
    assert len(starts) == 1, server.log()  # one worker has it, the other is refused
    assert server.log_lines("pull live/feed from", "the publish handler refused"), server.log()
    assert not server.log_lines("takes over"), server.log()
    assert len(server.recordings("feed")) == 1
