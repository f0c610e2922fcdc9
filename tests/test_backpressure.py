"""Backpressure: a fast source into a deliberately slow sink stays bounded in memory
(every process's RSS flat after warm-up) and loses nothing."""

from __future__ import annotations

import json

from engine_ops import op
from flowengine.config.model import RunConfig
from flowengine.engine import Engine, build_plan

BLOCK = 4096            # 2 ch f32: 32 KiB per message
MESSAGES = 2000         # at 5 ms per message in the sink: about 10 s
HWM = 16
MB = 1 << 20


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def test_slow_sink_blocks_the_source_and_memory_stays_flat(tmp_path):
    config = RunConfig.model_validate({"stages": [
        {"name": "src", "op": op("RampSource"),
         "params": {"streams": 1, "samples": BLOCK * MESSAGES, "block": BLOCK, "channels": 2}},
        {"name": "mid", "op": op("PassThrough"), "hwm": HWM},
        {"name": "sink", "op": op("CheckingSink"), "hwm": HWM,
         "params": {"out_dir": str(tmp_path), "delay": 0.005}},
    ]})
    warm: dict[int, int] = {}
    peak: dict[int, int] = {}

    def sample(report) -> None:
        pids = [w.pid for stage in report.stages for w in stage.workers]
        if report.wall_seconds < 2.0 or any(w.done for s in report.stages for w in s.workers):
            return  # warm-up, or a worker may already be exiting
        for pid in pids:
            rss = rss_bytes(pid)
            warm.setdefault(pid, rss)
            peak[pid] = max(peak.get(pid, 0), rss)

    report = Engine(build_plan(config), progress=sample).run()

    assert json.loads((tmp_path / "s0.json").read_text())["samples"] == BLOCK * MESSAGES
    assert report.stage("sink").workers[0].samples_in == BLOCK * MESSAGES
    assert len(warm) == 3 and len(peak) == 3
    growth = {pid: peak[pid] - warm[pid] for pid in warm}
    print("RSS growth after warm-up (MB):", {p: round(g / MB, 2) for p, g in growth.items()},
          "max queue:", {s.name: s.max_queue for s in report.stages})
    assert all(g <= 20 * MB for g in growth.values()), growth
    # The queues filled up but never beyond the marks (send + receive side, plus what the
    # ipc socket buffers hold): sends blocked all the way back to the source.
    assert report.stage("sink").max_queue >= HWM
    for name in ("mid", "sink"):
        assert report.stage(name).max_queue <= 2 * HWM + 16
