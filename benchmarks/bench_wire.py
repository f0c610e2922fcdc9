"""Cost of the wire format per message: encode + validated decode, next to plain msgpack.

For stereo f32 frames of 1152, 4096 and 16384 samples, measures µs per message of
- flowengine: ``encode_frame`` + ``decode`` with the stream's caps (full validation,
  the frame built over the payload, not copied);
- raw: ``msgpack.packb`` of the same header (a fixed-shape array) + the payload as a
  memoryview, then ``msgpack.unpackb`` + ``np.frombuffer`` with no validation (the floor);
- blob: one ``msgpack.packb`` of the header with the samples inside as bin, then
  ``unpackb`` + ``np.frombuffer`` (what a naive single-frame format would cost).
All in the same run, so the ratios are comparable. And what one edge costs per block as a
worker runs it (CPU µs): ``StreamSender.data`` on the sending side, ``decode_batch`` +
``InboxState.receive`` of batches of 28 on the receiving side (2000 stereo blocks of
1024 samples, best of 5). Writes benchmarks/results/wire.json.

    python benchmarks/bench_wire.py [--seconds 0.5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import msgpack
import numpy as np

from flowengine.audio.buffers import AudioFrame
from flowengine.engine.wire.codec import WIRE_VERSION, Caps, buffer_from, decode, decode_batch, \
    encode_batch, encode_frame
from flowengine.engine.wire.protocol import InboxState, StreamSender
from flowengine.audio.format import AudioFormat

SIZES = (1152, 4096, 16384)
RESULTS = Path(__file__).resolve().parent / "results" / "wire.json"


def _per_message_us(round_trip: Callable[[], object], seconds: float) -> float:
    """Best of 5 batches, each about seconds/5 long: µs per call."""
    calls = 1
    while True:  # size a batch so it lasts about seconds/5
        start = time.perf_counter()
        for _ in range(calls):
            round_trip()
        elapsed = time.perf_counter() - start
        if elapsed >= seconds / 5 or calls >= 1 << 22:
            break
        calls *= 2
    best = elapsed
    for _ in range(4):
        start = time.perf_counter()
        for _ in range(calls):
            round_trip()
        best = min(best, time.perf_counter() - start)
    return best / calls * 1e6


def _frame(samples: int) -> AudioFrame:
    rng = np.random.default_rng(samples)
    data = rng.uniform(-1, 1, (2, samples)).astype(np.float32)
    return AudioFrame(data, AudioFormat(48000, 2), pts=0, stream="0")


def measure(samples: int, seconds: float) -> dict:
    frame = _frame(samples)
    data = frame.data
    header = [WIRE_VERSION, "pcm", "0", 0, "stage:0", None, 0, samples]
    caps = Caps.for_frame(frame)

    def flowengine() -> object:
        return decode(encode_frame(frame, 0, sender="stage:0"), caps=caps).buffer

    def raw() -> object:
        head, payload = msgpack.packb(header), memoryview(data).cast("B")
        msgpack.unpackb(head)
        return np.frombuffer(payload, np.float32).reshape(2, samples)

    def blob() -> object:
        packed = msgpack.packb([*header, data.tobytes()])
        return np.frombuffer(msgpack.unpackb(packed)[-1], np.float32).reshape(2, samples)

    assert np.array_equal(flowengine().data, data)
    assert np.array_equal(raw(), data) and np.array_equal(blob(), data)
    encode_us = _per_message_us(lambda: encode_frame(frame, 0, sender="stage:0"), seconds)
    parts = encode_frame(frame, 0, sender="stage:0")
    decode_us = _per_message_us(lambda: buffer_from(decode(parts), caps), seconds)
    result = {"samples": samples, "payload_bytes": data.nbytes,
              "flowengine_encode_us": encode_us, "flowengine_decode_us": decode_us,
              "flowengine_us": _per_message_us(flowengine, seconds),
              "raw_msgpack_us": _per_message_us(raw, seconds),
              "blob_msgpack_us": _per_message_us(blob, seconds)}
    result["flowengine_over_raw"] = result["flowengine_us"] / result["raw_msgpack_us"]
    result["flowengine_over_blob"] = result["flowengine_us"] / result["blob_msgpack_us"]
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in result.items()}


def measure_edge(blocks: int = 2000, batch: int = 28, repeat: int = 5) -> dict:
    """CPU µs per block of one edge's two halves, as a worker runs them."""
    frames = [AudioFrame(np.zeros((2, 1024), np.float32), AudioFormat(48000, 2), i * 1024,
                         stream="x") for i in range(blocks)]
    send_us = receive_us = float("inf")
    for _ in range(repeat):
        sender = StreamSender("a:0")
        messages = [sender.caps("x", Caps.for_frame(frames[0]))]
        start = time.process_time()
        messages += [sender.data(frame) for frame in frames]
        send_us = min(send_us, (time.process_time() - start) / blocks * 1e6)
        batches = [[bytes(part) for part in encode_batch(messages[i:i + batch])]
                   for i in range(0, len(messages), batch)]
        inbox = InboxState({"a:0"})
        start = time.process_time()
        for parts in batches:
            for message in decode_batch(parts):
                inbox.receive(message)
        receive_us = min(receive_us, (time.process_time() - start) / blocks * 1e6)
    return {"edge_send_us_per_block": round(send_us, 3),
            "edge_receive_us_per_block": round(receive_us, 3)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0.5,
                        help="measuring time per variant and size (default 0.5)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    rows = [measure(samples, args.seconds) for samples in SIZES]
    report = {"benchmark": "wire encode+decode per message, stereo f32 planar",
              "load_average_1min": os.getloadavg()[0],  # other work on the box inflates µs
              "python": platform.python_version(), "numpy": np.__version__,
              "msgpack": ".".join(map(str, msgpack.version)), "results": rows,
              **measure_edge()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    for row in rows:
        print(f"{row['samples']:>6} samples: flowengine {row['flowengine_us']:7.2f} µs "
              f"(encode {row['flowengine_encode_us']:.2f} + decode "
              f"{row['flowengine_decode_us']:.2f}), raw msgpack {row['raw_msgpack_us']:7.2f} µs, "
              f"blob msgpack {row['blob_msgpack_us']:7.2f} µs")
    print(f"one edge per 1024-sample stereo block: send {report['edge_send_us_per_block']:.2f} µs, "
          f"receive {report['edge_receive_us_per_block']:.2f} µs (CPU)")
    print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
