"""node-media-server 4 (npm, pinned in tests/support/nms-package.json) as an RTMP push target.

scripts/setup.sh (RTMP2_EXTRAS=test) installs it into tests/.cache/nms. It runs on a free
loopback port with `record.auto` on (one FLV per publish, <rec>/<app>/<name>/<ms>.flv), and
its web admin, HTTP and RTMPS off, as the bench runs it (bench/rtmpbench/servers.py).
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path

from .server import free_port

ROOT = Path(__file__).resolve().parents[1] / ".cache" / "nms"
APP_JS = ROOT / "node_modules" / "node-media-server" / "bin" / "app.js"


class NodeMediaServer:
    """One node-media-server process; `port`, `rec` (its recordings)."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.port = free_port()
        self.rec = work / "nms-rec"
        self.log_path = work / "nms.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> NodeMediaServer:
        assert APP_JS.is_file(), f"{APP_JS} missing: run RTMP2_EXTRAS=test scripts/setup.sh"
        self.work.mkdir(parents=True, exist_ok=True)
        self.rec.mkdir(exist_ok=True)
        config = {
            "bind": "127.0.0.1",
            "notify": {"url": ""},
            "store": {"path": str(self.work / "nms-data"), "maxHistory": 100},
            # A fixed secret and no JWT users: nothing for app.js to generate and write back.
            "auth": {"play": False, "publish": False, "secret": "tests-not-secret"},
            "rtmp": {"port": self.port},
            "webadmin": {"enable": False},
            "record": {"auto": True, "path": str(self.rec)},
        }
        path = self.work / "nms.json"
        path.write_text(json.dumps(config, indent=2))
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                ["node", str(APP_JS), "-c", str(path)],
                cwd=self.work,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        for _ in range(1000):
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            assert self.proc.poll() is None, self.log()
            time.sleep(0.02)
        raise TimeoutError(f"node-media-server not listening on {self.port}:\n{self.log()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def recordings(self, stream: str, app: str = "live") -> list[Path]:
        """The recordings of app/stream, oldest first."""
        return sorted((self.rec / app / stream).glob("*.flv"), key=lambda p: int(p.stem))

    def __enter__(self) -> NodeMediaServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
