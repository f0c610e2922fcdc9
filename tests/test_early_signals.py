"""Ctrl-C at any moment of a run's start: counted for the run, never lost, never a traceback.

Found by interrupting `flowengine run` at random moments of its start (5-10 runs in 60 went
on for their whole length, a few printed a KeyboardInterrupt traceback): a signal the command
counted while it validated and planned was not the run's, a worker just forked raised
KeyboardInterrupt inside the forkserver's after-fork hook, the command had no handler
between its imports and its commands', and a KeyboardInterrupt raised where it cannot
propagate (a finaliser) was lost: the command now counts Ctrl-C from the end of its imports
and starts no run once one was counted."""

from __future__ import annotations

import io
import signal
import subprocess
import sys

import pytest

from flowengine.cli.runs import execute_run
from flowengine.config.model import RunConfig
from flowengine.config.resolve import resolve_run
from flowengine.core.signals import SignalCount
from flowengine.engine import Engine, build_plan


def test_a_count_installed_over_another_takes_the_signals_that_one_counted():
    before = signal.getsignal(signal.SIGINT)
    outer = SignalCount()
    with outer:
        signal.raise_signal(signal.SIGINT)
        assert outer.count == 1
        with SignalCount() as inner:
            assert inner.count == 1
            signal.raise_signal(signal.SIGINT)
            assert (inner.count, outer.count) == (2, 1)
        assert signal.getsignal(signal.SIGINT) == outer._on_signal
    assert signal.getsignal(signal.SIGINT) is before


def test_a_ctrl_c_while_the_command_planned_drains_the_run_it_then_starts(tmp_path):
    """As `flowengine run` does (cli/runs.py): the command counts signals around the run; one
    that came before the engine installed its own drains the run from its start, which
    otherwise would last its 30 s of paced audio."""
    config = RunConfig.model_validate({"name": "early", "stages": [
        {"name": "tone", "op": "tone", "params": {"seconds": 30, "realtime": True}},
        {"name": "sink", "op": "null_sink"}]})
    with SignalCount() as command:
        plan = build_plan(config, run_dir=str(tmp_path / "run"))
        signal.raise_signal(signal.SIGINT)
        report = Engine(plan).run()
    assert command.count == 1 and report.interrupted
    assert report.audio_seconds < 10.0, report.audio_seconds


CHILD_HOOK = """
import multiprocessing, signal, sys
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})   # as the forkserver forks it
signal.raise_signal(signal.SIGINT)      # a Ctrl-C to the group before its hook ran: pending
from flowengine.engine.control import forkserver_signals
multiprocessing.current_process().name = sys.argv[1]
forkserver_signals._child_signals(None)
sigint = signal.getsignal(signal.SIGINT)
print(sigint == signal.SIG_IGN, signal.getsignal(signal.SIGTERM) == signal.SIG_IGN,
      signal.SIGINT in signal.sigpending(), signal.SIGINT in signal.pthread_sigmask(
          signal.SIG_BLOCK, set()))
"""


def run_hook(name: str) -> list[str]:
    done = subprocess.run([sys.executable, "-c", CHILD_HOOK, name], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0 and not done.stderr, done.stderr
    return done.stdout.split()


def test_a_worker_forked_as_ctrl_c_came_ignores_it_from_its_first_instant():
    # SIGINT ignored, SIGTERM still ignored, nothing pending, SIGINT no longer blocked
    assert run_hook("flowengine tone:0") == ["True", "True", "False", "False"]


def test_another_forkserver_child_drops_a_ctrl_c_from_before_it_ran_and_takes_later_ones():
    # SIGINT left to Python's handler, SIGTERM back to its default, nothing pending, unblocked
    assert run_hook("ForkServerProcess-1") == ["False", "False", "False", "False"]


def test_a_ctrl_c_counted_before_the_run_starts_starts_nothing(tmp_path):
    """The command counts Ctrl-C from the end of its imports (cli/entry.py): one that came
    while it validated ends it before any worker or output exists."""
    config = tmp_path / "run.yaml"
    config.write_text(f"name: early\nstages:\n  - {{name: tone, op: tone}}\n"
                      f"  - {{name: sink, op: file_sink, params: {{path: {tmp_path}/out.wav}}}}\n")
    with SignalCount():
        signal.raise_signal(signal.SIGINT)
        with pytest.raises(KeyboardInterrupt):
            execute_run(resolve_run(config), io.StringIO(), quiet=True)
    assert list(tmp_path.iterdir()) == [config]
