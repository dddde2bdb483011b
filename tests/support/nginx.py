"""nginx with Debian's libnginx-mod-rtmp on a free loopback port: a second, independent RTMP
server (one `live` application), for the client tests and as the origin of the pull tests."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from collections.abc import Iterator
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
        application live {{ live on; }}
    }}
}}
"""


@contextlib.contextmanager
def nginx_rtmp_server(directory: Path) -> Iterator[int]:
    """Run nginx-rtmp with its configuration, pid and error log in `directory`; its port."""
    port = free_port()
    directory.mkdir(parents=True, exist_ok=True)
    conf = directory / "nginx.conf"
    conf.write_text(NGINX_CONF.format(dir=directory, port=port))
    proc = subprocess.Popen(
        ["nginx", "-p", str(directory), "-e", str(directory / "error.log"), "-c", str(conf)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(250):
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert proc.poll() is None, (directory / "error.log").read_text()
            time.sleep(0.02)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)
