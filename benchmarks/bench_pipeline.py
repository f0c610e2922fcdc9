"""One stream through a chain of stages: worker processes (Engine) vs one process (Runner).

Two chains over a generated 44.1 kHz stereo MP3 (60 s; 10 s with --quick):

- ``transcode``: file (packets) -> mp3 decode -> resample 48 kHz -> gain -> mp3 encode -> file.
  The encoder is most of the work, so overlapping the stages can gain at most
  total/busiest; the targets: processes wall <= 1.10 x the busiest stage's
  busy time, and processes >= 0.95 x the in-process speed.
- ``dsp``: the same with EBU R128 loudness normalisation after the resampler.
  In one process loudness costs ~2.5x the mp3 encoder (~0.29 s vs ~0.12 s per
  10 s of audio), so it bounds the overlap at total / loudness (~1.7x).
- ``dsp_balanced``: the same with a compressor instead, which costs about
  what the encoder does in one process (~0.11 s vs ~0.15 s per 10 s here; a
  4097-tap FIR is only ~0.06 s: the ``fir`` operator goes FFT overlap-add for
  long filters): two stages of comparable cost, the case the target is for.
  Target for both DSP chains: processes >= 1.5 x the in-process speed.

For every chain the table gives the stage costs measured in one process (busy
seconds) and the best speed-up two cores allow with them,
total / max(busiest stage, total / 2), next to the measured one. CPU: the
in-process run's CPU time against the sum of the workers' CPU time
(``WorkerReport.cpu_seconds``, I/O threads included): the engine's own cost
(wire, sockets, protocol, start-up), which machine load does not inflate as it
does wall-clock busy times.

Both run with 4096-sample blocks (decoder output, resampler re-blocking): the
message count is the main per-hop cost. Wall time is the whole run, worker
start-up included (after one warm-up run that starts the forkserver); the
fixed cost of a run (start, ready, EOF, shutdown) is measured on a 0.1 s
job and reported, with the ratios also given for wall minus that fixed cost
("steady"). Busy times come from the RunReport. Repeated; min/median/max.

    python benchmarks/bench_pipeline.py [--quick]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from flowengine.engine.worker.forkserver import PRELOAD_MODULES

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _bench_common import print_table, repetitions, run_engine, run_inprocess, \
    size_parser, spread, write_results  # noqa: E402

BLOCK = 4096


def make_input(path: Path, seconds: float) -> None:
    """A 44.1 kHz stereo MP3 of a chirp, written by flowengine itself (in-process)."""
    run_inprocess({"name": "make-input", "stages": [
        {"name": "tone", "op": "tone", "params": {
            "waveform": "chirp", "frequency": 100, "end_frequency": 8000, "seconds": seconds,
            "sample_rate": 44100, "channels": 2, "chunk_samples": BLOCK}},
        {"name": "encode", "op": "mp3_encoder", "params": {"bitrate": 192000}},
        {"name": "sink", "op": "file_sink", "params": {"path": str(path)}}]})


def chain(name: str, source: Path, out: Path) -> dict:
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
    return {"name": name, "stages": stages}


def measure(config: dict, engine: bool) -> dict:
    start, cpu_start = time.perf_counter(), time.process_time()
    report = run_engine(config) if engine else run_inprocess(config)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    busy = {s.name: s.total("busy_seconds") for s in report.stages}
    busiest = max(busy, key=busy.get)
    if engine:   # the workers' CPU (this process only coordinates)
        cpu = sum(s.total("cpu_seconds") for s in report.stages)
    return {"wall_s": wall, "report_wall_s": report.wall_seconds, "busy_s": busy,
            "busiest_stage": busiest, "busiest_busy_s": busy[busiest], "cpu_s": cpu,
            "audio_s": report.audio_seconds}


def best_speedup(busy: dict[str, float], cores: int = 2) -> float:
    """What overlap can gain at most with these stage costs on `cores` cores."""
    total = sum(busy.values())
    return total / max(max(busy.values()), total / cores)


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


def bench(name: str, source: Path, tmp: Path, repeat: int, fixed_s: float) -> dict:
    runs = {"processes": [], "in_process": []}
    for i in range(repeat):  # interleaved, so a change of machine load hits both alike
        for mode in ("in_process", "processes"):
            config = chain(name, source, tmp / f"{name}-{mode}-{i}.mp3")
            runs[mode].append(measure(config, engine=mode == "processes"))
    proc, inproc = runs["processes"], runs["in_process"]
    speedups = [b["wall_s"] / a["wall_s"] for a, b in zip(proc, inproc)]
    overlap = [r["wall_s"] / r["busiest_busy_s"] for r in proc]
    steady_overlap = [(r["wall_s"] - fixed_s) / r["busiest_busy_s"] for r in proc]
    steady_speedups = [b["wall_s"] / (a["wall_s"] - fixed_s) for a, b in zip(proc, inproc)]
    median = len(proc) // 2
    ideal = [best_speedup(r["busy_s"]) for r in inproc]

    def pick(key: str, rows: list[dict]) -> dict:
        return spread(r[key] for r in rows)

    return {"chain": name, "repeat": repeat,
            "processes_wall_s": pick("wall_s", proc),
            "processes_report_wall_s": pick("report_wall_s", proc),
            "in_process_wall_s": pick("wall_s", inproc),
            "busiest_stage": proc[median]["busiest_stage"],
            "busiest_busy_s": pick("busiest_busy_s", proc),
            "wall_over_busiest": spread(overlap),
            "speed_vs_in_process": spread(speedups),
            "steady_wall_over_busiest": spread(steady_overlap),
            "steady_speed_vs_in_process": spread(steady_speedups),
            "busy_s_per_stage_processes": {k: round(v, 3) for k, v in proc[median]["busy_s"].items()},
            "busy_s_per_stage_in_process": {k: round(v, 3)
                                            for k, v in inproc[median]["busy_s"].items()},
            "best_speedup_two_cores": spread(ideal),
            "in_process_cpu_s": pick("cpu_s", inproc),
            "processes_cpu_s": pick("cpu_s", proc),
            "cpu_processes_over_in_process": spread(a["cpu_s"] / b["cpu_s"]
                                                    for a, b in zip(proc, inproc)),
            "audio_s": proc[median]["audio_s"]}


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
        speed, overlap = r["speed_vs_in_process"]["median"], r["wall_over_busiest"]["median"]
        if r["chain"] == "transcode":
            verdicts["transcode: wall <= 1.10 x busiest"] = overlap <= 1.10
            verdicts["transcode: processes >= 0.95 x in-process"] = speed >= 0.95
        else:
            verdicts[f"{r['chain']}: processes >= 1.5 x in-process"] = speed >= 1.5
        rows.append([r["chain"], r["in_process_wall_s"]["median"], r["processes_wall_s"]["median"],
                     f"{r['busiest_stage']} {r['busiest_busy_s']['median']:.2f}", overlap, speed,
                     r["steady_wall_over_busiest"]["median"], r["steady_speed_vs_in_process"]["median"],
                     r["best_speedup_two_cores"]["median"],
                     r["cpu_processes_over_in_process"]["median"],
                     " ".join(f"{k}={v:.2f}" for k, v in r["busy_s_per_stage_in_process"].items())])
    print_table(["chain", "in-proc s", "procs s", "busiest (s)", "wall/busiest", "procs speed",
                 "steady w/b", "steady speed", "best possible", "CPU procs/in-proc",
                 "busy s per stage (in process)"], rows)
    print(f"fixed cost of a run (0.1 s job, median): {fixed['median']:.2f} s")
    report = {"audio_seconds": seconds, "block_samples": BLOCK, "fixed_run_cost_s": fixed,
              "scipy_preloaded": True, "quick": args.quick, "targets_met": verdicts,
              "results": results}
    path = write_results("pipeline", report)
    for target, met in verdicts.items():
        print(f"target {target}: {'met' if met else 'NOT met'}")
    print(f"wrote {path}")
    return report


if __name__ == "__main__":
    main()
