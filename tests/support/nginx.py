"""nginx with nginx-rtmp (Debian's libnginx-mod-rtmp) as a second, independent RTMP server.

One `live` application on a free loopback port, optionally recording every publish into its
own folder (`record all`, one file per publish), in the foreground (no daemon, no master), so
that a test can stop it and start it again on the same port (a target restarted mid-stream).
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

from .server import free_port

NGINX_CONF = """\
load_module /usr/lib/nginx/modules/ngx_rtmp_module.so;
daemon off;
master_process off;
worker_processes 1;
error_log {dir}/error.log info;
pid {dir}/nginx.pid;
events {{ worker_connections 64; }}
rtmp {{
    server {{
        listen 127.0.0.1:{port};
        application live {{
            live on;
{record}        }}
    }}
}}
"""

RECORD = """\
            record all;
            record_path {rec};
            record_unique on;
"""


class NginxRTMP:
    """One nginx-rtmp process (see the module docstring); `port`, `rec` (its recordings)."""

    def __init__(self, work: Path, *, record: bool = False, port: int | None = None) -> None:
        self.work = work
        self.port = port or free_port()
        self.rec = work / "nginx-rec"
        self.record = record
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> NginxRTMP:
        self.work.mkdir(parents=True, exist_ok=True)
        self.rec.mkdir(exist_ok=True)
        conf = self.work / "nginx.conf"
        record = RECORD.format(rec=self.rec) if self.record else ""
        conf.write_text(NGINX_CONF.format(dir=self.work, port=self.port, record=record))
        self.proc = subprocess.Popen(
            ["nginx", "-p", str(self.work), "-e", str(self.work / "error.log"), "-c", str(conf)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(500):
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            assert self.proc.poll() is None, self.error_log()
            time.sleep(0.02)
        raise TimeoutError(f"nginx not listening on {self.port}:\n{self.error_log()}")

    def stop(self) -> None:
        """SIGTERM (nginx finishes its recordings), then wait."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def error_log(self) -> str:
        try:
            return (self.work / "error.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def recordings(self, stream: str) -> list[Path]:
        """The recordings of `stream`, oldest first (nginx names them NAME-<unix time>.flv)."""
        found = [p for p in self.rec.glob(f"{stream}-*.flv") if p.stem[len(stream) + 1 :].isdigit()]
        return sorted(found, key=lambda p: int(p.stem[len(stream) + 1 :]))

    def __enter__(self) -> NginxRTMP:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
