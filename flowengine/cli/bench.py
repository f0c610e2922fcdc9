"""`flowengine bench`: the benchmark suite in one command, every figure against a same-run baseline.

The benchmarks themselves are the scripts in the repository's ``benchmarks/``
directory (not part of an installed wheel); this module imports them, calls
each one's ``main(argv)`` (which returns its results) with quick or full
arguments, turns their results into figures (flowengine vs a baseline
measured in the same run: plain PyAV, raw pyzmq, the in-process runner, a bare
interpreter), samples the memory of every process the suite starts, and
writes ``<out>/<date>-<host>.json`` and ``.md`` (each script's own JSON and
plots go to ``<out>/<date>-<host>/``). ``--record`` appends the headline
ratios to the ledger in ``docs/performance.md``.
"""

from __future__ import annotations

import contextlib
import datetime
import importlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from flowengine.cli.bench_report import append_ledger, figure, figures_table, markdown_summary, plot_memory
from flowengine.errors import FlowError, UsageError

__all__ = ["BenchError", "STEPS", "QUICK_SKIPS", "find_benchmarks_dir", "run_bench"]

# Every step of the suite, in running order; `--only` takes these names.
STEPS = ("encoders", "decoders", "wire", "hop", "pipeline", "realtime", "scaling", "cluster",
         "replay", "latency", "memory", "ffmpeg", "soak", "chaos", "fuzz")
QUICK_SKIPS = {"realtime": "not in --quick (paced runs take ~1 min)",
               "cluster": "not in --quick (starts a 3-node Ray test cluster: ~10 s, ~1 GB)",
               "soak": "not in --quick (a live run of minutes)",
               "chaos": "not in --quick (kills workers in repeated runs)",
               "fuzz": "not in --quick (thousands of cases per target)"}
_SAMPLE_PERIOD_S = 0.25
_WORKER_LIBS = "import av, msgpack, numpy, zmq"


class BenchError(FlowError):
    """The suite cannot run (no benchmarks/ directory, an unknown step name)."""


class BenchUsageError(BenchError, UsageError):
    """`--only` names a step the suite does not have (exit code 2, as any usage error)."""


def find_benchmarks_dir(cwd: Path | None = None) -> Path:
    """The repository's benchmarks/ directory: next to the package, else under the cwd."""
    package_root = Path(__file__).resolve().parent.parent
    candidates = [package_root / "benchmarks", (cwd or Path.cwd()) / "benchmarks"]
    for candidate in candidates:
        if (candidate / "_bench_common.py").is_file():
            return candidate
    raise BenchError("flowengine bench needs the repository's benchmarks/ directory (the "
                     "benchmark scripts are not part of an installed wheel); looked in "
                     + " and ".join(str(c) for c in candidates)
                     + ": run it from a checkout (pip install -e .) or from its top directory")


# ---- memory of every process below this one -------------------------------------------------

class ProcessSampler:
    """RSS of every descendant process, every 0.25 s, in a thread, tagged with the current step."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.step = ""
        self.samples: dict[int, list[tuple[float, float, str]]] = {}
        self.phases: list[tuple[str, float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-rss", daemon=True)

    def __enter__(self) -> "ProcessSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5.0)

    def phase(self, name: str) -> "_Phase":
        return _Phase(self, name)

    def peaks(self, step: str) -> list[float]:
        """Peak RSS (MB) of each process seen during `step`."""
        return [max(s[1] for s in series if s[2] == step)
                for series in self.samples.values() if any(s[2] == step for s in series)]

    def _run(self) -> None:
        me = os.getpid()
        while not self._stop.wait(_SAMPLE_PERIOD_S):
            t = time.monotonic() - self.t0
            for pid in _descendants(me):
                rss = _rss_mb(pid)
                if rss is not None:
                    self.samples.setdefault(pid, []).append((round(t, 2), rss, self.step))


class _Phase:
    def __init__(self, sampler: ProcessSampler, name: str) -> None:
        self.sampler, self.name = sampler, name

    def __enter__(self) -> None:
        self.start = time.monotonic() - self.sampler.t0
        self.sampler.step = self.name

    def __exit__(self, *exc: object) -> None:
        self.sampler.phases.append((self.name, self.start, time.monotonic() - self.sampler.t0))
        self.sampler.step = ""


def _descendants(root: int) -> list[int]:
    parents: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(f"/proc/{entry.name}/stat").read_text()
            except OSError:
                continue
            # The command name may hold spaces and parentheses: the ppid follows the last ')'.
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = [], [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent]
        found += children
        frontier += children
    return found


def _rss_mb(pid: int | str) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 2)
    except (OSError, ValueError):
        return None
    return None


# ---- the steps: run one script, turn its results into figures --------------------------------

class Context:
    """What every step needs: the scripts, where raw outputs go, quick or not, the sampler."""

    def __init__(self, bench_dir: Path, raw_dir: Path, quick: bool, sampler: ProcessSampler):
        self.bench_dir, self.raw_dir, self.quick, self.sampler = bench_dir, raw_dir, quick, sampler
        self.plots: dict[str, str] = {}
        self.checks: dict[str, str] = {}
        self.ffmpeg: dict[str, Any] = {}

    def script(self, name: str):
        """Import benchmarks/NAME.py with its results redirected into the raw directory."""
        module = importlib.import_module(name)
        for attr in ("RESULTS_DIR",):
            if hasattr(module, attr):
                setattr(module, attr, self.raw_dir)
        common = importlib.import_module("_bench_common")
        common.RESULTS_DIR = self.raw_dir
        return module

    def out(self, name: str) -> str:
        return str(self.raw_dir / name)

    def plot(self, title: str, path: str | Path | None) -> None:
        if path and Path(path).is_file():
            self.plots[title] = f"{self.raw_dir.name}/{Path(path).name}"


def _walls_to_speed(audio_s: float, walls: list[float]) -> list[float]:
    return [audio_s / w for w in walls]


def step_encoders(ctx: Context) -> list[dict]:
    argv = (["--seconds", "5", "--repeat", "2", "--codecs", "mp3,mp3-pyav,aac,flac"]
            if ctx.quick else [])
    report = ctx.script("bench_encoders").main(argv + ["--out", ctx.out("encoders.json")])
    figures = []
    for row in report["results"]:
        audio = row["audio_seconds"]
        base = "plain PyAV loop" + (" (libmp3lame)" if row["codec"] == "mp3" else "")
        note = ("flowengine's default mp3 backend is lameenc" if row["codec"] == "mp3" else
                "same libmp3lame backend: the wrapper's own cost" if row["codec"] == "mp3-pyav"
                else "")
        figures.append(figure(f"encoders/{row['codec']}", f"{row['codec']} encode throughput",
                              "x real time", "higher", base,
                              _walls_to_speed(audio, row["walls_s"]["plain_pyav"]),
                              _walls_to_speed(audio, row["walls_s"]["flowengine"]), note))
    return figures


def step_decoders(ctx: Context) -> list[dict]:
    argv = ["--seconds", "5", "--codecs", "mp3,aac,flac"] if ctx.quick else []
    report = ctx.script("bench_decoders").main(argv + ["--out", ctx.out("decoders.json")])
    return [figure(f"decoders/{row['codec']}", f"{row['codec']} decode throughput",
                   "x real time", "higher", "plain PyAV loop",
                   _walls_to_speed(row["seconds"], row["pyav_walls_s"]),
                   _walls_to_speed(row["seconds"], row["flowengine_walls_s"]))
            for row in report["results"]]


def step_wire(ctx: Context) -> list[dict]:
    argv = ["--seconds", "0.1" if ctx.quick else "0.5", "--out", ctx.out("wire.json")]
    report = ctx.script("bench_wire").main(argv)
    return [figure(f"wire/{row['samples']}", f"wire encode+decode, {row['samples']} samples",
                   "µs/message", "lower", "raw msgpack + np.frombuffer (no validation)",
                   [row["raw_msgpack_us"]], [row["flowengine_us"]],
                   "best of 5 timed batches per side (n=1 is that best)")
            for row in report["results"]]


def step_hop(ctx: Context) -> list[dict]:
    argv = (["--quick", "--chains", "0", "1", "--sizes", "4096", "--repeat", "2"]
            if ctx.quick else [])
    report = ctx.script("bench_hop").main(argv)
    figures, raw = [], {}
    for row in report["results"]:
        if row["chain"] == "raw pyzmq":
            raw[row["samples"]] = row
            continue
        base, k = raw[row["samples"]], row["identity_stages"]
        label = f"K={k} {row['samples']}"
        figures.append(figure(f"hop/{label}", f"messages/s through {k + 1} hop(s), "
                              f"{row['samples']}-sample blocks", "messages/s", "higher",
                              "raw pyzmq PUSH/PULL, 2 processes", base["messages_per_s"],
                              row["messages_per_s"]))
        figures.append(figure(f"hop-cpu/{label}", f"CPU per message per hop, {k} identity "
                              f"stage(s)", "µs CPU/hop", "lower", "raw pyzmq PUSH/PULL",
                              base["us_per_hop"], row["us_per_hop"]))
    return figures


def step_pipeline(ctx: Context) -> list[dict]:
    argv = ["--quick", "--chains", "transcode"] if ctx.quick else []
    report = ctx.script("bench_pipeline").main(argv)
    figures = []
    for row in report["results"]:
        audio = row["audio_s"]
        speed = lambda wall: {"min": audio / wall["max"], "median": audio / wall["median"],
                              "max": audio / wall["min"], "n": wall["n"]}  # noqa: E731
        for mode, suffix, what in (("processes", "", "stage per process"),
                                   ("auto", " auto", "fuse: auto")):
            side = row[mode]
            figures.append(figure(
                f"pipeline/{row['chain']}{suffix}", f"one stream, {row['chain']} chain, {what}",
                "x real time", "higher", "the same chain in one process (Runner)",
                speed(row["in_process"]["wall_s"]), speed(side["wall_s"]),
                f"{side['workers']} workers, busiest {side['busiest_worker']}; wall includes "
                f"worker start-up (fixed cost {report['fixed_run_cost_s']['median']:.2f} s)",
                pairs=side["speed_vs_in_process"]))
    return figures


def step_realtime(ctx: Context) -> list[dict]:
    report = ctx.script("bench_realtime").main([])
    return [figure(f"realtime/{row['streams']} streams", f"CPU of {row['streams']} paced "
                   f"stream(s) over one hop", "% of a core", "lower",
                   "raw pyzmq at the same pace", row["raw"]["total_pct"],
                   row["engine"]["total_pct"], pairs=row["engine_over_raw_pairs"])
            for row in report["results"]]


def step_scaling(ctx: Context) -> list[dict]:
    report = ctx.script("bench_scaling").main(["--quick"] if ctx.quick else [])
    ctx.plot("Scaling: throughput vs replicas", report.get("plot"))
    base = report["baseline"]["throughput"]
    figures = [figure(f"scaling/{row['replicas']}", f"{report['files']} files transcoded, "
                      f"{row['replicas']} replica(s)", "audio s/s", "higher",
                      "plain PyAV loop, 1 process", base, row["throughput"],
                      f"{report['files']} x {report['seconds_per_file']:g} s mp3 -> 48 kHz aac",
                      pairs=row["speedup_pairs"])
               for row in report["results"]]
    best = max(figures, key=lambda f: f["ratio"]["median"])
    figures.append({**best, "id": "scaling/best",
                    "what": best["what"] + " (the best setting)"})
    return figures


def step_cluster(ctx: Context) -> list[dict]:
    """Workers placed by Ray on 2 fake nodes vs the same run on this machine (needs ray)."""
    report = ctx.script("bench_cluster").main(["--quick"] if ctx.quick else [])
    if "skipped" in report:
        ctx.checks["cluster"] = f"skipped: {report['skipped']}"
        return []
    ctx.checks["cluster"] = (f"a Ray run's fixed cost {report['startup_s']['ray']['median']:.2f} s "
                             f"(local {report['startup_s']['local']['median']:.2f} s); the test "
                             f"cluster took {report['cluster_start_s']:.1f} s to start")
    what = f"{report['files']} files transcoded, 2 replicas"
    return [figure("cluster/throughput", f"{what} on 2 Ray nodes (host agents, CURVE)",
                   "audio s/s", "higher", "the same run with engine: local",
                   report["throughput"]["local"], report["throughput"]["ray"],
                   "target >= 0.95x; the run from start to done, without the fixed cost"),
            figure("cluster/fixed cost", f"{what}: connect, place, agents, stop", "s", "lower",
                   "engine: local", report["startup_s"]["local"], report["startup_s"]["ray"])]


def step_replay(ctx: Context) -> list[dict]:
    report = ctx.script("bench_replay").main(["--quick"] if ctx.quick else [])
    return [figure("replay/cpu", f"CPU of {report['streams']} streams through a gain with "
                   f"restart: on-failure (acks, replay buffers), no failure", "CPU s", "lower",
                   "the same run without restart", report["never"]["cpu_s"],
                   report["restart"]["cpu_s"], "worst case: no codec work")]


def step_latency(ctx: Context) -> list[dict]:
    report = ctx.script("bench_latency").main(["--quick"] if ctx.quick else [])
    ctx.plot("Live latency histogram", report.get("plot"))
    figures = []
    for codec, entry in report["codecs"].items():
        g = entry["glass_to_glass"]
        frame = {"min": entry["frame_ms"], "median": entry["frame_ms"], "max": entry["frame_ms"],
                 "n": 1}
        note = ("the baseline is one frame's duration (what a frame-by-frame stream must "
                "buffer at least), not a measured run; " if codec == "mp3" else "")
        for p in ("p50", "p99"):
            figures.append(figure(f"latency/{codec} {p}", f"{codec} sender -> WebSocket "
                                  f"client {p}", "ms", "lower", "one frame's duration", frame,
                                  {"min": g["min_ms"], "median": g[f"{p}_ms"],
                                   "max": g["max_ms"], "n": g["n"]},
                                  note + "min/max are over all stamped frames" if p == "p50"
                                  else ""))
    return figures


def step_memory(ctx: Context) -> list[dict]:
    """Worker RSS under backpressure (a source at full speed into HWM-bounded queues) and per
    worker in the other engine runs, against a bare interpreter with the same libraries."""
    bare = []
    for _ in range(3):
        code = f"{_WORKER_LIBS}; print(open('/proc/self/status').read())"
        text = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=60, check=True).stdout
        bare += [int(line.split()[1]) / 1024 for line in text.splitlines()
                 if line.startswith("VmRSS:")]
    hop = ctx.script("bench_hop")
    with ctx.sampler.phase("memory"):
        for _ in range(2):
            hop.engine_chain(1, 3000 if ctx.quick else 20000, 16384)
    peaks = ctx.sampler.peaks("memory")
    if not peaks:
        raise BenchError("the memory step saw no worker process (is /proc readable?)")
    figures = [figure("memory/worker backpressure", "peak RSS per process, source at full "
                      "speed -> identity -> sink, 16384-sample blocks, HWM 64",
                      "MB", "lower", f"bare python with {_WORKER_LIBS[7:]}", bare,
                      peaks,
                      "every process below this one: workers and the forkserver")]
    for step in ("pipeline", "scaling"):
        peaks = ctx.sampler.peaks(step)
        if peaks:
            figures.append(figure(f"memory/{step}", f"peak RSS per process during {step}",
                                  "MB", "lower", "bare python (same libraries)", bare, peaks,
                                  "includes the script's own helper processes"))
    return figures


def step_ffmpeg(ctx: Context) -> list[dict]:
    from flowengine.cli.bench_ffmpeg import compare

    executable = shutil.which("ffmpeg")
    if executable is None:
        ctx.ffmpeg = {"skipped": "no ffmpeg on PATH"}
        return []
    pipeline = ctx.script("bench_pipeline")
    ctx.ffmpeg = compare(executable, 5.0 if ctx.quick else 30.0, pipeline.make_input,
                         pipeline.chain, pipeline.run_inprocess, repeat=2 if ctx.quick else 3)
    return [figure("ffmpeg/transcode", "mp3 -> 48 kHz mp3 transcode throughput", "x real time",
                   "higher", "ffmpeg executable", ctx.ffmpeg["ffmpeg_runs"],
                   ctx.ffmpeg["flowengine_runs"])]


def step_soak(ctx: Context) -> list[dict]:
    result = ctx.script("soak").main(["--minutes", "3", "--out", ctx.out("soak.json")])
    ctx.plot("Live soak: memory over time", result.get("plot"))
    ctx.checks["soak"] = ("PASS" if not result["problems"] else
                          "FAIL: " + "; ".join(result["problems"]))
    figures = []
    for key, series in result["processes"].items():
        rss = [s["rss_kb"] / 1024 for s in series["samples"]]
        if len(rss) >= 4:
            half = len(rss) // 2
            figures.append(figure(f"memory/soak {key}", f"RSS of {key} in a live run with a "
                                  f"slow client (backpressure)", "MB", "lower",
                                  "the same process, first half of the run", rss[:half],
                                  rss[half:]))
    return figures


def step_chaos(ctx: Context) -> list[dict]:
    s = ctx.script("chaos").main(["--trials", "8", "--out", ctx.out("chaos.json")])["summary"]
    ctx.checks["chaos"] = (f"{s['ok']}/{s['trials']} killed-worker runs ended cleanly; detection "
                           f"p50 {s.get('detection_p50_s', float('nan')):.2f} s, p99 "
                           f"{s.get('detection_p99_s', float('nan')):.2f} s")
    return []


def step_fuzz(ctx: Context) -> list[dict]:
    module = ctx.script("fuzz")
    module.RESULTS_FILE = ctx.raw_dir / "fuzz.json"
    targets = module.main(["--cases", "500"])["targets"]
    ctx.checks["fuzz"] = ", ".join(f"{name}: {r['cases']} cases, {r['failures']} failures"
                                   for name, r in targets.items())
    return []


_STEP_FUNCTIONS: dict[str, Callable[[Context], list[dict]]] = {
    "encoders": step_encoders, "decoders": step_decoders, "wire": step_wire, "hop": step_hop,
    "pipeline": step_pipeline, "realtime": step_realtime, "scaling": step_scaling,
    "cluster": step_cluster,
    "replay": step_replay, "latency": step_latency, "memory": step_memory, "ffmpeg": step_ffmpeg, "soak": step_soak,
    "chaos": step_chaos, "fuzz": step_fuzz}


# ---- the suite ------------------------------------------------------------------------------

def _commit(repo: Path) -> str | None:
    try:
        done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo, timeout=10,
                              capture_output=True, text=True)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


def run_bench(quick: bool = False, only: list[str] | None = None, out_dir: Path | None = None,
              record: bool = False, log: TextIO = sys.stdout) -> dict[str, Any]:
    """Run the suite (or the `only` steps); write the JSON and Markdown; the result document."""
    unknown = sorted(set(only or ()) - set(STEPS))
    if unknown:
        raise BenchUsageError(f"unknown benchmark(s) {', '.join(unknown)}; known: "
                              f"{', '.join(STEPS)}")
    bench_dir = find_benchmarks_dir()
    out_dir = Path(out_dir) if out_dir else bench_dir / "results"
    now = datetime.datetime.now()
    stem = f"{now:%Y-%m-%d}-{socket.gethostname()}"
    raw_dir = out_dir / stem
    raw_dir.mkdir(parents=True, exist_ok=True)
    if str(bench_dir) not in sys.path:
        sys.path.insert(0, str(bench_dir))
    machine = importlib.import_module("_bench_common").machine_info()
    started = time.monotonic()
    figures: list[dict] = []
    skipped: dict[str, str] = {}
    with ProcessSampler() as sampler:
        ctx = Context(bench_dir, raw_dir, quick, sampler)
        for name in STEPS:
            if only and name not in only:
                continue
            if quick and name in QUICK_SKIPS and not only:
                skipped[name] = QUICK_SKIPS[name]
                continue
            print(f"== {name}", file=log, flush=True)
            begin = time.monotonic()
            with sampler.phase(name) if name != "memory" else contextlib.nullcontext():
                figures += _STEP_FUNCTIONS[name](ctx)
            print(f"== {name}: {time.monotonic() - begin:.1f} s", file=log, flush=True)
    if only and "ffmpeg" not in only:
        ctx.ffmpeg = {"skipped": "not selected by --only"}
    elif "skipped" in ctx.ffmpeg:
        print(f"ffmpeg comparison skipped: {ctx.ffmpeg['skipped']}", file=log)
    if plot_memory(sampler.samples, sampler.phases, raw_dir / "memory.png"):
        ctx.plot("Memory over time (every process of the suite)", raw_dir / "memory.png")
    argv = ["flowengine", "bench"] + (["--quick"] if quick else []) + \
        [f"--only {n}" for n in only or ()]
    result = {"date": f"{now:%Y-%m-%d %H:%M}", "host": socket.gethostname(),
              "command": " ".join(argv), "quick": quick, "commit": _commit(bench_dir.parent),
              "wall_s": time.monotonic() - started, "machine": machine,
              "load_average_end": round(os.getloadavg()[0], 2), "figures": figures,
              "ffmpeg": ctx.ffmpeg, "skipped": skipped, "checks": ctx.checks,
              "plots": ctx.plots, "raw_dir": str(raw_dir),
              "memory_samples_mb": {str(pid): s for pid, s in sampler.samples.items()}}
    json_path, md_path = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    json_path.write_text(json.dumps(result, indent=1) + "\n")
    md_path.write_text(markdown_summary(result, ctx.plots))
    print(figures_table(figures), file=log)
    print(f"wrote {json_path} and {md_path}", file=log)
    if record:
        ledger = bench_dir.parent / "docs" / "performance.md"
        print(f"recorded in {ledger}: {append_ledger(ledger, result)}", file=log)
    return result
