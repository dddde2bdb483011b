"""`rtmp2-server` as a child process on a free loopback port, with its log and recordings.

The process is started exactly as a user would (`python -m rtmp2server --host --port
--record-dir`), its stderr goes to a file the tests read, and it is stopped with SIGTERM, after
which it must exit 0 with every recording closed.
"""

from __future__ import annotations

import contextlib
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_command(
    port: int, record_dir: Path, host: str = "127.0.0.1", extra: Sequence[str] = ()
) -> list[str]:
    # The HTTP listener is off unless a test asks for it (`--http 127.0.0.1:0` or a port):
    # its default, 127.0.0.1:8080, would collide between servers run in parallel.
    http = [] if any(a == "--http" or a.startswith("--http=") for a in extra) else ["--http", ""]
    return [
        sys.executable,
        "-m",
        "rtmp2server",
        "--host",
        host,
        "--port",
        str(port),
        "--record-dir",
        str(record_dir),
        *http,
        *extra,
    ]


def names_stream(line: str, stream: str) -> bool:
    """Whether a log line names `stream` as a whole word (so "a" does not match "a-2")."""
    return re.search(rf"(?<![\w-]){re.escape(stream)}(?![\w-])", line) is not None


class ServerProcess:
    def __init__(
        self,
        record_dir: Path,
        log_path: Path,
        port: int | None = None,
        args: Sequence[str] = (),
        preexec_fn: Callable[[], None] | None = None,
    ) -> None:
        self.args = list(args)  # more rtmp2-server options
        self.preexec_fn = preexec_fn  # run in the child before exec (resource limits)
        self.record_dir = record_dir
        self.log_path = log_path
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.returncode: int | None = None

    # --- life cycle ------------------------------------------------------------------------

    def start(self, timeout: float = 15.0) -> ServerProcess:
        self.record_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                server_command(self.port, self.record_dir, extra=self.args),
                stdin=subprocess.DEVNULL,
                preexec_fn=self.preexec_fn,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.wait_listening(timeout)
        return self

    def wait_listening(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if not self.alive():
                raise RuntimeError(f"rtmp2-server exited with {self.exit_code()}:\n{self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"rtmp2-server not accepting on port {self.port} after {timeout} s:\n"
                        f"{self.log()}"
                    ) from None
                time.sleep(0.05)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def exit_code(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, then wait; the exit code (SIGKILL and -9 if it does not exit in time)."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                self.returncode = -9
                return self.returncode
        self.returncode = self.proc.returncode
        return self.returncode

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    # --- what it said and wrote ------------------------------------------------------------

    def url(self, stream: str, app: str = "live") -> str:
        return f"rtmp://127.0.0.1:{self.port}/{app}/{stream}"

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_lines(self, *needles: str) -> list[str]:
        """Log lines that contain every one of `needles`."""
        return [ln for ln in self.log().splitlines() if all(n in ln for n in needles)]

    def wait_for_log(
        self, predicate: re.Pattern[str] | str, count: int = 1, timeout: float = 15.0
    ) -> list[str]:
        """Wait until at least `count` log lines match; those lines. TimeoutError otherwise."""
        pattern = re.compile(predicate) if isinstance(predicate, str) else predicate
        deadline = time.monotonic() + timeout
        while True:
            lines = [ln for ln in self.log().splitlines() if pattern.search(ln)]
            if len(lines) >= count:
                return lines
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"no {count} log line(s) matching {pattern.pattern!r} in {timeout} s:\n"
                    f"{self.log()}"
                )
            time.sleep(0.05)

    def wait_publish(self, event: str, stream: str, timeout: float = 15.0) -> str:
        """Wait for the "publish start"/"publish stop" line of `stream`; that line."""
        deadline = time.monotonic() + timeout
        while True:
            for line in self.log_lines(f"publish {event}"):
                if names_stream(line, stream):
                    return line
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"no 'publish {event}' line for {stream!r} in {timeout} s:\n{self.log()}"
                )
            time.sleep(0.05)

    def recordings(self, stream: str | None = None, app: str = "live") -> list[Path]:
        """Recordings `<record-dir>/<app>/<stream>-<UTC time>.flv`, oldest name first."""
        folder = self.record_dir / app
        if not folder.is_dir():
            return []
        found = sorted(folder.glob("*.flv"))
        if stream is None:
            return found
        prefix = stream + "-"
        return [p for p in found if p.name.startswith(prefix) and p.name[len(prefix)].isdigit()]

    def recording(self, stream: str, app: str = "live") -> Path:
        """The one recording of `stream`; AssertionError if there is none or more than one."""
        found = self.recordings(stream, app)
        assert len(found) == 1, (
            f"expected one recording of {app}/{stream}, found {found} in {self.record_dir}:\n"
            f"{sorted(str(p) for p in self.record_dir.rglob('*'))}"
        )
        return found[0]


@contextlib.contextmanager
def running_server(record_dir: Path, log_path: Path, **options: Any) -> Iterator[ServerProcess]:
    """Start a server; on exit stop it with SIGTERM (the exit code is left in `returncode`).
    `options` go to `ServerProcess` (`args`, `preexec_fn`)."""
    server = ServerProcess(record_dir, log_path, **options)
    for attempt in range(3):
        try:
            server.start()
            break
        except RuntimeError:
            # It exited at once, most likely because another process took the free port
            # first: try another one.
            if attempt == 2:
                raise
            server = ServerProcess(record_dir, log_path, **options)
    try:
        yield server
    finally:
        if server.alive():
            server.stop()
