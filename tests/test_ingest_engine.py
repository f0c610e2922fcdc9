"""tcp_ingest in a worker process: every frame arrives, in order, and none waits in the
worker for the frames after it (pacing.wait_readable sends what the ingest gave before it
waits for more)."""

from __future__ import annotations

import json
import socket
import threading
import time

from audio_checks import encoded_chirp_frames
from engine_ops import op
from flowengine.config.model import RunConfig
from flowengine.engine import build_plan, run_plan
from flowengine.live.messages import hello_message
from flowengine.live.push import PushClient

FRAMES = 40
GAP_S = 0.02          # the sender's pace: one frame every 20 ms
AHEAD = 16            # a frame must be in the sink before the sender is this many frames on


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _send(port: int, frames: list[bytes], sent_at: list[float]) -> None:
    client = PushClient("127.0.0.1", port, None, hello_message("live"), retry_seconds=20.0)
    for frame in frames:
        client.send_frame(frame)
        sent_at.append(time.monotonic())
        time.sleep(GAP_S)
    client.end()


def test_ingested_frames_leave_the_worker_as_they_come_not_in_batches(tmp_path):
    frames = encoded_chirp_frames("mp3", 1.5)[:FRAMES]
    port = _free_port()
    plan = build_plan(RunConfig.model_validate({"name": "ingest", "stages": [
        {"name": "ingest", "op": "tcp_ingest", "params": {"port": port, "streams": 1}},
        {"name": "sink", "op": op("PacketFileSink"),
         "params": {"out_dir": str(tmp_path), "arrivals": True}}]}))
    sent_at: list[float] = []
    sender = threading.Thread(target=_send, args=(port, frames, sent_at), daemon=True)
    sender.start()
    report = run_plan(plan)
    sender.join(timeout=10)

    packets = json.loads((tmp_path / "live.json").read_text())
    arrivals = json.loads((tmp_path / "live.arrivals.json").read_text())
    assert [bytes.fromhex(data) for _, _, data in packets] == frames
    assert [pts for pts, _, _ in packets] == [1152 * i for i in range(FRAMES)]
    assert report.audit_ok
    # Before the fix a frame waited in the worker's outbox until a batch of 32 was full.
    late = [k for k in range(FRAMES - AHEAD) if arrivals[k] >= sent_at[k + AHEAD]]
    assert not late, f"frames {late} reached the sink only after {AHEAD} more were sent"
