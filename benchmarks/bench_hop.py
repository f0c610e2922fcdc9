"""Per-hop cost of the engine: a chain of K identity stages, next to a raw pyzmq PUSH/PULL loop.

48 kHz stereo f32 blocks of 1152 and 4096 samples go source -> K identity
stages -> sink (K = 0, 1, 2, 4; K = 0 is one hop, the same shape as the raw
loop), every stage its own worker process. Measured in steady state by probe
operators (``_bench_ops``): end-to-end messages/s at the sink, and the CPU
time each worker spends per message (its whole process: sockets, wire,
protocol, node). ``µs/hop`` is the CPU of all processes per message divided
by the hops (K + 1). The baseline, in the same run: two processes moving the
same payload (a msgpack header + the samples) over ``ipc://`` PUSH/PULL with
the same HWM, as fast as they can. Target: the engine's one-hop rate
>= 0.5x the raw loop's.

    python benchmarks/bench_hop.py [--quick]
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

from _bench_common import print_table, repetitions, run_engine, size_parser, spread, \
    write_results  # noqa: E402
from _bench_ops import collect, op  # noqa: E402

CHAINS = (0, 1, 2, 4)
SIZES = (1152, 4096)
HWM = 64
WARMUP = 200


# -------------------------------------------------------------------- raw loop

def _raw_receiver(endpoint: str, messages: int, result: "multiprocessing.Queue") -> None:
    context = zmq.Context()
    pull = context.socket(zmq.PULL)
    pull.setsockopt(zmq.RCVHWM, HWM)
    pull.bind(endpoint)
    result.put("ready")
    start = None
    for i in range(messages):
        pull.recv_multipart(copy=False)
        if i == WARMUP:
            start = (time.monotonic(), time.process_time())
    end = (time.monotonic(), time.process_time())
    result.put(("recv", messages - 1 - WARMUP, end[0] - start[0], end[1] - start[1]))
    pull.close(linger=0)
    context.term()


def _raw_sender(endpoint: str, messages: int, samples: int, result: "multiprocessing.Queue"
                ) -> None:
    context = zmq.Context()
    push = context.socket(zmq.PUSH)
    push.setsockopt(zmq.SNDHWM, HWM)
    push.setsockopt(zmq.LINGER, 5000)
    push.connect(endpoint)
    payload = np.zeros((2, samples), np.float32)
    start = None
    for i in range(messages):
        header = msgpack.packb({"v": 1, "k": "pcm", "s": "s0", "q": i, "src": "src:0",
                                "pts": i * samples, "tb": [1, 48000], "sr": 48000, "ch": 2,
                                "fmt": "f32", "planar": True, "n": samples})
        push.send_multipart([header, memoryview(payload).cast("B")])
        if i == WARMUP:
            start = (time.monotonic(), time.process_time())
    end = (time.monotonic(), time.process_time())
    result.put(("send", messages - 1 - WARMUP, end[0] - start[0], end[1] - start[1]))
    push.close()
    context.term()


def raw_loop(messages: int, samples: int) -> dict[str, float]:
    """Two processes, PUSH -> PULL over ipc://, `messages` messages as fast as they go."""
    mp = multiprocessing.get_context("fork")
    with tempfile.TemporaryDirectory(prefix="bench-hop-") as tmp:
        endpoint = f"ipc://{tmp}/raw"
        result = mp.Queue()
        receiver = mp.Process(target=_raw_receiver, args=(endpoint, messages, result))
        receiver.start()
        assert result.get(timeout=10) == "ready"
        sender = mp.Process(target=_raw_sender, args=(endpoint, messages, samples, result))
        sender.start()
        sides = {}
        for _ in range(2):
            side, count, wall, cpu = result.get(timeout=120)
            sides[side] = (count, wall, cpu)
        sender.join(10)
        receiver.join(10)
    count, wall, recv_cpu = sides["recv"]
    send_cpu = sides["send"][2] * count / sides["send"][0]
    return {"messages_per_s": count / wall,
            "cpu_us_per_message": {"send": 1e6 * send_cpu / count, "recv": 1e6 * recv_cpu / count},
            "us_per_hop": 1e6 * (send_cpu + recv_cpu) / count}


# ------------------------------------------------------------------ engine chain

def engine_chain(stages: int, messages: int, samples: int) -> dict[str, float]:
    """source -> `stages` identity stages -> sink, in worker processes, probed."""
    with tempfile.TemporaryDirectory(prefix="bench-hop-") as out_dir:
        config = {"name": f"hop-{stages}", "stages": [
            {"name": "source", "op": op("ProbeSource"),
             "params": {"out_dir": out_dir, "messages": messages, "samples": samples,
                        "warmup": WARMUP}},
            *[{"name": f"id{i}", "op": op("ProbeIdentity"), "hwm": HWM,
               "params": {"out_dir": out_dir, "warmup": WARMUP, "tag": f"id{i}"}}
              for i in range(stages)],
            {"name": "sink", "op": op("ProbeSink"), "hwm": HWM,
             "params": {"out_dir": out_dir, "warmup": WARMUP}}]}
        run_engine(config)
        probes = collect(out_dir)
    sink = probes["sink"]
    count = sink["messages"]
    per_stage = {tag: 1e6 * p["cpu_s"] / p["messages"] for tag, p in probes.items()}
    return {"messages_per_s": count / sink["wall_s"], "cpu_us_per_message": per_stage,
            "us_per_hop": sum(per_stage.values()) / (stages + 1)}


# ------------------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> dict:
    parser = size_parser(__doc__, "fewer messages and repetitions")
    parser.add_argument("--chains", type=int, nargs="+", default=list(CHAINS),
                        help=f"identity stages per chain (default {' '.join(map(str, CHAINS))})")
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES),
                        help="samples per message (default 1152 4096)")
    args = parser.parse_args(argv)
    repeat = repetitions(args, quick=2, full=3)
    rows, results = [], []
    for samples in args.sizes:
        messages = (4000 if args.quick else 20000) * 1152 // samples
        raws = [raw_loop(messages, samples) for _ in range(repeat)]
        raw_rate = spread(r["messages_per_s"] for r in raws)
        raw_hop = spread(r["us_per_hop"] for r in raws)
        results.append({"samples": samples, "chain": "raw pyzmq", "messages": messages,
                        "messages_per_s": raw_rate, "us_per_hop": raw_hop,
                        "cpu_us_per_message": raws[0]["cpu_us_per_message"]})
        rows.append([samples, "raw pyzmq", raw_rate["median"], raw_hop["median"], 1.0, ""])
        for stages in args.chains:
            runs = [engine_chain(stages, messages, samples) for _ in range(repeat)]
            rate = spread(r["messages_per_s"] for r in runs)
            hop = spread(r["us_per_hop"] for r in runs)
            ratio = rate["median"] / raw_rate["median"]
            per_stage = {tag: round(float(np.median([r["cpu_us_per_message"][tag] for r in runs])), 2)
                         for tag in runs[0]["cpu_us_per_message"]}
            results.append({"samples": samples, "chain": f"engine K={stages}",
                            "identity_stages": stages, "hops": stages + 1,
                            "messages": messages, "messages_per_s": rate, "us_per_hop": hop,
                            "cpu_us_per_message": per_stage, "rate_vs_raw": round(ratio, 3)})
            detail = " ".join(f"{k}={v:.0f}" for k, v in per_stage.items())
            rows.append([samples, f"engine K={stages}", rate["median"], hop["median"],
                         ratio, detail])
    print_table(["samples", "chain", "msg/s", "µs/hop (cpu)", "rate/raw", "cpu µs/msg per stage"],
                rows)
    one_hop = [r for r in results if r.get("identity_stages") == 0]
    met = all(r["rate_vs_raw"] >= 0.5 for r in one_hop)
    report = {
        "target": "engine one-hop (K=0) messages/s >= 0.5x raw pyzmq PUSH/PULL", "met": met,
        "cores_note": "K+2 worker processes share the machine's cores; rates for K>=1 are "
                      "bounded by total CPU per message / cores",
        "repeat": repeat, "quick": args.quick, "results": results}
    path = write_results("hop", report)
    print(f"target (one hop >= 0.5x raw): {'met' if met else 'NOT met'}; wrote {path}")
    return report


if __name__ == "__main__":
    main()
