"""A tee (one stage feeding several consumers) in real worker processes: a slow branch holds
the others back only once its own queues are full, and every branch gets every sample.

The source's messages go to both sinks. The slow sink takes 10 ms a message, the fast one
none, so the fast branch runs ahead; it may lead by what the slow branch's queues hold
(its ``hwm`` on the sending and on the receiving side, an outbox batch and the kernel's
socket buffers) and no further: the source cannot drop, so from then on both go at the
slow branch's pace. Both clocks are ``time.monotonic()``, one clock per machine.
"""

from __future__ import annotations

import bisect
import json
from pathlib import Path

from engine_ops import op
from flowengine.config.model import RunConfig
from flowengine.engine import build_plan, run_plan

MESSAGES, BLOCK, HWM = 240, 4096, 4       # 16 KB messages: the kernel holds only a few
SLOW_DELAY = 0.01


def lead_of_fast_over_slow(fast: list[float], slow: list[float]) -> list[int]:
    """For each message the fast sink got: how many more it had than the slow sink then."""
    return [k + 1 - bisect.bisect_right(slow, t) for k, t in enumerate(fast)]


def test_a_slow_branch_holds_back_a_fast_one_only_by_its_queues(tmp_path):
    fast_dir, slow_dir = tmp_path / "fast", tmp_path / "slow"
    fast_dir.mkdir()
    slow_dir.mkdir()
    report = run_plan(build_plan(RunConfig.model_validate({"stages": [
        {"name": "src", "op": op("RampSource"),
         "params": {"streams": 1, "samples": MESSAGES * BLOCK, "block": BLOCK}},
        {"name": "fast", "op": op("CheckingSink"), "inputs": ["src"],
         "params": {"out_dir": str(fast_dir), "arrivals": True}},
        {"name": "slow", "op": op("CheckingSink"), "inputs": ["src"], "hwm": HWM,
         "params": {"out_dir": str(slow_dir), "delay": SLOW_DELAY, "arrivals": True}},
    ]})))

    fast = json.loads((fast_dir / "s0.json").read_text())
    slow = json.loads((slow_dir / "s0.json").read_text())
    # Every sample in order on both branches (CheckingSink checked the values).
    assert (fast["samples"], fast["messages"]) == (MESSAGES * BLOCK, MESSAGES)
    assert (slow["samples"], slow["messages"]) == (MESSAGES * BLOCK, MESSAGES)
    assert report.stage("src").workers[0].messages_out == MESSAGES  # counted once, sent twice

    lead = lead_of_fast_over_slow(fast["arrivals"], slow["arrivals"])
    print(f"fast branch lead over the slow one: max {max(lead)} messages")
    # It does run ahead: at least the slow branch's receive queue ...
    assert max(lead) >= HWM, lead
    # ... but no further than the slow branch's queues: both HWMs, a batch (hwm // 2), the
    # message in the slow sink's hands, and a few 16 KB messages in the kernel's buffers.
    assert max(lead) <= 2 * HWM + HWM // 2 + 1 + 16, lead
    # So the fast sink finished about when the slow one did, not at its own pace.
    slow_time = slow["arrivals"][-1] - slow["arrivals"][0]
    assert fast["arrivals"][-1] - fast["arrivals"][0] > 0.8 * slow_time
