"""CPU cost of moving live 48 kHz stereo streams through one hop, next to a raw pyzmq loop.

1 and 8 streams, each paced at real time in 1152-sample blocks (one block per
stream every 24 ms), go source -> sink through the engine (two worker
processes, one hop), and through a raw pyzmq PUSH/PULL pair at the same pace
with the same payload (a msgpack header + the samples; the sender sleeps to
the next block and sends one message per stream, the receiver blocks in
recv). Measured: the CPU time of the sending and the receiving process over
~10 s of steady state (``time.process_time`` sampled in each process, I/O
threads included), as % of one core. Target: the engine's cost <= 1.5x the
raw loop's, taken pair by pair (each engine run over the mean of the raw runs
just before and after it; the median of those ratios).

The engine's paced source waits through ``flowengine.ops.pacing``: its worker
sends what the tick produced (the blocks of every stream: one batch) and
waits on its control socket until the next block is due, so a tick costs
one wake-up and one ZeroMQ message on each side whatever the number of
streams; the raw loop sends one message per stream. Also reported: the
engine's latency, from the moment a block is due at the source to its
arrival in the sink's node (p50/p99/max ms): batching a tick must not delay
a live stream (it stays well under one 24 ms block).

    python benchmarks/bench_realtime.py [--quick]
"""

from __future__ import annotations

import multiprocessing
import sys
import tempfile
import time
from pathlib import Path

import msgpack
import numpy as np
import zmq

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _bench_common import bracketed, paired, print_table, repetitions, run_engine, size_parser, \
    spread, write_results  # noqa: E402
from _bench_ops import collect, latencies_ms, op  # noqa: E402

SAMPLES = 1152
RATE = 48000
STREAMS = (1, 8)
WARMUP = 40  # blocks per stream (~1 s) before measuring


def _raw_receiver(endpoint: str, messages: int, warmup: int, result) -> None:
    context = zmq.Context()
    pull = context.socket(zmq.PULL)
    pull.bind(endpoint)
    result.put("ready")
    for i in range(messages):
        pull.recv_multipart(copy=False)
        if i == warmup:
            start = (time.monotonic(), time.process_time())
    end = (time.monotonic(), time.process_time())
    result.put(("recv", end[0] - start[0], end[1] - start[1]))
    pull.close(linger=0)
    context.term()


def _raw_sender(endpoint: str, blocks: int, streams: int, warmup: int, result) -> None:
    context = zmq.Context()
    push = context.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 5000)
    push.connect(endpoint)
    payload = memoryview(np.zeros((2, SAMPLES), np.float32)).cast("B")
    period = SAMPLES / RATE
    started = time.monotonic()
    for block in range(blocks):
        delay = started + block * period - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        for stream in range(streams):
            header = msgpack.packb({"v": 1, "k": "pcm", "s": f"s{stream}", "q": block,
                                    "src": "src:0", "pts": block * SAMPLES, "tb": [1, RATE],
                                    "sr": RATE, "ch": 2, "fmt": "f32", "planar": True,
                                    "n": SAMPLES})
            push.send_multipart([header, payload])
        if block == warmup:
            start = (time.monotonic(), time.process_time())
    end = (time.monotonic(), time.process_time())
    result.put(("send", end[0] - start[0], end[1] - start[1]))
    push.close()
    context.term()


def raw_loop(streams: int, seconds: float) -> dict[str, float]:
    """% of a core of the paced sender and the receiver, raw pyzmq."""
    blocks = int(seconds * RATE / SAMPLES) + WARMUP
    mp = multiprocessing.get_context("fork")
    with tempfile.TemporaryDirectory(prefix="bench-rt-") as tmp:
        endpoint = f"ipc://{tmp}/raw"
        result = mp.Queue()
        receiver = mp.Process(target=_raw_receiver,
                              args=(endpoint, blocks * streams, WARMUP * streams, result))
        receiver.start()
        assert result.get(timeout=10) == "ready"
        sender = mp.Process(target=_raw_sender, args=(endpoint, blocks, streams, WARMUP, result))
        sender.start()
        sides = {}
        for _ in range(2):
            side, wall, cpu = result.get(timeout=seconds + 60)
            sides[side] = 100.0 * cpu / wall
        sender.join(10)
        receiver.join(10)
    return {"send_pct": sides["send"], "recv_pct": sides["recv"],
            "total_pct": sides["send"] + sides["recv"]}


def engine_hop(streams: int, seconds: float) -> dict[str, float]:
    """% of a core of the engine's paced source worker and its sink worker."""
    blocks = int(seconds * RATE / SAMPLES) + WARMUP
    with tempfile.TemporaryDirectory(prefix="bench-rt-") as out_dir:
        run_engine({"name": f"realtime-{streams}", "stages": [
            {"name": "source", "op": op("ProbeSource"),
             "params": {"out_dir": out_dir, "messages": blocks, "samples": SAMPLES,
                        "streams": streams, "realtime": True, "warmup": WARMUP}},
            {"name": "sink", "op": op("ProbeSink"),
             "params": {"out_dir": out_dir, "warmup": WARMUP, "arrivals": True}}]})
        probes = collect(out_dir)
        latency = np.array(latencies_ms(out_dir, RATE))
    send = 100.0 * probes["source"]["cpu_s"] / probes["source"]["wall_s"]
    recv = 100.0 * probes["sink"]["cpu_s"] / probes["sink"]["wall_s"]
    return {"send_pct": send, "recv_pct": recv, "total_pct": send + recv,
            "latency_p50_ms": float(np.percentile(latency, 50)),
            "latency_p99_ms": float(np.percentile(latency, 99)),
            "latency_max_ms": float(latency.max())}


def main(argv: list[str] | None = None) -> dict:
    parser = size_parser(__doc__, "3 s per run, 2 repetitions")
    args = parser.parse_args(argv)
    seconds = 3.0 if args.quick else 10.0
    repeat = repetitions(args, quick=2, full=3)
    rows, results = [], []
    for streams in STREAMS:
        raws, engines = [raw_loop(streams, seconds)], []
        for _ in range(repeat):  # interleaved: machine load hits both alike
            engines.append(engine_hop(streams, seconds))
            raws.append(raw_loop(streams, seconds))     # each engine run between two raw ones
        entry = {"streams": streams, "seconds": seconds, "block_samples": SAMPLES}
        for name, runs in (("raw", raws), ("engine", engines)):
            entry[name] = {key: spread([r[key] for r in runs], 3)
                           for key in runs[0]}
        pairs = paired((e["total_pct"] for e in engines),
                       (r["total_pct"] for r in bracketed(raws, ["total_pct"])))
        ratio = pairs["median"]
        entry["engine_over_raw"] = round(ratio, 3)
        entry["engine_over_raw_pairs"] = pairs
        results.append(entry)
        for name in ("raw", "engine"):
            side = entry[name]
            latency = (f"{side['latency_p50_ms']['median']:.1f} / "
                       f"{side['latency_p99_ms']['median']:.1f} / "
                       f"{side['latency_max_ms']['max']:.1f}") if name == "engine" else "-"
            rows.append([streams, name, side["send_pct"]["median"], side["recv_pct"]["median"],
                         side["total_pct"]["median"], side["total_pct"]["median"] / streams,
                         ratio if name == "engine" else 1.0,
                         pairs["min"] if name == "engine" else "", latency])
    print_table(["streams", "path", "send %core", "recv %core", "total %core",
                 "per stream %", "vs raw", "(min)", "latency p50/p99/max ms"], rows)
    print(f"vs raw: median (and min) over {repeat} repetitions, each engine run over the "
          f"mean of the raw runs before and after it")
    met = all(r["engine_over_raw"] <= 1.5 for r in results)
    report = {"target": "engine CPU <= 1.5x raw pyzmq at the same pace", "met": met,
              "quick": args.quick, "repeat": repeat, "results": results}
    path = write_results("realtime", report)
    print(f"target (<= 1.5x raw): {'met' if met else 'NOT met'}; wrote {path}")
    return report


if __name__ == "__main__":
    main()
