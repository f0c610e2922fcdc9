"""Where a transcode's CPU goes: a plain PyAV loop vs flowengine's operators vs its runner.

The scaling benchmark's chain (mp3 -> resample 44.1->48 kHz -> aac, one .aac
per file) done three ways in this one process, over the same files:

- ``pyav``: the plain PyAV loop (demux, decode, resample, encode, mux), the
  scaling benchmark's baseline;
- ``operators``: flowengine's operators called directly through the library
  API (AudioFileReader -> Resampler -> Encoder -> ADTS bytes to a file), no
  runner, no engine;
- ``runner``: the same chain as a run in flowengine's in-process runner
  (nodes, counters, the sample audit), no worker processes.

CPU seconds of this process (user + sys) for each, interleaved ``--repeat``
times so that the machine's load hits all three alike; reported as min and
median, and as ratios over ``pyav``. On 2 cores no layout of worker processes
can beat 2 / (runner ratio) times the PyAV loop, since every file's audio goes
through these operators and nodes once: this is the per-file cost the scaling
target depends on.

    python benchmarks/bench_overhead.py [--quick] [--repeat N]
"""

from __future__ import annotations

import resource
import sys
import tempfile
from pathlib import Path

import av

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _bench_common import print_table, repetitions, size_parser, spread, \
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


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> dict:
    parser = size_parser(__doc__, "2 files of 5 s, 3 repetitions")
    args = parser.parse_args(argv)
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
    base = spread(cpu["pyav"])
    results = {}
    rows = []
    for way, values in cpu.items():
        measured = spread(values)
        ratios = {"median": round(measured["median"] / base["median"], 3),
                  "min": round(measured["min"] / base["min"], 3)}
        results[way] = {"cpu_s": measured, "vs_pyav": ratios}
        rows.append([way, measured["min"], measured["median"], ratios["min"], ratios["median"]])
    print_table(["way", "CPU s (min)", "CPU s (median)", "vs pyav (min)", "vs pyav (median)"],
                rows)
    ceiling = 2 / results["runner"]["vs_pyav"]["median"]
    print(f"{files} files of {seconds:g} s, {repeat} interleaved repetitions; with every file "
          f"through the runner's nodes, 2 cores reach at most ~{ceiling:.2f}x the PyAV loop")
    report = {"files": files, "seconds_per_file": seconds, "quick": args.quick,
              "repeat": repeat, "results": results,
              "two_core_ceiling_vs_pyav": round(ceiling, 3)}
    path = write_results("overhead", report)
    print(f"wrote {path}")
    return report


if __name__ == "__main__":
    main()
