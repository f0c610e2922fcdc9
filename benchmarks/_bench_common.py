"""Shared plumbing of the engine benchmarks: machine info, statistics, runs, JSON out, tables.

Every engine benchmark states the machine it ran on (cores, CPU model, Python,
PyAV/FFmpeg, pyzmq/libzmq versions, load average) next to its figures, gives
min/median/max over repetitions, and writes ``benchmarks/results/NAME.json``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml

__all__ = ["RESULTS_DIR", "machine_info", "machine_busy_seconds", "spread", "paired",
           "bracketed", "write_results", "print_table", "resolve_config", "run_engine",
           "run_inprocess", "size_parser", "repetitions"]

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict[str, Any]:
    """What the figures depend on: cores, CPU, load, and the versions of the moving parts."""
    import av
    import msgpack
    import numpy as np
    import zmq

    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count()
    ffmpeg = getattr(av, "ffmpeg_version_info", None) or ".".join(
        map(str, av.library_versions.get("libavcodec", ())))
    return {"cores": cores, "cpu_model": _cpu_model(), "platform": platform.platform(),
            "python": platform.python_version(), "numpy": np.__version__,
            "av": av.__version__, "ffmpeg": ffmpeg, "pyzmq": zmq.__version__,
            "libzmq": zmq.zmq_version(), "msgpack": ".".join(map(str, msgpack.version)),
            "load_average_1min": round(os.getloadavg()[0], 2)}


def machine_busy_seconds() -> float | None:
    """CPU seconds the machine's cores have been busy since boot (Linux: /proc/stat), else
    None. Over a run, what its own processes did not use of it is other load, which the
    load average shows only late and smoothed."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + fields[4]         # idle, iowait
    return (sum(fields) - idle) / os.sysconf("SC_CLK_TCK")


def size_parser(doc: str, quick_help: str) -> argparse.ArgumentParser:
    """The options of every benchmark script: --quick (its small size, `quick_help` says
    which) and --repeat N; the script adds its own."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--repeat", type=int, default=None,
                        help="repetitions (default: the size's own)")
    return parser


def repetitions(args: argparse.Namespace, quick: int, full: int) -> int:
    """--repeat, else the quick or the full size's number of repetitions."""
    return args.repeat or (quick if args.quick else full)


def spread(values: Iterable[float], digits: int = 4) -> dict[str, float]:
    """min / median / max of repeated measurements."""
    values = sorted(values)
    return {"min": round(values[0], digits), "median": round(statistics.median(values), digits),
            "max": round(values[-1], digits), "n": len(values)}


def paired(values: Iterable[float], baselines: Iterable[float]) -> dict[str, float]:
    """min / median / max of each repetition's value over the same repetition's baseline:
    interleaved runs share the machine's slow spells, medians taken apart do not."""
    return spread(v / b for v, b in zip(values, baselines, strict=True))


def bracketed(baselines: Sequence[dict[str, Any]], keys: Iterable[str]) -> list[dict[str, float]]:
    """Repetition i's baseline from the baseline runs just before (i) and just after it
    (i + 1), the mean of each of `keys`: a benchmark runs one baseline more than it has
    repetitions. The machine's speed drifts over a repetition (the CPU time of the same work
    by up to 20 % within minutes on the 2-core VM), and a drift that runs one way cancels
    between the two."""
    keys = tuple(keys)
    return [{key: (before[key] + after[key]) / 2 for key in keys}
            for before, after in itertools.pairwise(baselines)]


def write_results(name: str, payload: dict[str, Any]) -> Path:
    """benchmarks/results/NAME.json with the machine info in front."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps({"benchmark": name, "machine": machine_info(), **payload},
                               indent=2) + "\n")
    return path


def print_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """A plain fixed-width table on stdout."""
    text = [[h for h in headers]] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in text) for i in range(len(headers))]
    for n, row in enumerate(text):
        print("  ".join(cell.rjust(w) for cell, w in zip(row, widths)))
        if n == 0:
            print("  ".join("-" * w for w in widths))


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def resolve_config(config: dict[str, Any]):
    """A run config given as a dict, validated exactly like a YAML file (ResolvedRun)."""
    from flowengine.config import load_source, resolve_source

    return resolve_source(load_source(yaml.safe_dump(config, sort_keys=False),
                                      filename=f"<{config.get('name', 'bench')}>"))


def run_engine(config: dict[str, Any]):
    """Run `config` in worker processes; the RunReport."""
    from flowengine.engine import Engine, build_plan

    run = resolve_config(config)
    return Engine(build_plan(run.config), handle_signals=False).run()


def run_inprocess(config: dict[str, Any]):
    """Run `config` in this process with the Runner; the RunReport."""
    from flowengine.local.run import run_in_process

    return run_in_process(resolve_config(config))
