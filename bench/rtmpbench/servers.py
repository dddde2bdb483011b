"""The servers under test: how each is configured, started, found in /proc and stopped.

Every server listens on 127.0.0.1 on a free port, records every publish under its own
record dir, logs to a file, and is started directly (no shell in between), so the pid we
hold is the server's own and its CPU/RSS are those of its process tree.

- nginx-rtmp: Debian's nginx + libnginx-mod-rtmp, `master_process on; worker_processes 1;`,
  `record all; record_unique on;` (master + worker are counted).
- node-media-server v4 (npm, bench/.cache/nms): `record.auto`, webadmin, HTTP and RTMPS off.
- pyrtmp (PyPI, bench venv): bench/pyrtmp_server.py, the README's recording controller.
- ours: `python -m rtmp2server` from src/ under the harness's own interpreter (the bench
  venv's, a Debian python 3.11 like the project's .venv), with plain asyncio (the uvloop
  import blocked), and ours+uvloop: the same with uvloop (the CLI uses it when importable).

A server with an `rtmps_command` can also be started with one RTMPS listener instead of the
plain one (`start(work, tls=True)`), on a certificate for 127.0.0.1 made in its work dir with
trustme. Only ours has one here: nginx-rtmp has no RTMPS of its own, pyrtmp neither, and
node-media-server's is not set up by the bench.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import procs

BENCH = Path(__file__).resolve().parent.parent
REPO = BENCH.parent
CACHE = BENCH / ".cache"
VENV_PY = CACHE / "venv" / "bin" / "python"
NMS_APP = CACHE / "nms" / "node_modules" / "node-media-server" / "bin" / "app.js"
NGINX_MODULE = Path("/usr/lib/nginx/modules/ngx_rtmp_module.so")

NGINX_CONF = """\
load_module {module};
user root;
daemon off;
master_process on;
worker_processes 1;
pid {work}/nginx.pid;
error_log {work}/error.log warn;
events {{ worker_connections 8192; }}
rtmp {{
    server {{
        listen 127.0.0.1:{port};
        chunk_size 4096;
        application live {{
            live on;
            record all;
            record_path {rec};
            record_unique on;
        }}
    }}
}}
"""

_BLOCK_UVLOOP = (
    "import sys; sys.modules['uvloop'] = None; from rtmp2server.cli import main; sys.exit(main())"
)


@dataclass
class Running:
    """A started server."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int
    record_dir: Path
    log: Path
    scheme: str = "rtmp"
    """"rtmps" when it was started with its RTMPS listener."""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def cpu(self) -> float:
        return procs.cpu_seconds(self.pid)

    def cpu_times(self) -> tuple[float, float]:
        return procs.cpu_times(self.pid)

    def rss(self) -> int:
        return procs.rss_bytes(self.pid)

    def url(self, stream: str) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}/live/{stream}"

    def recordings(self, stream: str) -> list[Path]:
        """Recorded files of `stream` (every server names them its own way)."""
        found = []
        for path in self.record_dir.rglob("*.flv"):
            rel = path.relative_to(self.record_dir).parts
            base = path.name
            if (
                stream in rel[:-1]
                or base == f"{stream}.flv"
                or base.startswith((f"{stream}-", f"{stream}."))
            ):
                found.append(path)
        return sorted(found)

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@dataclass(frozen=True)
class TLSFiles:
    """A PEM certificate chain and its unencrypted key."""

    cert: Path
    key: Path


def make_tls_files(folder: Path) -> TLSFiles:
    """A certificate for 127.0.0.1 and localhost from a throwaway trustme CA, in `folder`.
    The clients do not verify it (`ffmpeg -tls_verify 0`), so the CA is not kept."""
    try:
        import trustme
    except ImportError as err:  # the bench venv installs it from bench/requirements.txt
        raise RuntimeError("trustme is needed for the RTMPS figures (pip install trustme)") from err
    issued = trustme.CA().issue_cert("127.0.0.1", "localhost")
    files = TLSFiles(folder / "cert.pem", folder / "key.pem")
    files.cert.write_bytes(b"".join(pem.bytes() for pem in issued.cert_chain_pems))
    files.key.write_bytes(issued.private_key_pem.bytes())
    return files


@dataclass(frozen=True)
class ServerSpec:
    name: str
    can_play: Callable[[], bool]
    command: Callable[[Path, int, Path], list[str]]
    """(work dir, port, record dir) -> argv; may write config files into the work dir."""
    env: Callable[[], dict[str, str]] = dict
    available: Callable[[], str | None] = lambda: None
    """None when it can run here, else why not."""
    rtmps_command: Callable[[Path, int, Path, TLSFiles], list[str]] | None = None
    """(work dir, port, record dir, certificate) -> argv of the server with one RTMPS listener
    on 127.0.0.1:port instead of its plain one; None: no RTMPS (see `no_rtmps`)."""
    no_rtmps: str = "no RTMPS listener of its own"

    def start(self, work: Path, startup_timeout: float = 20.0, tls: bool = False) -> Running:
        work.mkdir(parents=True, exist_ok=True)
        rec = work / "rec"
        rec.mkdir(exist_ok=True)
        port = procs.free_port()
        if tls:
            if self.rtmps_command is None:
                raise RuntimeError(f"{self.name}: {self.no_rtmps}")
            argv = self.rtmps_command(work, port, rec, make_tls_files(work))
        else:
            argv = self.command(work, port, rec)
        log = work / "server.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=work,
                env={**os.environ, **self.env()},
            )
        running = Running(self.name, proc, port, rec, log, "rtmps" if tls else "rtmp")
        if not procs.wait_port(port, startup_timeout) or not running.alive():
            running.stop()
            tail = log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{self.name} did not start on port {port}:\n{tail}")
        time.sleep(0.3)  # let nginx's worker / node's store settle before measuring
        return running


def _nginx(work: Path, port: int, rec: Path) -> list[str]:
    conf = work / "nginx.conf"
    conf.write_text(NGINX_CONF.format(module=NGINX_MODULE, work=work, port=port, rec=rec))
    return ["nginx", "-p", str(work), "-c", str(conf), "-e", str(work / "error.log")]


def _nms(work: Path, port: int, rec: Path) -> list[str]:
    config = {
        "bind": "127.0.0.1",
        "notify": {"url": ""},
        "store": {"path": str(work / "data"), "maxHistory": 100},
        # A fixed secret and no JWT users: nothing for app.js to generate and write back.
        "auth": {"play": False, "publish": False, "secret": "bench-not-secret"},
        "rtmp": {"port": port},
        "webadmin": {"enable": False},
        "record": {"auto": True, "path": str(rec)},
    }
    path = work / "nms.json"
    path.write_text(json.dumps(config, indent=2))
    return ["node", str(NMS_APP), "-c", str(path)]


def _pyrtmp(work: Path, port: int, rec: Path) -> list[str]:
    script = BENCH / "pyrtmp_server.py"
    return [
        str(VENV_PY),
        str(script),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--record-dir",
        str(rec),
    ]


def ours_args(
    port: int, rec: Path, tls: TLSFiles | None = None, src: Path = REPO / "src"
) -> list[str]:
    """rtmp2-server's arguments for a bench run: loopback, `port`, recording to `rec`; with
    `tls`, the one listener is rtmps://127.0.0.1:port on that certificate."""
    if tls is None:
        listen = ["--host", "127.0.0.1", "--port", str(port)]
    else:
        listen = [
            *("--listen", f"rtmps://127.0.0.1:{port}"),
            *("--tls-cert", str(tls.cert), "--tls-key", str(tls.key)),
        ]
    args = [*listen, "--record-dir", str(rec), "--log-level", "warning"]
    if (src / "rtmp2server" / "http").is_dir():
        # No HTTP side: the figures stay comparable with the runs before it existed, and one
        # server per run may not hold 8080 while another waits for it.
        args += ["--http", ""]
    return args


def _ours_argv(uvloop: bool, args: list[str]) -> list[str]:
    if uvloop:
        return [sys.executable, "-m", "rtmp2server", *args]
    return [sys.executable, "-c", _BLOCK_UVLOOP, *args]


def _ours(uvloop: bool, src: Path = REPO / "src") -> Callable[[Path, int, Path], list[str]]:
    def command(work: Path, port: int, rec: Path) -> list[str]:
        return _ours_argv(uvloop, ours_args(port, rec, src=src))

    return command


def _ours_rtmps(
    uvloop: bool, src: Path = REPO / "src"
) -> Callable[[Path, int, Path, TLSFiles], list[str]]:
    def command(work: Path, port: int, rec: Path, tls: TLSFiles) -> list[str]:
        return _ours_argv(uvloop, ours_args(port, rec, tls, src))

    return command


def ours_has_rtmps(src: Path = REPO / "src") -> bool:
    """Whether the server in `src` has RTMPS listeners (older revisions of `ours@REV` do not)."""
    config = src / "rtmp2server" / "config.py"
    return config.exists() and '"rtmps"' in config.read_text()


def _ours_env(src: Path = REPO / "src") -> dict[str, str]:
    path = os.environ.get("PYTHONPATH")
    return {"PYTHONPATH": f"{src}:{path}" if path else str(src)}


def ours_can_play(src: Path = REPO / "src") -> bool:
    return (src / "rtmp2server" / "server" / "relay.py").exists()


def ours_at(name: str) -> ServerSpec:
    """`ours@REV` (or `ours@REV+uvloop`): our server as of git revision REV, exported once into
    bench/.cache/revs/<commit>, so that what each change bought is measured side by side in
    one run (`--servers nginx-rtmp,ours@HEAD~2,ours@HEAD~1,ours`)."""
    rev = name.removeprefix("ours@")
    uvloop = rev.endswith("+uvloop")
    rev = rev.removesuffix("+uvloop")
    sha = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", f"{rev}^{{commit}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    src = CACHE / "revs" / sha / "src"
    if not src.exists():
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", sha, "src"], capture_output=True, check=True
        ).stdout
        src.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["tar", "-x", "-C", str(src.parent)], input=archive, check=True)

    return ServerSpec(
        name,
        lambda: ours_can_play(src),
        _ours(uvloop, src),
        env=lambda: _ours_env(src),
        rtmps_command=_ours_rtmps(uvloop, src) if ours_has_rtmps(src) else None,
        no_rtmps=f"{sha} has no RTMPS listener",
    )


def with_args(base: ServerSpec, args: list[str], name: str) -> ServerSpec:
    """`base` (ours) started with `args` added: `--workers N` (N processes on one port,
    SO_REUSEPORT; a stream played on another worker than its publisher's is pulled over a
    local link), `--merge-reads S`."""

    def command(work: Path, port: int, rec: Path) -> list[str]:
        return [*base.command(work, port, rec), *args]

    return ServerSpec(name, base.can_play, command, env=base.env, available=base.available)


# Suffixes of ours' names: `+wN` runs N workers, `+mrN` merges reads over N ms, `+gopN` and
# `+idleN` set the GOP cache's bound in messages and its idle time.
_SUFFIXES = {
    "+w": lambda n: ["--workers", str(n)],
    "+mr": lambda n: ["--merge-reads", str(n / 1000)],
    "+gop": lambda n: ["--gop-cache-messages", str(n)],
    "+idle": lambda n: ["--gop-cache-idle", str(n)],
}


def spec(name: str) -> ServerSpec:
    """A server by name: one of SERVERS, `ours@REV` (see `ours_at`), or either of ours with
    `+wN` (`ours+uvloop+w2`: `--workers 2`), `+mrN` (`ours+uvloop+mr50`: `--merge-reads
    0.05`), `+gopN` (`ours+uvloop+gop0`: `--gop-cache-messages 0`, no GOP cache, as
    nginx-rtmp) or `+idleN` (`ours+uvloop+idle0`: `--gop-cache-idle 0`, the GOP cached only
    for played streams), see `with_args`."""
    for suffix, args in _SUFFIXES.items():
        base, sep, value = name.rpartition(suffix)
        if sep and value.isdigit() and base.startswith("ours"):
            return with_args(spec(base), args(int(value)), name)
    if name.startswith("ours@"):
        return ours_at(name)
    return SERVERS[name]


def _have(path: Path, what: str) -> Callable[[], str | None]:
    return lambda: None if path.exists() else f"{what} not installed ({path} missing)"


def _uvloop_available() -> str | None:
    probe = subprocess.run(
        [sys.executable, "-c", "import uvloop"], capture_output=True, check=False
    )
    return None if probe.returncode == 0 else "uvloop not importable in the bench venv"


SERVERS: dict[str, ServerSpec] = {
    spec.name: spec
    for spec in (
        ServerSpec(
            "nginx-rtmp",
            lambda: True,
            _nginx,
            available=_have(NGINX_MODULE, "libnginx-mod-rtmp"),
            no_rtmps="nginx-rtmp has no RTMPS of its own",
        ),
        ServerSpec(
            "node-media-server",
            lambda: True,
            _nms,
            available=_have(NMS_APP, "node-media-server"),
            no_rtmps="its RTMPS listener is not set up by the bench",
        ),
        ServerSpec(
            "pyrtmp",
            lambda: False,
            _pyrtmp,
            available=_have(VENV_PY, "the bench venv"),
            no_rtmps="pyrtmp has no RTMPS",
        ),
        ServerSpec(
            "ours", ours_can_play, _ours(False), env=_ours_env, rtmps_command=_ours_rtmps(False)
        ),
        ServerSpec(
            "ours+uvloop",
            ours_can_play,
            _ours(True),
            env=_ours_env,
            available=_uvloop_available,
            rtmps_command=_ours_rtmps(True),
        ),
    )
}
BASELINE = "nginx-rtmp"
