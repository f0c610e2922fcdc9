"""One stream through a chain of stages: worker processes (Engine) vs one process (Runner).

Three chains over a generated 44.1 kHz stereo MP3 (60 s; 10 s with --quick):

- ``transcode``: file (packets) -> mp3 decode -> resample 48 kHz -> gain -> mp3 encode -> file.
  The encoder is most of the work, so overlapping the stages can gain at most
  total/busiest; the targets: wall <= 1.10 x the busiest worker's busy time,
  and >= 0.95 x the in-process speed.
- ``dsp``: the same with EBU R128 loudness normalisation after the resampler
  (~0.5x the mp3 encoder on this chirp, whose peaks stay far under the
  limiter's ceiling; ~1.1x on a signal where every sample needs the true-peak
  check). With it, the stages before the encoder cost about what encoder and
  sink do.
- ``dsp_balanced``: the same with a compressor instead (~0.45x the encoder):
  the stages before the encoder cost about 0.7x what encoder and sink cost,
  the case the target is for. Target for both DSP chains: >= 1.5 x the
  in-process speed.

Each chain runs three ways, interleaved: in one process (the Runner), with a
worker process per stage, and with `fuse: auto` (the planner's groups: as
many workers as cores, balanced by the operators' cost hints; the "layout"
lines say which). For every chain the table gives the speed-ups over the
in-process runs they were interleaved with (min / median; each repetition
runs between two in-process runs and is set against their mean), the best speed-up
two cores allow with the stage costs measured in one process (busy seconds),
total / max(busiest stage, total / 2), and with those stages in two contiguous
groups (what `fuse: auto` can reach: total / the costliest group), and CPU: the workers' CPU time
(``WorkerReport.cpu_seconds``, I/O threads included) against the in-process
run's, the engine's own cost (wire, sockets, protocol, start-up), which
machine load does not inflate as it does wall-clock busy times. Per worker
(a group's stages share one) its busy and CPU seconds.

All run with 4096-sample blocks (decoder output, resampler re-blocking): the
message count is the main per-hop cost. Wall time is the whole run, worker
start-up included (after one warm-up run that starts the forkserver); the
fixed cost of a run (start, ready, EOF, shutdown) is measured on a 0.1 s
job and reported, with the ratios also given for wall minus that fixed cost
("steady"). Busy times come from the RunReport. On a shared machine each run
records the load average before it and the CPU seconds other processes used
during it (/proc/stat). Repeated; min/median/max.

    python benchmarks/bench_pipeline.py [--quick] [--repeat N] [--chains dsp ...]
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from flowengine.core.fusion import partition
from flowengine.engine import build_plan
from flowengine.engine.control.rundirs import remove_run_dir
from flowengine.engine.worker.forkserver import PRELOAD_MODULES

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _bench_common import bracketed, machine_busy_seconds, print_table, repetitions, \
    resolve_config, run_engine, run_inprocess, size_parser, spread, write_results  # noqa: E402

BLOCK = 4096
# In one process (the Runner), a worker process per stage, the planner's groups (fuse: auto).
MODES = ("in_process", "processes", "auto")


def make_input(path: Path, seconds: float) -> None:
    """A 44.1 kHz stereo MP3 of a chirp, written by flowengine itself (in-process)."""
    run_inprocess({"name": "make-input", "stages": [
        {"name": "tone", "op": "tone", "params": {
            "waveform": "chirp", "frequency": 100, "end_frequency": 8000, "seconds": seconds,
            "sample_rate": 44100, "channels": 2, "chunk_samples": BLOCK}},
        {"name": "encode", "op": "mp3_encoder", "params": {"bitrate": 192000}},
        {"name": "sink", "op": "file_sink", "params": {"path": str(path)}}]})


def chain(name: str, source: Path, out: Path, fuse: bool = False) -> dict:
    """Chain `name` from `source` to `out`; `fuse`: with `fuse: auto`."""
    stages = [
        {"name": "src", "op": "file_source", "params": {"path": str(source), "mode": "packet"}},
        {"name": "decode", "op": "mp3_decoder", "params": {"chunk_samples": BLOCK}},
        {"name": "resample", "op": "resample",
         "params": {"sample_rate": 48000, "out_chunk_samples": BLOCK}},
    ]
    if name == "dsp":
        stages.append({"name": "loudness", "op": "loudness", "params": {"target_lufs": -16}})
    elif name == "dsp_balanced":
        stages.append({"name": "compressor", "op": "compressor", "params": {"threshold_db": -24}})
    stages += [
        {"name": "gain", "op": "gain", "params": {"gain_db": -3}},
        {"name": "encode", "op": "mp3_encoder", "params": {"bitrate": 128000}},
        {"name": "sink", "op": "file_sink", "params": {"path": str(out)}},
    ]
    return {"name": name, "stages": stages, **({"fuse": "auto"} if fuse else {})}


def measure(config: dict, engine: bool) -> dict:
    load, machine_start = os.getloadavg()[0], machine_busy_seconds()
    start, cpu_start = time.perf_counter(), time.process_time()
    report = run_engine(config) if engine else run_inprocess(config)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    machine = machine_busy_seconds()
    busy = {s.name: s.total("busy_seconds") for s in report.stages}
    # Per worker process (a group's stages share one): its stages' busy time, its CPU.
    workers: dict[int, dict] = {}
    for stage in report.stages:
        for w in stage.workers:
            row = workers.setdefault(w.pid or id(w), {"stages": [], "busy_s": 0.0, "cpu_s": 0.0})
            row["stages"].append(stage.name)
            row["busy_s"] += w.busy_seconds
            row["cpu_s"] += w.cpu_seconds
    per_worker = {"+".join(r["stages"]): r for r in workers.values()}
    busiest = max(per_worker, key=lambda name: per_worker[name]["busy_s"])
    own = cpu
    if engine:   # the workers' CPU (this process only coordinates)
        cpu = sum(r["cpu_s"] for r in per_worker.values())
        own += cpu
    # CPU the rest of the machine used meanwhile (others' work, the forkserver)
    others = None if machine is None else max(0.0, machine - machine_start - own)
    return {"wall_s": wall, "report_wall_s": report.wall_seconds, "busy_s": busy,
            "workers": per_worker, "busiest": busiest,
            "busiest_busy_s": per_worker[busiest]["busy_s"], "cpu_s": cpu,
            "audio_s": report.audio_seconds, "load_1min": load, "others_cpu_s": others}


def best_speedup(busy: dict[str, float], cores: int = 2) -> float:
    """What overlap can gain at most with these stage costs on `cores` cores."""
    total = sum(busy.values())
    return total / max(max(busy.values()), total / cores)


def best_grouped(busy: dict[str, float], cores: int = 2) -> float:
    """The same with the stages in `cores` contiguous groups (what `fuse: auto` can reach):
    total / the costliest group of the best cut."""
    costs, start, worst = list(busy.values()), 0, 0.0
    for size in partition(costs, cores):
        worst = max(worst, sum(costs[start:start + size]))
        start += size
    return sum(costs) / worst


def others(runs: list[dict]) -> dict | None:
    """CPU seconds the rest of the machine used during `runs` (None: not known here)."""
    values = [r["others_cpu_s"] for r in runs if r["others_cpu_s"] is not None]
    return spread(values, digits=3) if values else None


def fixed_cost(repeat: int) -> dict:
    """Wall seconds of a run of 0.1 s of audio through three stages: the per-run overhead."""
    config = {"name": "fixed", "stages": [
        {"name": "tone", "op": "tone", "params": {"seconds": 0.1}},
        {"name": "gain", "op": "gain"}, {"name": "sink", "op": "null_sink"}]}
    walls = []
    for _ in range(repeat):
        start = time.perf_counter()
        run_engine(config)
        walls.append(time.perf_counter() - start)
    return spread(walls)


def layout(config: dict) -> list[str]:
    """What the planner says about the layout it chose (`flowengine plan`'s "layout:" lines)."""
    plan = build_plan(resolve_config(config).config)
    remove_run_dir(plan.run_dir)
    return plan.notes


def engine_figures(runs: list[dict], inproc: list[dict], fixed_s: float) -> dict:
    """One engine layout's figures against the in-process runs they were interleaved with
    (per repetition, the mean of the runs before and after it: `bracketed`)."""
    median = len(runs) // 2
    return {"wall_s": spread(r["wall_s"] for r in runs),
            "report_wall_s": spread(r["report_wall_s"] for r in runs),
            "speed_vs_in_process": spread(b["wall_s"] / a["wall_s"]
                                          for a, b in zip(runs, inproc)),
            "steady_speed_vs_in_process": spread(b["wall_s"] / (a["wall_s"] - fixed_s)
                                                 for a, b in zip(runs, inproc)),
            "busiest_worker": runs[median]["busiest"],
            "busiest_busy_s": spread(r["busiest_busy_s"] for r in runs),
            "wall_over_busiest": spread(r["wall_s"] / r["busiest_busy_s"] for r in runs),
            "cpu_s": spread(r["cpu_s"] for r in runs),
            "cpu_over_in_process": spread(a["cpu_s"] / b["cpu_s"] for a, b in zip(runs, inproc)),
            "workers": len(runs[median]["workers"]),
            "per_worker": {name: {"busy_s": round(w["busy_s"], 3), "cpu_s": round(w["cpu_s"], 3)}
                           for name, w in runs[median]["workers"].items()},
            "load_1min": spread((r["load_1min"] for r in runs), digits=2),
            "others_cpu_s": others(runs)}


def bench(name: str, source: Path, tmp: Path, repeat: int, fixed_s: float) -> dict:
    runs: dict[str, list[dict]] = {mode: [] for mode in MODES}
    engines = [mode for mode in MODES if mode != "in_process"]

    def run(mode: str, i: int) -> None:
        config = chain(name, source, tmp / f"{name}-{mode}-{i}.mp3", fuse=mode == "auto")
        runs[mode].append(measure(config, engine=mode != "in_process"))

    run("in_process", 0)
    for i in range(repeat):  # interleaved, so a change of machine load hits every mode alike
        turn = i % len(engines)
        for mode in engines[turn:] + engines[:turn]:     # none always first
            run(mode, i)
        run("in_process", i + 1)    # each repetition between two in-process runs
    inproc = runs["in_process"]
    around = bracketed(inproc, ("wall_s", "cpu_s"))
    median = len(inproc) // 2
    return {"chain": name, "repeat": repeat, "audio_s": inproc[median]["audio_s"],
            "in_process": {
                "wall_s": spread(r["wall_s"] for r in inproc),
                "cpu_s": spread(r["cpu_s"] for r in inproc),
                "busy_s_per_stage": {k: round(v, 3) for k, v in inproc[median]["busy_s"].items()},
                "best_speedup_two_cores": spread(best_speedup(r["busy_s"]) for r in inproc),
                "best_two_groups": spread(best_grouped(r["busy_s"]) for r in inproc),
                "load_1min": spread((r["load_1min"] for r in inproc), digits=2),
                "others_cpu_s": others(inproc)},
            "processes": engine_figures(runs["processes"], around, fixed_s),
            "auto": {**engine_figures(runs["auto"], around, fixed_s),
                     "layout": layout(chain(name, source, tmp / "plan.mp3", fuse=True))}}


def main(argv: list[str] | None = None) -> dict:
    parser = size_parser(__doc__, "10 s of audio, 2 repetitions")
    parser.add_argument("--chains", nargs="+", default=["transcode", "dsp", "dsp_balanced"])
    args = parser.parse_args(argv)
    seconds = 10.0 if args.quick else 60.0
    repeat = repetitions(args, quick=2, full=3)
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp_name:
        tmp = Path(tmp_name)
        source = tmp / "input.mp3"
        make_input(source, seconds)
        # The loudness stage imports scipy.signal on first use (~1.4 s here); the in-process
        # runs pay that once, so let the forkserver preload it for the workers as well.
        if "scipy.signal" not in PRELOAD_MODULES:
            PRELOAD_MODULES.append("scipy.signal")
        import scipy.signal  # noqa: F401 - and this process's in-process runs do not pay it
        fixed_cost(1)  # warm-up: starts the forkserver, which later runs reuse
        fixed = fixed_cost(3)
        results = [bench(name, source, tmp, repeat, fixed["median"]) for name in args.chains]
    rows, verdicts = [], {}
    for r in results:
        for mode, label in (("processes", "a process per stage"), ("auto", "fuse: auto")):
            speed = r[mode]["speed_vs_in_process"]["median"]
            if r["chain"] == "transcode":
                verdicts[f"transcode, {label}: wall <= 1.10 x busiest worker"] = \
                    r[mode]["wall_over_busiest"]["median"] <= 1.10
                verdicts[f"transcode, {label}: >= 0.95 x in-process"] = speed >= 0.95
            else:
                verdicts[f"{r['chain']}, {label}: >= 1.5 x in-process"] = speed >= 1.5
        proc, auto = r["processes"], r["auto"]
        rows.append([r["chain"], r["in_process"]["wall_s"]["median"],
                     _min_median(proc["speed_vs_in_process"]),
                     _min_median(auto["speed_vs_in_process"]),
                     auto["steady_speed_vs_in_process"]["median"],
                     r["in_process"]["best_speedup_two_cores"]["median"],
                     r["in_process"]["best_two_groups"]["median"],
                     proc["cpu_over_in_process"]["median"], auto["cpu_over_in_process"]["median"],
                     f"{auto['busiest_worker']} {auto['busiest_busy_s']['median']:.2f}",
                     auto["wall_over_busiest"]["median"]])
    print_table(["chain", "in-proc s", "per-stage speed min/med", "auto speed min/med",
                 "auto steady", "best possible", "best 2 groups", "CPU per-stage/in-proc",
                 "CPU auto/in-proc",
                 "auto busiest worker (busy s)", "auto wall/busiest"], rows)
    for r in results:
        print(f"{r['chain']}: in process, busy s per stage: "
              + " ".join(f"{k}={v:.2f}" for k, v in r["in_process"]["busy_s_per_stage"].items()))
        for note in r["auto"]["layout"]:
            print(f"{r['chain']}: layout: {note}")
        print(f"{r['chain']}: fuse: auto, per worker: " + "; ".join(
            f"{name} busy {w['busy_s']:.2f} s CPU {w['cpu_s']:.2f} s"
            for name, w in r["auto"]["per_worker"].items()))
    loads = [r[mode]["load_1min"] for r in results for mode in MODES]
    print(f"fixed cost of a run (0.1 s job, median): {fixed['median']:.2f} s; load average "
          f"(1 min) before the runs: {min(x['min'] for x in loads):.2f} to "
          f"{max(x['max'] for x in loads):.2f}")
    busy = [r[mode]["others_cpu_s"] for r in results for mode in MODES if r[mode]["others_cpu_s"]]
    if busy:
        print(f"CPU seconds other processes used during a run: median "
              f"{statistics.median(x['median'] for x in busy):.2f}, at most "
              f"{max(x['max'] for x in busy):.2f}")
    report = {"audio_seconds": seconds, "block_samples": BLOCK, "fixed_run_cost_s": fixed,
              "scipy_preloaded": True, "quick": args.quick, "targets_met": verdicts,
              "results": results}
    path = write_results("pipeline", report)
    for target, met in verdicts.items():
        print(f"target {target}: {'met' if met else 'NOT met'}")
    print(f"wrote {path}")
    return report


def _min_median(side: dict) -> str:
    return f"{side['min']:.2f} / {side['median']:.2f}"


if __name__ == "__main__":
    main()
