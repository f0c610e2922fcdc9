"""The outputs of `flowengine bench`: figures, the Markdown summary, the memory plot, the ledger.

A *figure* is one comparison measured in one run: flowengine's numbers and a
baseline's (min/median/max over repetitions, absolute, in `unit`) and their
ratio flowengine / baseline, with which way is better. Where the benchmark
interleaves its repetitions with the baseline's, the ratio is taken pair by
pair (each repetition over its own baseline: the machine's slow spells hit
both sides of a pair, not medians taken apart) and the figure says
``paired``; otherwise it is the ratio of the medians, its min and max the
extreme pairings (flowengine min over baseline max, and the other way round),
so the range holds every pairing of the repetitions.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["figure", "spread_of", "markdown_summary", "figures_table", "plot_memory",
           "append_ledger", "LEDGER_COLUMNS"]

# Headline figures of the ledger in docs/performance.md: column title -> figure id.
LEDGER_COLUMNS = {
    "mp3 wrapper (PyAV backend) x": "encoders/mp3-pyav",
    "aac encode x": "encoders/aac",
    "1 hop msg/s x": "hop/K=0 4096",
    "pipeline x": "pipeline/transcode",
    "scaling best x": "scaling/best",
    "mp3 latency p99 ms": "latency/mp3 p99",
    "worker RSS x": "memory/worker backpressure",
}
_LEDGER_INTRO = """# Performance ledger

One row per recorded run of `flowengine bench --record` (see README, Benchmarks).
Every ratio is flowengine / a baseline measured in the same run on the same machine
(plain PyAV, raw pyzmq, the in-process runner, a bare interpreter), median of the
repetitions (of each repetition's ratio to its own baseline where the benchmark pairs
them); the full figures with min/max and absolute numbers are in
`benchmarks/results/<date>-<host>.md`. Latency is absolute (ms, p99). Rows from
different machines or load are not comparable with each other; ratios within one row are.

"""


def spread_of(values: Iterable[float]) -> dict[str, float]:
    """min / median / max / n of repeated measurements."""
    values = sorted(float(v) for v in values)
    if not values:
        raise ValueError("no measurements to summarise")
    return {"min": values[0], "median": statistics.median(values), "max": values[-1],
            "n": len(values)}


def figure(fid: str, what: str, unit: str, better: str, baseline_label: str,
           baseline: Sequence[float] | dict, flowengine: Sequence[float] | dict,
           note: str = "", pairs: dict | None = None) -> dict[str, Any]:
    """One comparison: both sides' spreads (absolute, `unit`) and flowengine / baseline.

    `better` is "higher" or "lower" (for the measured quantity, so also for the ratio).
    `baseline` and `flowengine` are lists of repetitions or ready spreads. `pairs`: the
    benchmark's spread of each repetition's ratio to its own baseline, which is then the
    figure's ratio (module doc).
    """
    if better not in ("higher", "lower"):
        raise ValueError(f"better must be 'higher' or 'lower', got {better!r}")
    base = dict(baseline) if isinstance(baseline, dict) else spread_of(baseline)
    ours = dict(flowengine) if isinstance(flowengine, dict) else spread_of(flowengine)
    if pairs is not None:
        ratio = {key: float(pairs[key]) for key in ("median", "min", "max")}
    else:
        ratio = {"median": ours["median"] / base["median"], "min": ours["min"] / base["max"],
                 "max": ours["max"] / base["min"]}
    return {"id": fid, "what": what, "unit": unit, "better": better,
            "baseline_label": baseline_label, "baseline": base, "flowengine": ours,
            "ratio": ratio, "paired": pairs is not None, "note": note}


def _num(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def _cell(side: dict) -> str:
    return f"{_num(side['median'])} [{_num(side['min'])}–{_num(side['max'])}] n={side['n']}"


def figures_table(figures: Sequence[dict]) -> str:
    """The figures as a Markdown table (also printed on stdout)."""
    lines = ["| figure | what | unit | baseline | baseline median [min–max] | "
             "flowengine median [min–max] | ratio fe/base median [min–max] | better |",
             "|---|---|---|---|---|---|---|---|"]
    for f in figures:
        r = f["ratio"]
        lines.append(f"| {f['id']} | {f['what']} | {f['unit']} | {f['baseline_label']} | "
                     f"{_cell(f['baseline'])} | {_cell(f['flowengine'])} | "
                     f"**{r['median']:.3g}** [{r['min']:.3g}–{r['max']:.3g}]"
                     f"{' (paired)' if f.get('paired') else ''} | {f['better']} |")
    return "\n".join(lines)


def markdown_summary(result: dict, plots: dict[str, str]) -> str:
    """The whole report: machine, figures, ffmpeg, skipped steps, checks, plots, notes."""
    m = result["machine"]
    out = [f"# flowengine bench: {result['date']} on {result['host']}", "",
           f"Command: `{result['command']}` ({'quick' if result['quick'] else 'full'}; "
           f"{result['wall_s']:.0f} s; commit {result['commit'] or 'unknown'}).", "",
           "## Machine", "",
           f"- {m['cores']} cores, {m['cpu_model']}, load average (1 min) at start "
           f"{m['load_average_1min']}, at end {result['load_average_end']}",
           f"- {m['platform']}; Python {m['python']}, numpy {m['numpy']}",
           f"- PyAV {m['av']} with FFmpeg {m['ffmpeg']}; pyzmq {m['pyzmq']} / libzmq "
           f"{m['libzmq']}; msgpack {m['msgpack']}", "",
           "## Figures", "",
           "Each ratio is flowengine / the baseline measured in the same run, in the "
           "figure's unit; `better` says which direction is good for flowengine. "
           "A ratio marked (paired) is taken repetition by repetition, each over the "
           "baseline run next to it; the others are ratios of the medians, their min/max "
           "pairing the extremes of both sides.", "",
           figures_table(result["figures"]), ""]
    notes = [f"- **{f['id']}**: {f['note']}" for f in result["figures"] if f["note"]]
    if notes:
        out += ["Notes:", "", *notes, ""]
    out += ["## ffmpeg on PATH", "", _ffmpeg_text(result["ffmpeg"]), ""]
    if result["skipped"]:
        out += ["## Skipped", ""]
        out += [f"- {name}: {why}" for name, why in result["skipped"].items()] + [""]
    if result["checks"]:
        out += ["## Robustness runs", ""]
        out += [f"- {name}: {text}" for name, text in result["checks"].items()] + [""]
    if plots:
        out += ["## Plots", ""]
        out += [f"### {title}\n\n![{title}]({path})\n" for title, path in plots.items()]
    out += ["## Raw results", "",
            f"Each benchmark script's own JSON (and plots): `{Path(result['raw_dir']).name}/`, "
            f"next to this file."]
    return "\n".join(out) + "\n"


def _ffmpeg_text(ffmpeg: dict) -> str:
    if "skipped" in ffmpeg:
        return f"skipped: {ffmpeg['skipped']}"
    return (f"`{ffmpeg['command']}` ({ffmpeg['version']}) on the same input: ffmpeg "
            f"{ffmpeg['ffmpeg_x_realtime']:.1f}x real time, flowengine (in-process) "
            f"{ffmpeg['flowengine_x_realtime']:.1f}x; SNR of flowengine's output against "
            f"ffmpeg's, both decoded: {ffmpeg['snr_db']:.1f} dB (lag {ffmpeg['lag_samples']} "
            f"samples).")


def plot_memory(samples: dict[int, list[tuple[float, float, str]]],
                phases: list[tuple[str, float, float]], path: Path) -> bool:
    """RSS of every process the suite started, over time, the benchmark phases shaded."""
    try:
        import matplotlib
    except ImportError:
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4))
    for n, (name, start, end) in enumerate(phases):
        ax.axvspan(start, end, color=("0.92", "0.84")[n % 2])
        ax.text((start + end) / 2, 0.98, name, transform=ax.get_xaxis_transform(),
                ha="center", va="top", fontsize=7, rotation=90)
    for pid, series in samples.items():
        if len(series) >= 2:
            ax.plot([s[0] for s in series], [s[1] for s in series], lw=0.8)
    ax.set_xlabel("seconds since the start of the suite")
    ax.set_ylabel("RSS (MB) per process")
    ax.set_title("memory of every process started by the suite (one line per process)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def append_ledger(path: Path, result: dict) -> str:
    """Append this run's row to the ledger table in `path` (created with its intro); the row."""
    by_id = {f["id"]: f for f in result["figures"]}
    cells = []
    for fid in LEDGER_COLUMNS.values():
        f = by_id.get(fid)
        if f is None:
            cells.append("–")
        elif fid.startswith("latency/"):
            cells.append(f"{f['flowengine']['median']:.1f}")
        else:
            cells.append(f"{f['ratio']['median']:.2f}")
    m = result["machine"]
    machine = f"{m['cores']} cores {m['cpu_model']}, load {m['load_average_1min']}"
    row = (f"| {result['date']} | {result['commit'] or '–'} | {result['host']}: {machine} | "
           f"{'quick' if result['quick'] else 'full'} | " + " | ".join(cells) + " |")
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        header = "| date | commit | machine | mode | " + " | ".join(LEDGER_COLUMNS) + " |"
        rule = "|" + "---|" * (4 + len(LEDGER_COLUMNS))
        path.write_text(_LEDGER_INTRO + header + "\n" + rule + "\n")
    text = path.read_text()
    path.write_text(text + ("" if text.endswith("\n") else "\n") + row + "\n")
    return row
