"""Each operator's CPU per second of audio, in one process: the cost hints `fuse: auto` balances.

Every operator measured runs in a three-stage chain in one process (the
in-process runner, 4096-sample blocks): a `file_source` giving its input, the
operator, a `null_sink`. The input is a 44.1 kHz stereo chirp (60 s; 10 s with
--quick), as in bench_pipeline.py, read as PCM (the decoder's frames) or as
packets of the codec a decoder or a sink takes. A source is measured as the
first stage itself. Every case runs once on a second of audio first, so what
an operator imports on first use is not counted. The stage's busy time is
taken on the process's CPU clock instead of the wall clock (core/loop.py's
`_perf`), so load on the machine inflates it little; the minimum over the
repetitions counts.

"relative" is its CPU per second of audio over the mp3 encoder's (128
kbit/s, the codec the bench_pipeline chains end with): the `cost=` each
operator is declared with (ops/catalog.py) is that column, rounded. The
planner only compares costs, so the unit cancels out; one machine's
absolute figures would not carry to another.

    python benchmarks/bench_op_cost.py [--quick] [--repeat N] [--ops gain fir ...]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from flowengine.core import loop
from flowengine.ops.registry import registry

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _bench_common import print_table, repetitions, run_inprocess, size_parser, spread, \
    write_results  # noqa: E402

BLOCK = 4096
RATE = 44100
REFERENCE = "mp3_encoder"
# The inputs: an extension a sink writes (its codec), and how to read it back.
CODEC_FILES = {"mp3": ".mp3", "aac": ".aac", "opus": ".opus", "flac": ".flac", "wav": ".wav"}
# operator -> (its params, its input: "pcm", a codec's packets, or "source").
CASES: dict[str, tuple[dict, str]] = {
    "file_source": ({"mode": "pcm"}, "source"),
    "file_source/packet": ({"mode": "packet"}, "source"),
    "tone": ({"waveform": "chirp", "sample_rate": RATE}, "source"),
    "files": ({"mode": "pcm"}, "source"),
    "files/packet": ({"mode": "packet"}, "source"),
    "tones": ({"streams": 1, "waveform": "chirp", "sample_rate": RATE}, "source"),
    "mp3_decoder": ({}, "mp3"),
    "aac_decoder": ({}, "aac"),
    "opus_decoder": ({}, "opus"),
    "flac_decoder": ({}, "flac"),
    "wav_decoder": ({"output_format": f"{RATE}/2/s16/interleaved"}, "wav"),
    "mp3_encoder": ({"bitrate": 128000}, "pcm"),
    "aac_encoder": ({"bitrate": 128000}, "pcm"),
    "opus_encoder": ({"bitrate": 96000}, "pcm"),
    "flac_encoder": ({}, "pcm"),
    "wav_encoder": ({}, "pcm"),
    "identity": ({}, "pcm"),
    "gain": ({"gain_db": -3}, "pcm"),
    "resample": ({"sample_rate": 48000, "out_chunk_samples": BLOCK}, "pcm"),
    "channel_map": ({"out_channels": 1}, "pcm"),
    "delay": ({"delay_ms": 20}, "pcm"),
    "fir": ({"taps": [1 / 64] * 64}, "pcm"),
    "fir/1025": ({"taps": [1 / 1025] * 1025}, "pcm"),
    "iir": ({"b": [0.5, 0.5], "a": [1.0]}, "pcm"),
    "lowpass": ({"cutoff_hz": 4000}, "pcm"),
    "highpass": ({"cutoff_hz": 80}, "pcm"),
    "compressor": ({"threshold_db": -24}, "pcm"),
    "loudness": ({"target_lufs": -16}, "pcm"),
    "file_sink": ({"path": "{out}.mp3"}, "mp3"),
    "file_sink/pcm": ({"path": "{out}.wav"}, "pcm"),
    "null_sink": ({}, "pcm"),
    "memory_sink": ({}, "pcm"),
}


def make_inputs(directory: Path, seconds: float) -> dict[str, Path]:
    """The chirp written once per codec (a PCM input reads the mp3 one)."""
    directory.mkdir(exist_ok=True)
    paths = {}
    for codec, extension in CODEC_FILES.items():
        path = paths[codec] = directory / f"input{extension}"
        run_inprocess({"name": f"input-{codec}", "stages": [
            {"name": "tone", "op": "tone", "params": {
                "waveform": "chirp", "frequency": 100, "end_frequency": 8000,
                "seconds": seconds, "sample_rate": 48000 if codec == "opus" else RATE,
                "channels": 2, "chunk_samples": BLOCK}},
            {"name": "sink", "op": "file_sink", "params": {"path": str(path)}}]})
    return paths


def chain(case: str, inputs: dict[str, Path], out: Path, seconds: float) -> dict:
    """The run measuring `case`: its input, the operator (stage "op"), a null sink."""
    op = case.partition("/")[0]
    params, takes = CASES[case]
    params = {key: value.format(out=out) if isinstance(value, str) and "{out}" in value
              else value for key, value in params.items()}
    if takes == "source":
        read = {"file_source": {"path": str(inputs["mp3"])},
                "files": {"paths": str(inputs["mp3"])}}
        stages = [{"name": "op", "op": op,
                   "params": {**params, **read.get(op, {"seconds": seconds})}}]
    else:
        mode = "pcm" if takes == "pcm" else "packet"
        stages = [{"name": "src", "op": "file_source",
                   "params": {"path": str(inputs["mp3" if takes == "pcm" else takes]),
                              "mode": mode}},
                  {"name": "op", "op": op, "params": params}]
    if registry.get(op).kind != "sink":
        stages.append({"name": "null", "op": "null_sink"})
    return {"name": case.replace("/", "-"), "block_samples": BLOCK, "stages": stages}


def measure(config: dict) -> float:
    """CPU seconds of the stage named "op"."""
    report = run_inprocess(config)
    return next(s for s in report.stages if s.name == "op").total("busy_seconds")


def main(argv: list[str] | None = None) -> dict:
    parser = size_parser(__doc__, "10 s of audio, 2 repetitions")
    parser.add_argument("--ops", nargs="+", default=list(CASES), choices=list(CASES),
                        metavar="OP", help="the cases to measure (default: all)")
    args = parser.parse_args(argv)
    seconds = 10.0 if args.quick else 60.0
    repeat = repetitions(args, quick=2, full=5)
    cases = list(dict.fromkeys([REFERENCE] + args.ops))
    # Busy time on the CPU clock: what an operator costs, not what the machine's load adds.
    loop._perf = time.process_time
    per_second: dict[str, list[float]] = {case: [] for case in cases}
    with tempfile.TemporaryDirectory(prefix="bench-op-cost-") as tmp_name:
        tmp = Path(tmp_name)
        # First a second of each: what an operator imports on first use is not its cost.
        warm = make_inputs(tmp / "warm", 1.0)
        for case in cases:
            measure(chain(case, warm, tmp / "warm" / "out", 1.0))
        inputs = make_inputs(tmp, seconds)
        for i in range(repeat):     # interleaved: a change of load hits every case alike
            for case in cases:
                cpu = measure(chain(case, inputs, tmp / f"out-{i}", seconds))
                per_second[case].append(cpu / seconds)
    reference = min(per_second[REFERENCE])
    results = [{"case": case, "params": CASES[case][0], "input": CASES[case][1],
                "cpu_ms_per_audio_s": spread(1000 * v for v in per_second[case]),
                "relative": round(min(per_second[case]) / reference, 3)} for case in cases]
    print_table(["operator", "input", "CPU ms per s of audio (min)", "median", "relative"],
                [[r["case"], r["input"], r["cpu_ms_per_audio_s"]["min"],
                  r["cpu_ms_per_audio_s"]["median"], r["relative"]] for r in results])
    print(f"relative: CPU over the {REFERENCE}'s ({1000 * reference:.2f} ms per s of audio)")
    report = {"audio_seconds": seconds, "block_samples": BLOCK, "sample_rate": RATE,
              "reference": REFERENCE, "repeat": repeat, "quick": args.quick,
              "clock": "process CPU (time.process_time)", "results": results}
    path = write_results("op_cost", report)
    print(f"wrote {path}")
    return report


if __name__ == "__main__":
    main()
