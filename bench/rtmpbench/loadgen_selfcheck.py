"""The load generator's checks checked: one publisher whose second and later loops are altered
at one message (left out, one payload bit flipped, or its timestamp delta 1 ms longer), and 20
players that must each report it (results/2026-12-02/checkcheck.log).

    PYTHONPATH=bench:src python -m rtmpbench.loadgen_selfcheck nginx-rtmp none,drop,flip,ts
    PYTHONPATH=bench:src python -m rtmpbench.loadgen_selfcheck ours+uvloop none,drop,flip,ts flv

With `flv` (ours only) the 20 players are HTTP-FLV players.
"""

import asyncio
import sys

import uvloop

from . import loadgen as L


async def one(kind):
    args = L.parse_args([])
    src = L.load_source(L.media.media(L.CACHE / "media", 10, 3))
    bad = L.load_source(L.media.media(L.CACHE / "media", 10, 3))
    g = 300
    lo, hi = bad.offsets_loop[g], bad.offsets_loop[g + 1]
    blob = bytearray(bad.blob_loop)
    if kind == "drop":
        blob[lo:hi] = b""
        # message g of every loop after the first is left out (its slice is empty)
        bad.offsets_loop = bad.offsets_loop[: g + 1] + [
            o - (hi - lo) for o in bad.offsets_loop[g + 1 :]
        ]
    elif kind == "flip":
        blob[hi - 10] ^= 1
    elif kind == "ts":
        blob[lo + 3] += 1  # the low byte of its type-1 header's timestamp delta
    bad.blob_loop = bytes(blob)
    flv = sys.argv[3:4] == ["flv"]
    http_port = L.procs.free_port() if flv else 0
    spec = L.capacity_spec(sys.argv[1], False, http_port)
    r = spec.start(args.work / "selfcheck")
    run = L.Run(args, src, r.port, r.pid)
    run.ticker = asyncio.create_task(run._tick())
    run.reader = asyncio.create_task(run._reads())
    await run.add_publishers(1)
    run.publishers[0].src = bad
    await asyncio.sleep(0.5)
    await run.add_players(20, run.publishers, "flv" if flv else "rtmp", http_port)
    await asyncio.sleep(17)  # into the second loop, where the bad blob is sent
    print(
        kind,
        sys.argv[1],
        run.stats.errors,
        run.stats.examples[:2],
        sum(p.count for p in run.players),
    )
    await run.close()
    r.stop()


async def main():
    for k in sys.argv[2].split(","):
        await one(k)


uvloop.run(main())
