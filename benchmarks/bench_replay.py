"""The cost of lossless restarts: a stage with ``restart: on-failure`` next to the same run without.

A stateless stage with ``restart: on-failure`` makes its senders number every
data message and keep it in a bounded replay buffer until the consumers
acknowledge it (``engine/recovery/replay.py``), and makes its consumers report how far
each stream got (an ``ack`` about every 20 ms). This measures what that costs
when nothing fails, on the worst case for it: no codec work to hide behind,
only a ``gain`` between a multi-stream tone source and a null sink, so the
per-message bookkeeping is most of what the workers do.

    tones (4 streams, 1152-sample blocks, as fast as they go) -> gain -> null_sink

run alternately with and without ``restart: on-failure`` on the gain. Reported:
wall time and the CPU time of all workers (``WorkerReport.cpu_seconds``, which
machine load inflates less than wall time), each as restart / never. The audit
must balance in both; a run with restart must replay nothing (no worker died).

    python benchmarks/bench_replay.py [--quick]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _bench_common import print_table, repetitions, run_engine, size_parser, spread, \
    write_results  # noqa: E402

STREAMS = 4
BLOCK = 1152


def config(seconds: float, restart: bool) -> dict:
    gain = {"name": "gain", "op": "gain", "params": {"gain_db": -3.0}}
    if restart:
        gain["restart"] = "on-failure"
    return {"name": f"replay-{'restart' if restart else 'never'}", "stages": [
        {"name": "tones", "op": "tones",
         "params": {"streams": STREAMS, "seconds": seconds, "chunk_samples": BLOCK}},
        gain,
        {"name": "sink", "op": "null_sink"}]}


def measure(seconds: float, restart: bool) -> dict:
    start = time.perf_counter()
    report = run_engine(config(seconds, restart))   # an AuditError fails the benchmark
    wall = time.perf_counter() - start
    cpu = sum(s.total("cpu_seconds") for s in report.stages)
    if report.restarts:
        raise RuntimeError(f"a worker restarted in a run without failures: {report.restarts}")
    return {"wall_s": wall, "cpu_s": cpu, "audio_s": report.audio_seconds}


def main(argv: list[str] | None = None) -> dict:
    parser = size_parser(__doc__, "30 s per stream, 1 repetition")
    args = parser.parse_args(argv)
    seconds = 30.0 if args.quick else 60.0
    repeat = repetitions(args, quick=1, full=3)
    run_engine(config(0.1, False))       # starts the forkserver outside the timing
    runs: dict[str, list[dict]] = {"never": [], "restart": []}
    for _ in range(repeat):              # interleaved: machine load hits both alike
        for mode in runs:
            runs[mode].append(measure(seconds, mode == "restart"))
    never, restart = runs["never"], runs["restart"]
    result = {
        "streams": STREAMS, "seconds_per_stream": seconds, "block_samples": BLOCK,
        "repeat": repeat, "quick": args.quick,
        "never": {key: spread(r[key] for r in never) for key in ("wall_s", "cpu_s")},
        "restart": {key: spread(r[key] for r in restart) for key in ("wall_s", "cpu_s")},
        "cpu_restart_over_never": spread(a["cpu_s"] / b["cpu_s"] for a, b in zip(restart, never)),
        "wall_restart_over_never": spread(a["wall_s"] / b["wall_s"]
                                          for a, b in zip(restart, never)),
        "audio_s": never[0]["audio_s"]}
    print_table(["run", "wall s", "CPU s (all workers)"],
                [[mode, result[mode]["wall_s"]["median"], result[mode]["cpu_s"]["median"]]
                 for mode in runs])
    path = write_results("replay", result)
    print(f"restart: on-failure costs {result['cpu_restart_over_never']['median']:.2f}x the CPU "
          f"and {result['wall_restart_over_never']['median']:.2f}x the wall time of a run "
          f"without it (no failure); wrote {path}")
    return result


if __name__ == "__main__":
    main()
