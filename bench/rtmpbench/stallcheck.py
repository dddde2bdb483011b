"""Why ours holds megabytes per slow player: the memory figure's stalled players, on our server
as it is and on the same server with one change made in this process only, so that the two are
compared side by side (results/2026-12-02/stallcheck.log).

The change: `Session.flush` hands the queued pieces to `transport.writelines()` instead of
joining them (`ConnectionBase.data_to_send` does `b"".join(out)`). The relay frames each message
once and queues the same bytes object to every player (`Channel._fan_out`); the join makes a
private copy of it per player, and when a player's socket is full that copy is what uvloop
keeps queued, up to `--player-buffer` (4 MiB) per player. Handed over as they are, the pieces
stay shared: every slow player's queue refers to the same objects.

    PYTHONPATH=bench:src python -m rtmpbench.stallcheck [--stalled 20] [--stall-seconds 24]
"""

from __future__ import annotations

import sys
from pathlib import Path

from . import loadgen, media
from .servers import CACHE, ServerSpec

_PATCHED = """\
import sys
from rtmp2server.server import server as _server

def flush(self):
    out = self.conn._out
    if not out:
        return
    pieces = list(out)
    out.clear()
    if self.transport is not None and not self.closed:
        self.transport.writelines(pieces)

_server.Session.flush = flush
from rtmp2server.cli import main
sys.exit(main())
"""


def _variant(base: ServerSpec, patched: bool) -> ServerSpec:
    def command(work: Path, port: int, rec: Path) -> list[str]:
        argv = base.command(work, port, rec)
        if not patched:
            return argv
        # taskset -c 0 PYTHON -m rtmp2server ARGS -> taskset -c 0 PYTHON -c PATCHED ARGS
        i = argv.index("-m")
        return [*argv[:i], "-c", _PATCHED, *argv[i + 2 :]]

    name = base.name + (" (writelines)" if patched else "")
    return ServerSpec(name, base.can_play, command, env=base.env, available=base.available)


def main() -> int:
    argv = sys.argv[1:]
    stalled = 20
    if "--stalled" in argv:
        i = argv.index("--stalled")
        stalled = int(argv[i + 1])
        del argv[i : i + 2]
    argv = [*argv, "--window", "3", "--settle", "1"]
    if "--stall-seconds" not in argv:
        argv += ["--stall-seconds", "24"]
    import uvloop

    async def run() -> None:
        ns = loadgen.parse_args(argv)
        ns.stalled = stalled
        src = loadgen.load_source(media.media(CACHE / "media", 10, 3))
        base = loadgen.capacity_spec("ours+uvloop", False)
        for patched in (False, True):
            spec = _variant(base, patched)
            out = await loadgen.memory(ns, src, spec, ns.work / "stallcheck", 20, stalled)
            stall = out["stalled_players"]
            loadgen._log(
                f"{spec.name}: {stall['kib_per_conn']:.0f} KiB per stalled player after "
                f"{stall['seconds']:g} s (peak {stall['peak_kib_per_conn']:.0f}); "
                f"{out['players']['kib_per_conn']:.0f} KiB per reading player"
            )

    uvloop.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
