"""From raw per-run results to the summary figures, the markdown table and the PNG chart."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .servers import BASELINE

Results = dict[str, dict[str, Any]]
"""server -> {"ingest": [run...], "publishers": [[level...] per run], "fanout": ...,
"latency": [run...], "memory": [run...], "ingest_tls": [run...] (ingest over RTMPS),
"no_rtmps": why there is no RTMPS figure, "errors": [str...]}"""


def _median(values: list[float]) -> float:
    values = [v for v in values if not math.isnan(v)]
    return statistics.median(values) if values else math.nan


def max_ok(runs: list[list[dict[str, Any]]]) -> float:
    """Median over runs of the largest N whose level passed (0 when none did)."""
    best = [max((lv["n"] for lv in run if lv["ok"]), default=0) for run in runs]
    return _median([float(b) for b in best]) if best else math.nan


def common_level(results: Results, key: str) -> int | None:
    """The largest N every server that ran `key` passed in every run."""
    sets = []
    for res in results.values():
        runs = res.get(key, [])
        if not any(lv["ok"] for run in runs for lv in run):
            continue  # a server that failed at N=1 (shown as such) does not pull N down
        for run in runs:
            sets.append({lv["n"] for lv in run if lv["ok"]})
    if not sets:
        return None
    common = set.intersection(*sets)
    return max(common) if common else None


def at_level(runs: list[list[dict[str, Any]]], n: int | None, field: str) -> float:
    if n is None:
        return math.nan
    return _median([lv[field] for run in runs for lv in run if lv["n"] == n])


def level_curve(runs: list[list[dict[str, Any]]], field: str) -> tuple[list[int], list[float]]:
    """Median `field` per N, over the levels where anything arrived at all."""
    runs = [[lv for lv in run if lv["complete"]] for run in runs]
    ns = sorted({lv["n"] for run in runs for lv in run})
    return ns, [_median([lv[field] for run in runs for lv in run if lv["n"] == n]) for n in ns]


def figure(res: dict[str, Any], key: str, field: str) -> float:
    """Median of `field` over the runs of `key`, leaving out runs where nothing arrived
    (ingest: no stream recorded; latency: no message back): they have no meaningful figure."""
    runs = [x for x in res.get(key, []) if x.get("complete", 1) and x.get("received", 1)]
    return _median([x[field] for x in runs])


@dataclass(frozen=True)
class Row:
    label: str
    value: Callable[[dict[str, Any]], float | str]
    fmt: str = "{:.2f}"
    ratio: bool = True
    base: Callable[[dict[str, Any]], float] | None = None
    """When given, the ratio in parentheses is to this figure of the same server (the RTMPS
    rows: to its plain RTMP ingest) instead of to nginx-rtmp's."""


def _split(res: dict[str, Any], key: str = "ingest") -> str:
    user, system = figure(res, key, "user_s_per_gb"), figure(res, key, "sys_s_per_gb")
    return "n/a" if math.isnan(user) else f"{user:.2f} / {system:.2f}"


def _tls(value: Callable[[dict[str, Any]], float | str]) -> Callable[[dict[str, Any]], float | str]:
    """An RTMPS figure, "n/a (no RTMPS)" for a server that has none."""
    return lambda r: "n/a (no RTMPS)" if r.get("no_rtmps") else value(r)


def summarize(results: Results) -> tuple[list[Row], dict[str, int | None]]:
    pub_n = common_level(results, "publishers")
    fan_n = common_level(results, "fanout")

    def ingest_complete(r: dict[str, Any], key: str = "ingest") -> str:
        runs = r.get(key, [])
        if not runs:
            return "-"
        good = sum(x["complete"] for x in runs)
        return f"{good}/{sum(x['streams'] for x in runs)}"

    def players_complete(r: dict[str, Any]) -> str:
        runs = r.get("fanout", [])
        if not runs:
            return "-"
        full = sum(lv["complete"] for run in runs for lv in run)
        key = sum(lv["complete_from_key"] for run in runs for lv in run)
        total = sum(lv["n"] for run in runs for lv in run)
        return f"{full}/{total} ({key} from keyframe)"

    def pub_complete(r: dict[str, Any]) -> str:
        runs = r.get("publishers", [])
        if not runs:
            return "-"
        good = sum(lv["complete"] for run in runs for lv in run)
        return f"{good}/{sum(lv['n'] for run in runs for lv in run)}"

    def get(key: str, field: str) -> Callable[[dict[str, Any]], float]:
        return lambda r: figure(r, key, field)

    def per_level(key: str, n: int | None, field: str) -> Callable[[dict[str, Any]], float]:
        return lambda r: at_level(r.get(key, []), n, field) if r.get(key) else math.nan

    def maxn(key: str) -> Callable[[dict[str, Any]], float]:
        return lambda r: max_ok(r[key]) if r.get(key) else math.nan

    rows = [
        Row("ingest: server CPU s per GB (20 Mbit/s FLV, no -re)", get("ingest", "cpu_s_per_gb")),
        Row("ingest: of which user / system", lambda r: _split(r), ratio=False),
        Row("ingest: wall s per 30 s file", get("ingest", "wall_s")),
        Row("ingest: streams recorded packet-complete", ingest_complete, ratio=False),
        Row(
            "ingest over RTMPS: server CPU s per GB (ratio: to its plain RTMP ingest)",
            _tls(get("ingest_tls", "cpu_s_per_gb")),
            base=get("ingest", "cpu_s_per_gb"),
        ),
        Row(
            "ingest over RTMPS: of which user / system",
            _tls(lambda r: _split(r, "ingest_tls")),
            ratio=False,
        ),
        Row(
            "ingest over RTMPS: wall s per 30 s file (ratio: to plain RTMP)",
            _tls(get("ingest_tls", "wall_s")),
            base=get("ingest", "wall_s"),
        ),
        Row(
            "ingest over RTMPS: streams recorded packet-complete",
            _tls(lambda r: ingest_complete(r, "ingest_tls")),
            ratio=False,
        ),
        Row("publishers (3 Mbit/s, -re): largest N all complete", maxn("publishers"), "{:.0f}"),
        Row(
            f"publishers: server CPU % of a core at N={pub_n}",
            per_level("publishers", pub_n, "cpu_pct"),
            "{:.1f}",
        ),
        Row("publishers: streams recorded packet-complete", pub_complete, ratio=False),
        Row("fan-out (3 Mbit/s): largest N players complete", maxn("fanout"), "{:.0f}"),
        Row(
            f"fan-out: server CPU % per player at N={fan_n}",
            per_level("fanout", fan_n, "cpu_pct_per_player"),
            "{:.2f}",
        ),
        Row("fan-out: players packet-complete", players_complete, ratio=False),
        Row("relay latency p50, ms", get("latency", "p50_ms"), "{:.2f}"),
        Row("relay latency p99, ms", get("latency", "p99_ms"), "{:.2f}"),
        Row("memory per publishing connection, KiB", get("memory", "kib_per_conn"), "{:.0f}"),
    ]
    return rows, {"publishers": pub_n, "fanout": fan_n}


def markdown(results: Results, header: str) -> str:
    rows, _ = summarize(results)
    servers = list(results)
    base = results.get(BASELINE)
    lines = [
        header,
        "",
        "| figure | " + " | ".join(servers) + " |",
        "| --- |" + " --- |" * len(servers),
    ]
    for row in rows:
        cells = []
        for name in servers:
            value = row.value(results[name])
            if isinstance(value, str):
                cells.append(value)
                continue
            if math.isnan(value):
                cells.append("n/a")
                continue
            cell = row.fmt.format(value)
            if row.base is not None:
                own = row.base(results[name])
                if not math.isnan(own) and own > 0:
                    cell += f" ({value / own:.2f}x)"
            elif row.ratio and base is not None and name != BASELINE:
                ref = row.value(base)
                if isinstance(ref, float) and not math.isnan(ref) and ref > 0:
                    cell += f" ({value / ref:.2f}x)"
            cells.append(cell)
        lines.append(f"| {row.label} | " + " | ".join(cells) + " |")
    notes = []
    for name, res in results.items():
        for err in res.get("errors", []):
            notes.append(f"- {name}: {err}")
    if notes:
        lines += ["", "Notes from this run:", "", *notes]
    return "\n".join(lines) + "\n"


def chart(results: Results, path: Path, title: str) -> bool:
    """The PNG chart; False when matplotlib is not installed (smoke runs)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    servers = list(results)
    colors = {name: f"C{i}" for i, name in enumerate(servers)}
    fig, axes = plt.subplots(2, 3, figsize=(16, 9))
    fig.suptitle(title)

    def bars(ax: Any, key: str, field: str, label: str) -> None:
        vals = [figure(results[s], key, field) for s in servers]
        ax.bar(
            servers, [0 if math.isnan(v) else v for v in vals], color=[colors[s] for s in servers]
        )
        for i, v in enumerate(vals):
            ax.annotate(
                "n/a" if math.isnan(v) else f"{v:.3g}",
                (i, 0 if math.isnan(v) else v),
                ha="center",
                va="bottom",
                fontsize=8,
            )
        ax.set_title(label)
        ax.tick_params(axis="x", labelrotation=20, labelsize=8)

    def ingest_bars(ax: Any) -> None:
        """Plain RTMP and, beside it (hatched), RTMPS, for the servers that have it."""
        for offset, key, hatch in ((-0.2, "ingest", ""), (0.2, "ingest_tls", "//")):
            for i, s in enumerate(servers):
                v = figure(results[s], key, "cpu_s_per_gb")
                if math.isnan(v):
                    continue
                ax.bar(i + offset, v, width=0.4, color=colors[s], hatch=hatch, edgecolor="k")
                ax.annotate(f"{v:.3g}", (i + offset, v), ha="center", va="bottom", fontsize=7)
        ax.set_xticks(range(len(servers)), servers)
        ax.set_title("ingest: server CPU s per GB, RTMP | RTMPS (hatched)")
        ax.tick_params(axis="x", labelrotation=20, labelsize=8)

    def curves(ax: Any, key: str, field: str, label: str) -> None:
        for s in servers:
            runs = results[s].get(key, [])
            if runs:
                ns, vals = level_curve(runs, field)
                ax.plot(ns, vals, marker="o", label=s, color=colors[s])
        ax.set_xscale("log", base=2)
        ax.set_xlabel("N")
        ax.set_title(label)
        ax.legend(fontsize=8)

    ingest_bars(axes[0][0])
    curves(axes[0][1], "publishers", "cpu_pct", "N real-time publishers: server CPU % of a core")
    curves(axes[0][2], "fanout", "cpu_pct", "1 stream to N players: server CPU % of a core")
    bars(axes[1][0], "latency", "p50_ms", "relay latency p50, ms")
    bars(axes[1][1], "latency", "p99_ms", "relay latency p99, ms")
    bars(axes[1][2], "memory", "kib_per_conn", "RSS per publishing connection, KiB")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


# --- capacity per core (issue 13, section 2: `section2.py`) ---------------------------------

_CAPACITY_FIGURES = (
    ("publishers", "real-time publishers per core, 3 Mbit/s"),
    ("publishers_1M", "real-time publishers per core, 1 Mbit/s"),
    ("players", "players per core, one 3 Mbit/s stream"),
    ("players_10", "players per core, spread over 10 streams of 3 Mbit/s"),
    (
        "players_flv",
        "players per core over HTTP-FLV, one 3 Mbit/s stream (ours; ratio: to its RTMP players)",
    ),
)


def _num(value: float | None) -> float:
    return math.nan if value is None else float(value)


def _cell(value: float, fmt: str, ref: float | None) -> str:
    if math.isnan(value):
        return "n/a"
    text = fmt.format(value)
    if ref is not None and not math.isnan(ref) and ref > 0:
        text += f" ({value / ref:.2f}x)"
    return text


def _held_level(fig: dict[str, Any]) -> dict[str, Any] | None:
    held = [lv for lv in fig.get("levels", []) if lv["held"]]
    return held[-1] if held else None


def capacity_summary(res: dict[str, Any]) -> dict[str, float]:
    """The single figures of one server's section-2 results (nan where missing)."""
    out: dict[str, float] = {}
    for key, _ in _CAPACITY_FIGURES:
        fig = res.get(key)
        out[key] = math.nan if fig is None else float(fig["held"])
    ingest = res.get("ingest")
    out["ingest"] = ingest["cpu_s_per_gb"] if ingest and ingest.get("complete") else math.nan
    lat = res.get("latency") or {}
    out["p50"] = _num(lat.get("p50_ms"))
    out["p99"] = _num(lat.get("p99_ms"))
    mem = res.get("memory") or {}
    for kind in ("publishers", "players", "stalled_players"):
        out[f"mem_{kind}"] = _num((mem.get(kind) or {}).get("kib_per_conn"))
    nogop = res.get("memory_nogop") or {}
    for kind in ("publishers", "players"):
        out[f"nogop_{kind}"] = _num((nogop.get(kind) or {}).get("kib_per_conn"))
    stats = res.get("stats") or {}
    for variant in ("off", "on"):
        runs = stats.get(variant) or []
        out[f"stats_{variant}"] = _median([lv["server_cpu"] for lv in runs]) if runs else math.nan
    return out


def capacity_markdown(doc: dict[str, Any]) -> str:
    """The section-2 table (ratios to nginx-rtmp) and every level of every ramp."""
    results: dict[str, dict[str, Any]] = doc["results"]
    names = list(results)
    sums = {n: capacity_summary(results[n]) for n in names}
    base = sums.get(BASELINE)
    args = doc.get("args", {})
    lines = [
        f"# Capacity per core, {doc.get('started', '?')}"
        + (" (--quick: a check of the harness, not figures)" if args.get("quick") else ""),
        "",
        f"Machine: {doc.get('machine', '?')}; loopback; load average "
        f"{doc.get('load_before', [0])[0]:.2f} before, {doc.get('load_after', [0])[0]:.2f} "
        f"after; {doc.get('minutes', '?')} min. Servers pinned to core 0, the generator "
        f"(`rtmpbench.loadgen`, one uvloop process) to core 1; windows of {args.get('window')} s "
        f"after {args.get('settle')} s of settling; a level fails when the server's core is above "
        f"{args.get('max_cpu')}%, a publisher is blocked more than {args.get('max_block')} s, a "
        f"player is more than {args.get('max_lag')} s behind, or anything is lost. In parentheses: "
        "the ratio to nginx-rtmp (above 1: more connections, or more CPU, memory or delay).",
        "",
        "| figure | " + " | ".join(names) + " |",
        "| --- |" + " --- |" * len(names),
    ]

    def row(label: str, key: str, fmt: str, ratio: bool = True, ref_key: str = "") -> None:
        """`ref_key`: the nginx-rtmp figure the ratio is to, when not `key`'s own."""
        cells = []
        for n in names:
            ref = None
            if ratio and base is not None and n != BASELINE:
                ref = base[ref_key or key]
            cells.append(_cell(sums[n][key], fmt, ref))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")

    def at_top(key: str) -> None:
        cells = []
        for n in names:
            fig = results[n].get(key)
            lv = _held_level(fig) if fig else None
            if lv is None:
                cells.append("n/a" if fig is None else f"none held: {fig.get('limit')}")
                continue
            exhausted = fig.get("limit") == "steps exhausted"
            cells.append(
                f"server {lv['server_cpu']:.0f}%, generator {lv['gen_cpu']:.0f}%; "
                + ("the steps ran out" if exhausted else f"next: {fig.get('limit')}")
            )
        lines.append("| ... at that level, and what stopped the next | " + " | ".join(cells) + " |")

    row("ingest: server CPU s per GB (20 Mbit/s FLV, no -re, recorded)", "ingest", "{:.2f}")
    for key, label in _CAPACITY_FIGURES:
        if key == "players_flv":
            cells = []
            for n in names:
                own = sums[n]["players"]
                cells.append(_cell(sums[n][key], "{:.0f}", own))
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        else:
            row(label, key, "{:.0f}")
        at_top(key)
    level_cells = []
    for n in names:
        lat = results[n].get("latency")
        level_cells.append(f"{lat['players']} players + {lat['probes']} probes" if lat else "n/a")
    lines.append(
        "| relay latency: load (half the players per core) | " + " | ".join(level_cells) + " |"
    )
    row("relay latency p50, ms", "p50", "{:.2f}")
    row("relay latency p99, ms", "p99", "{:.2f}")
    row(
        f"memory per publisher, KiB (RSS growth, {args.get('memory_connections')} publishers)",
        "mem_publishers",
        "{:.0f}",
    )
    row(
        f"memory per player, KiB ({args.get('memory_connections')} players of one stream)",
        "mem_players",
        "{:.0f}",
    )
    row(
        f"memory per stalled player, KiB ({args.get('stalled')} players reading nothing for "
        f"{args.get('stall_seconds')} s)",
        "mem_stalled_players",
        "{:.0f}",
    )
    row(
        "memory per publisher, KiB, GOP cache off (ours: `--gop-cache-messages 0`)",
        "nogop_publishers",
        "{:.0f}",
        ref_key="mem_publishers",
    )
    row(
        "memory per player, KiB, GOP cache off (ours)",
        "nogop_players",
        "{:.0f}",
        ref_key="mem_players",
    )
    cells = []
    for n in names:
        st = results[n].get("stats")
        s = sums[n]
        if not st or math.isnan(s["stats_off"]):
            cells.append("n/a")
            continue
        diff = s["stats_on"] - s["stats_off"]
        cells.append(
            f"{st['publishers']} publishers + {st['players']} players: {s['stats_off']:.1f}% -> "
            f"{s['stats_on']:.1f}% of a core ({diff:+.1f} points, "
            f"{s['stats_on'] / s['stats_off'] - 1:+.0%})"
            if s["stats_off"] > 0
            else "n/a"
        )
    lines.append(
        '| statistics\' cost: server CPU with `--http ""` -> the HTTP side on (ours) | '
        + " | ".join(cells)
        + " |"
    )
    notes = [f"- {n}: {e}" for n in names for e in results[n].get("errors", [])]
    if notes:
        lines += ["", "Notes from this run:", "", *notes]
    lines += ["", "## Every level", ""]
    header = (
        "| level (publishers/players) | server % (user/sys) | generator % (user/sys) | "
        "publisher blocked s | player lag s | players' Mbit/s | server RSS MB | result |"
    )
    for n in names:
        for key, label in (
            *_CAPACITY_FIGURES,
            ("latency", "relay latency"),
            ("memory", "memory"),
            ("memory_nogop", "memory, GOP cache off"),
            ("stats", "statistics' cost (off, then on)"),
        ):
            fig = results[n].get(key)
            if not fig:
                continue
            if key == "latency":
                levels = [fig["level"]]
            elif key in ("memory", "memory_nogop"):
                levels = [fig[k]["level"] for k in ("publishers", "players") if k in fig]
            elif key == "stats":
                levels = [*fig["off"], *fig["on"]]
            else:
                levels = fig["levels"]
            lines += [f"{n}, {label}:", "", header, "| --- " * 8 + "|"]
            for lv in levels:
                lines.append(
                    f"| {lv['publishers']}/{lv['players']} | {lv['server_cpu']:.0f} "
                    f"({lv['server_user']:.0f}/{lv['server_sys']:.0f}) | {lv['gen_cpu']:.0f} "
                    f"({lv['gen_user']:.0f}/{lv['gen_sys']:.0f}) | {lv['max_blocked']:.1f} | "
                    f"{lv['max_lag']:.1f} | {lv['mbit_in']:.0f} | {lv['server_rss_mb']:.0f} | "
                    f"{lv['why']} |"
                )
            lines.append("")
    return "\n".join(lines) + "\n"
