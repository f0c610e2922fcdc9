"""CPU cost of moving live 48 kHz stereo streams through one hop, next to a raw pyzmq loop.

1 and 8 streams, each paced at real time in 1152-sample blocks (one block per
stream every 24 ms), go source -> sink through the engine (two worker
processes, one hop), and through a raw pyzmq PUSH/PULL pair at the same pace
with the same payload (a msgpack header + the samples; the sender sleeps to
the next block, the receiver blocks in recv). Measured: the CPU time of the
sending and the receiving process over ~10 s of steady state
(``time.process_time`` sampled in each process), as % of one core. Target:
the engine's cost <= 1.5x the raw loop's.

    python benchmarks/bench_realtime.py [--quick]
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path

import msgpack
import numpy as np
import zmq

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _bench_common import print_table, run_engine, spread, write_results  # noqa: E402
from _bench_ops import collect, op  # noqa: E402

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
             "params": {"out_dir": out_dir, "warmup": WARMUP}}]})
        probes = collect(out_dir)
    send = 100.0 * probes["source"]["cpu_s"] / probes["source"]["wall_s"]
    recv = 100.0 * probes["sink"]["cpu_s"] / probes["sink"]["wall_s"]
    return {"send_pct": send, "recv_pct": recv, "total_pct": send + recv}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 s per run, 2 repetitions")
    parser.add_argument("--repeat", type=int, default=None)
    args = parser.parse_args(argv)
    seconds = 3.0 if args.quick else 10.0
    repeat = args.repeat or (2 if args.quick else 3)
    rows, results = [], []
    for streams in STREAMS:
        raws, engines = [], []
        for _ in range(repeat):  # interleaved: machine load hits both alike
            raws.append(raw_loop(streams, seconds))
            engines.append(engine_hop(streams, seconds))
        entry = {"streams": streams, "seconds": seconds, "block_samples": SAMPLES}
        for name, runs in (("raw", raws), ("engine", engines)):
            entry[name] = {key: spread([r[key] for r in runs], 3)
                           for key in ("send_pct", "recv_pct", "total_pct")}
        ratio = entry["engine"]["total_pct"]["median"] / entry["raw"]["total_pct"]["median"]
        entry["engine_over_raw"] = round(ratio, 3)
        results.append(entry)
        for name in ("raw", "engine"):
            side = entry[name]
            rows.append([streams, name, side["send_pct"]["median"], side["recv_pct"]["median"],
                         side["total_pct"]["median"], side["total_pct"]["median"] / streams,
                         ratio if name == "engine" else 1.0])
    print_table(["streams", "path", "send %core", "recv %core", "total %core",
                 "per stream %", "vs raw"], rows)
    met = all(r["engine_over_raw"] <= 1.5 for r in results)
    report = {"target": "engine CPU <= 1.5x raw pyzmq at the same pace", "met": met,
              "quick": args.quick, "repeat": repeat, "results": results}
    path = write_results("realtime", report)
    print(f"target (<= 1.5x raw): {'met' if met else 'NOT met'}; wrote {path}")
    return report


if __name__ == "__main__":
    main()
