"""Where a transcode's CPU goes: a plain PyAV loop vs flowengine's operators vs its runner.

The scaling benchmark's chain (mp3 -> resample 44.1->48 kHz -> aac, one .aac
per file) done three ways in this one process, over the same files:

- ``pyav``: the plain PyAV loop (demux, decode, resample, encode, mux), the
  scaling benchmark's baseline;
- ``operators``: flowengine's operators called directly through the library
  API (AudioFileReader -> Resampler -> Encoder -> ADTS bytes to a file), no
  runner, no engine;
- ``runner``: the same chain as a run in flowengine's in-process runner
  (stage loops, counters, the sample audit), no worker processes.

CPU seconds of this process (user + sys) for each, interleaved ``--repeat``
times so that the machine's load hits all three alike; reported as min and
median, and as ratios over ``pyav`` (each repetition over its own ``pyav``
run, then min and median). And, deterministic where time is not,
the Python calls each way makes per 1024-sample block (cProfile's count over
a 40 s file minus a 10 s one, so start-up cancels out). Targets: the runner
at <= 1.05x the PyAV loop's CPU and <= 2x its calls per block. On 2 cores no
layout of worker processes can beat 2 / (runner ratio) times the PyAV loop,
since every file's audio goes through these operators once.

``--instructions`` (needs valgrind) adds the machine instructions each way
executes per second of audio, counted by callgrind in a child process over a
20 s file minus a 5 s one: nearly the same count run after run however
loaded the machine, so a difference of 1 % means something, where CPU
seconds move by +-20 % here. It takes a few minutes (callgrind runs
Python ~50x slower).

    python benchmarks/bench_overhead.py [--quick] [--repeat N] [--instructions]
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import re
import resource
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import av

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _bench_common import paired, print_table, repetitions, size_parser, spread, \
    write_results  # noqa: E402
from bench_scaling import BLOCK, inprocess_chain, make_inputs, pyav_loops  # noqa: E402

from flowengine.ops.codecs.configs import ENCODER_CONFIGS  # noqa: E402
from flowengine.ops.codecs.encoder import Encoder  # noqa: E402
from flowengine.audio.format import AudioFormat  # noqa: E402
from flowengine.ops.io.reader import AudioFileReader  # noqa: E402
from flowengine.ops.processors.resample import Resampler  # noqa: E402

OUT_FORMAT = AudioFormat(48000, 2, "f32", planar=True)


def operators_transcode(source: Path, target: Path) -> None:
    """One file through flowengine's operators, called as a library."""
    resampler = Resampler(None, OUT_FORMAT, out_chunk_samples=BLOCK)
    encoder = Encoder("aac", ENCODER_CONFIGS["aac"](bitrate=128000))
    with AudioFileReader(source, chunk_samples=BLOCK) as reader, open(target, "wb") as out:
        def encode(force: bool) -> None:
            while (block := resampler.get_audio_frame(force)) is not None:
                encoder.put_frame(block)
                while (packet := encoder.get_packet()) is not None:
                    out.write(packet.data)

        for frame in reader.frames():
            resampler.put_frame(frame)
            encode(False)
        resampler.flush()
        encode(True)
        while (packet := encoder.get_packet(force=True)) is not None:
            out.write(packet.data)


def operators_loop(paths: list[Path], out_dir: Path) -> None:
    for path in paths:
        operators_transcode(path, out_dir / f"{path.stem}.aac")


WAYS = {"pyav": pyav_loops, "operators": operators_loop, "runner": inprocess_chain}


def decoded_samples(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(frame.samples for frame in container.decode(audio=0))


def check_outputs(out_dirs: dict[str, Path], paths: list[Path]) -> None:
    """Every way wrote every file, each within two AAC frames of the PyAV loop's length."""
    for path in paths:
        reference = decoded_samples(out_dirs["pyav"] / f"{path.stem}.aac")
        for way, out_dir in out_dirs.items():
            samples = decoded_samples(out_dir / f"{path.stem}.aac")
            if abs(samples - reference) > 2 * 1024:
                raise RuntimeError(f"{way}: {path.stem}.aac decodes to {samples} samples, the "
                                   f"PyAV loop's to {reference}")


def calls_per_block(work, tmp: Path) -> float:
    """Python calls per 1024-sample block of output: a 40 s file's calls minus a 10 s one's
    (the fixed cost of a run cancels out), over the 30 s between them."""
    counts = []
    for seconds in (10.0, 40.0):
        paths = sorted(_input_dir(tmp, seconds).glob("*.mp3"))
        out = tmp / f"calls-out-{work.__name__}-{seconds:g}"
        out.mkdir()
        work(paths, out)                   # warm: imports, first codec opens
        profile = cProfile.Profile()
        profile.enable()
        work(paths, out)
        profile.disable()
        counts.append(pstats.Stats(profile).total_calls)
    return (counts[1] - counts[0]) / (30.0 * 48000 / 1024)


def _input_dir(tmp: Path, seconds: float) -> Path:
    """A directory holding one generated `seconds`-long input (made once)."""
    directory = tmp / f"calls-{seconds:g}"
    if not directory.exists():
        directory.mkdir()
        make_inputs(directory, 1, seconds)
    return directory


def _callgrind_instructions(way: str, in_dir: Path, out_dir: Path) -> int:
    """Instructions callgrind counts in a child Python running `way` once over `in_dir`."""
    out_dir.mkdir()
    command = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out_dir / 'callgrind.out'}",
               sys.executable, __file__, "--one-way", way, str(in_dir), str(out_dir)]
    # One hash seed: the same dict layouts, so the count repeats (within ~0.5 %).
    done = subprocess.run(command, capture_output=True, text=True, timeout=1800,
                          env={**os.environ, "PYTHONHASHSEED": "0"})
    found = re.search(r"Collected : (\d+)", done.stderr)
    if done.returncode != 0 or found is None:
        raise RuntimeError(f"callgrind over {way} failed (exit {done.returncode}): "
                           f"{done.stderr[-2000:]}")
    return int(found.group(1))


def instructions_per_second(tmp: Path) -> dict[str, float] | None:
    """Instructions per second of audio of each way: a 20 s file's count minus a 5 s one's
    (start-up and the first codec opens cancel out), over the 15 s between them; None
    without valgrind. Two children at a time (one per core)."""
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (apt-get install valgrind): no instruction counts")
        return None
    jobs = [(way, seconds) for way in WAYS for seconds in (5.0, 20.0)]
    inputs = {seconds: _input_dir(tmp, seconds) for seconds in (5.0, 20.0)}
    with ThreadPoolExecutor(max_workers=2) as pool:
        counts = dict(zip(jobs, pool.map(
            lambda job: _callgrind_instructions(job[0], inputs[job[1]],
                                                tmp / f"callgrind-{job[0]}-{job[1]:g}"), jobs)))
    return {way: (counts[way, 20.0] - counts[way, 5.0]) / 15.0 for way in WAYS}


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> dict:
    parser = size_parser(__doc__, "2 files of 5 s, 3 repetitions")
    parser.add_argument("--instructions", action="store_true",
                        help="also count each way's instructions per second of audio with "
                             "callgrind (valgrind; a few minutes)")
    parser.add_argument("--one-way", nargs=3, metavar=("WAY", "IN_DIR", "OUT_DIR"),
                        help=argparse.SUPPRESS)     # the child process --instructions runs
    args = parser.parse_args(argv)
    if args.one_way:
        way, in_dir, out_dir = args.one_way
        WAYS[way](sorted(Path(in_dir).glob("*.mp3")), Path(out_dir))
        return {}
    files, seconds = (2, 5.0) if args.quick else (2, 30.0)
    repeat = repetitions(args, quick=3, full=7)
    cpu: dict[str, list[float]] = {way: [] for way in WAYS}
    with tempfile.TemporaryDirectory(prefix="bench-overhead-") as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "in").mkdir()
        paths = make_inputs(tmp / "in", files, seconds)
        out_dirs = {way: tmp / way for way in WAYS}
        for out_dir in out_dirs.values():
            out_dir.mkdir()
        for way, work in WAYS.items():     # warm-up: imports, first codec opens
            work(paths[:1], out_dirs[way])
        for _ in range(repeat):
            for way, work in WAYS.items():
                start = cpu_seconds()
                work(paths, out_dirs[way])
                cpu[way].append(cpu_seconds() - start)
        check_outputs(out_dirs, paths)
        calls = {way: round(calls_per_block(work, tmp), 1) for way, work in WAYS.items()}
        instructions = instructions_per_second(tmp) if args.instructions else None
    results = {}
    rows = []
    for way, values in cpu.items():
        measured = spread(values)
        pairs = paired(values, cpu["pyav"])
        ratios = {"median": round(pairs["median"], 3), "min": round(pairs["min"], 3)}
        results[way] = {"cpu_s": measured, "vs_pyav": ratios, "calls_per_block": calls[way],
                        "calls_vs_pyav": round(calls[way] / calls["pyav"], 2)}
        rows.append([way, measured["min"], measured["median"], ratios["min"], ratios["median"],
                     calls[way], calls[way] / calls["pyav"]])
        if instructions is not None:
            results[way]["instructions_per_audio_s"] = round(instructions[way])
            results[way]["instructions_vs_pyav"] = round(
                instructions[way] / instructions["pyav"], 4)
            rows[-1] += [instructions[way] / 1e6, instructions[way] / instructions["pyav"]]
    print_table(["way", "CPU s (min)", "CPU s (median)", "vs pyav (min)", "vs pyav (median)",
                 "calls/block", "calls vs pyav"]
                + (["M instr/audio s", "instr vs pyav"] if instructions is not None else []), rows)
    runner = results["runner"]
    met = runner["vs_pyav"]["median"] <= 1.05 and runner["calls_vs_pyav"] <= 2.0
    print(f"target (runner <= 1.05x the PyAV loop's CPU and <= 2x its calls per block): "
          f"{'met' if met else 'NOT met'}")
    if instructions is not None:
        print(f"instructions per second of audio (they repeat within ~0.5 %): the "
              f"runner {results['runner']['instructions_vs_pyav']:.3f}x the PyAV loop's")
    ceiling = 2 / results["runner"]["vs_pyav"]["median"]
    print(f"{files} files of {seconds:g} s, {repeat} interleaved repetitions; with every file "
          f"through the runner's nodes, 2 cores reach at most ~{ceiling:.2f}x the PyAV loop")
    report = {"files": files, "seconds_per_file": seconds, "quick": args.quick,
              "repeat": repeat, "results": results, "met": met,
              "target": "runner <= 1.05x the PyAV loop's CPU, <= 2x its Python calls per block",
              "two_core_ceiling_vs_pyav": round(ceiling, 3)}
    path = write_results("overhead", report)
    print(f"wrote {path}")
    return report


if __name__ == "__main__":
    main()
