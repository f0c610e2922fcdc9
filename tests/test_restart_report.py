"""Restarts tell the whole truth: after `restart: on-failure` on a stateful stage the CLI's
audit line and its JSON report give the samples lost per stream (the same as the sink
missed), the final table counts the stage's whole run and no queue above its HWM, and a
restarted FLAC encoder's frames keep counting on in the same file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import av

from flowengine.config import resolve_run
from flowengine.engine import Engine, build_plan
from restart_ops import op

TESTS = Path(__file__).resolve().parent
SAMPLES = 60000


def test_the_cli_audit_line_and_json_report_give_the_samples_lost_per_stream(tmp_path):
    # Today `flowengine run` printed only "audit: 3 stream(s), all balanced".
    (tmp_path / "out").mkdir()
    config = tmp_path / "restart.yaml"
    config.write_text(json.dumps({"name": "restart", "stages": [
        {"name": "src", "op": "engine_ops:RampSource",
         "params": {"streams": 3, "samples": SAMPLES, "block": 256}},
        {"name": "mid", "op": op("KillOnceHolding"), "replicas": 2, "restart": "on-failure",
         "hwm": 8, "params": {"marker": str(tmp_path / "killed"), "replica": 0, "after": 20}},
        {"name": "sink", "op": op("RampRecorder"), "hwm": 8,
         "params": {"out_dir": str(tmp_path / "out"), "expected": SAMPLES}}]}))
    run = subprocess.run(
        [sys.executable, "-m", "flowengine", "run", str(config), "--quiet", "--report",
         str(tmp_path / "report.json")], cwd=tmp_path, capture_output=True, text=True,
        timeout=120, env={**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), *sys.path])})
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "killed").exists()
    missed = {}
    for result in (tmp_path / "out").glob("*.json"):
        lost = sum(end - start for start, end in json.loads(result.read_text())["missing"])
        if lost:
            missed[result.stem] = lost
    assert missed       # the dead replica held samples of its streams
    audit = run.stdout[run.stdout.index("audit:"):].splitlines()
    assert audit[0] == (f"audit: 3 stream(s), balanced except: {len(missed)} stream(s) lost "
                        f"{sum(missed.values())} sample(s) to 1 restart(s), counted exactly:")
    assert audit[1:1 + len(missed)] == [
        f"  stage 'mid' stream '{stream}' (to sink): {lost} samples lost (expected {SAMPLES}, "
        f"got {SAMPLES - lost})" for stream, lost in sorted(missed.items())]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["lost_samples"] == missed
    assert [(g["stage"], g["stream"], g["samples"]) for g in report["gaps"]] == \
        [("mid", stream, lost) for stream, lost in sorted(missed.items())]
    assert [(r["stage"], r["replica"], r["generation"]) for r in report["restarts"]] == \
        [("mid", 0, 1)]
    assert report["audit"]["ok"] is True and report["complete"] is True
