"""The latency figure's publisher and probes, in a process of their own (`loadgen.latency`).

In the generator's process a probe's arrival would be stamped only when that process's loop
gets to it, after the reads of every load player it has to check (one burst every
`--read-interval`): the generator's delay, not the server's. On its own, this process is idle
but for one publisher and a few probes, so the kernel wakes it as soon as bytes arrive.

Talks over its stdin and stdout, one line each way at a time:
    -> "T0 <publisher's start, time.monotonic()>"   (the publisher is live)
    <- "GO"                                          (the load is on: record for the window)
    -> one JSON line: {"delays": [seconds...], "errors": {...}, "examples": [...]}

    python -m rtmpbench.probe PORT STREAM MEDIA_FLV PROBES WINDOW [loadgen options]
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from . import loadgen


async def amain(argv: list[str]) -> None:
    port, stream, flv, probes, window = argv[:5]
    args = loadgen.parse_args(argv[5:])
    src = loadgen.load_source(Path(flv))
    run = loadgen.Run(args, src, int(port), 0)
    run.ticker = asyncio.create_task(run._tick())
    try:
        pub = loadgen.Publisher(run.stats, "live", stream, src)
        await run._connect([pub], args.timeout)
        run.publishers.append(pub)
        pub.sends = []
        print(f"T0 {pub.t0!r}", flush=True)
        await asyncio.sleep(0.5)
        found = await run.add_players(int(probes), run.publishers, "probe")
        loop = asyncio.get_running_loop()
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if line.strip() != "GO":
            return
        for pr in found:
            assert isinstance(pr, loadgen.Probe)
            pr.delays = []
        await asyncio.sleep(float(window))
        delays = [d for pr in found if isinstance(pr, loadgen.Probe) for d in pr.delays or []]
        doc = {"delays": delays, "errors": run.stats.errors, "examples": run.stats.examples}
        print(json.dumps(doc), flush=True)
    finally:
        await run.close()


def main() -> int:
    import uvloop

    uvloop.run(amain(sys.argv[1:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
