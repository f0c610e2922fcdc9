"""`flowengine bench`: the quick suite as a smoke test (no thresholds), the figures, the ledger."""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from flowengine.cli.bench import QUICK_SKIPS, BenchError, run_bench
from flowengine.cli.bench_report import LEDGER_COLUMNS, append_ledger, figure, figures_table

QUICK_GROUPS = {"encoders", "decoders", "wire", "hop", "hop-cpu", "pipeline", "scaling",
                "replay", "latency", "memory"}
PAIRED_GROUPS = {"pipeline", "scaling", "realtime"}


def quick_groups() -> set[str]:
    """The figure groups of `bench --quick`: the ffmpeg comparison only where ffmpeg is on
    the PATH (the bench looks it up with shutil.which, as this does)."""
    return QUICK_GROUPS | ({"ffmpeg"} if shutil.which("ffmpeg") else set())


def _is_spread(side: dict) -> bool:
    return (side["n"] >= 1 and side["min"] <= side["median"] <= side["max"]
            and all(isinstance(side[k], float) for k in ("min", "median", "max")))


@pytest.mark.timeout(300)
def test_quick_suite_writes_every_figure_with_baseline_and_ratio(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "flowengine", "bench", "--quick", "--out",
                           str(tmp_path)], capture_output=True, text=True, timeout=280)
    assert done.returncode == 0, done.stderr[-2000:]
    reports = sorted(tmp_path.glob("*.json"))
    assert len(reports) == 1, reports
    result = json.loads(reports[0].read_text())
    markdown = reports[0].with_suffix(".md").read_text()
    figures = result["figures"]
    assert {f["id"].split("/")[0] for f in figures} == quick_groups()
    for f in figures:
        assert f["baseline_label"] and f["better"] in ("higher", "lower"), f
        assert _is_spread(f["baseline"]) and _is_spread(f["flowengine"]), f
        # Pipeline, scaling and realtime (not in --quick) interleave their repetitions.
        assert f["paired"] == (f["id"].split("/")[0] in PAIRED_GROUPS), f
        if not f["paired"]:
            assert f["ratio"]["median"] == pytest.approx(f["flowengine"]["median"]
                                                         / f["baseline"]["median"])
        assert f["ratio"]["min"] <= f["ratio"]["median"] <= f["ratio"]["max"], f
        r = f["ratio"]
        ratio_text = (f"**{r['median']:.3g}** [{r['min']:.3g}–{r['max']:.3g}]"
                      f"{' (paired)' if f['paired'] else ''} |")
        assert f"| {f['id']} |" in markdown and ratio_text in markdown, f["id"]
        assert f"| {f['id']} |" in done.stdout      # the numbers are printed
    for key in ("cores", "cpu_model", "python", "av", "ffmpeg", "pyzmq", "libzmq"):
        assert str(result["machine"][key]) in markdown
    assert result["skipped"] == QUICK_SKIPS
    if shutil.which("ffmpeg") is None:
        assert "skipped: no ffmpeg on PATH" in markdown
    else:
        assert result["ffmpeg"]["snr_db"] > 10
    for title, link in result["plots"].items():
        assert (tmp_path / link).is_file() and f"]({link})" in markdown, title
    assert any("Scaling" in t for t in result["plots"])
    assert any("Memory" in t for t in result["plots"])


def test_figure_ratio_is_flowengine_over_baseline_with_extreme_pairings() -> None:
    f = figure("x/y", "what", "x real time", "higher", "plain", [10.0, 20.0, 40.0], [15.0, 30.0])
    assert f["baseline"] == {"min": 10.0, "median": 20.0, "max": 40.0, "n": 3}
    assert f["flowengine"]["median"] == 22.5
    assert f["ratio"] == {"median": 22.5 / 20.0, "min": 15.0 / 40.0, "max": 30.0 / 10.0}
    with pytest.raises(ValueError, match="better must be 'higher' or 'lower', got 'up'"):
        figure("x/y", "what", "s", "up", "plain", [1.0], [1.0])
    with pytest.raises(ValueError, match="no measurements"):
        figure("x/y", "what", "s", "lower", "plain", [], [1.0])


def test_figure_takes_the_benchmarks_ratios_pair_by_pair_when_it_has_them() -> None:
    # Medians taken apart say 2.0 (40 / 20); the benchmark's pairs say 1.5.
    pairs = {"min": 1.25, "median": 1.5, "max": 2.5, "n": 3}
    f = figure("x/y", "what", "x real time", "higher", "plain", [10.0, 20.0, 40.0],
               [25.0, 40.0, 50.0], pairs=pairs)
    assert f["ratio"] == {"median": 1.5, "min": 1.25, "max": 2.5} and f["paired"]
    assert f["flowengine"]["median"] == 40.0    # both sides' own spreads stay as they are
    assert "**1.5** [1.25–2.5] (paired)" in figures_table([f])
    plain = figure("x/y", "what", "x real time", "higher", "plain", [10.0], [20.0])
    assert not plain["paired"] and "(paired)" not in figures_table([plain])


def test_ledger_is_created_with_its_header_and_gets_one_row_per_run(tmp_path: Path) -> None:
    ledger = tmp_path / "docs" / "performance.md"
    result = {"date": "2026-01-02 03:04", "commit": "abc1234", "host": "box", "quick": True,
              "machine": {"cores": 2, "cpu_model": "CPU", "load_average_1min": 1.5},
              "figures": [figure("hop/K=0 4096", "w", "messages/s", "higher", "raw",
                                 [100.0], [50.0]),
                          figure("latency/mp3 p99", "w", "ms", "lower", "frame", [24.0],
                                 [12.5])]}
    first = append_ledger(ledger, result)
    assert first.startswith("| 2026-01-02 03:04 | abc1234 | box: 2 cores CPU, load 1.5 | quick |")
    cells = [c.strip() for c in first.strip("|").split("|")][4:]
    assert cells == ["0.50" if name == "1 hop msg/s x" else "12.5" if "latency" in name
                     else "–" for name in LEDGER_COLUMNS]
    append_ledger(ledger, {**result, "commit": None})
    lines = ledger.read_text().splitlines()
    assert lines[0] == "# Performance ledger"
    table = [line for line in lines if line.startswith("|")]
    assert len(table) == 4 and all(name in table[0] for name in LEDGER_COLUMNS)
    assert table[3].startswith("| 2026-01-02 03:04 | – |")


def test_unknown_benchmark_name_is_refused_before_anything_runs(tmp_path: Path) -> None:
    with pytest.raises(BenchError, match=r"unknown benchmark\(s\) nope; known: encoders, "):
        run_bench(quick=True, only=["nope"], out_dir=tmp_path)
    assert not any(tmp_path.iterdir())


def test_scaling_runs_the_replica_settings_asked_for_and_refuses_others() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    from bench_scaling import replica_settings

    assert replica_settings("1,2,auto") == [1, 2, "auto"]
    assert replica_settings(" auto ") == ["auto"]
    for bad in ("0", "x", "2,", "-1"):
        with pytest.raises(argparse.ArgumentTypeError, match="expected a replica count >= 1 "
                                                             "or 'auto'"):
            replica_settings(bad)
