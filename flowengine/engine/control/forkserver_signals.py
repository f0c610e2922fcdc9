"""Imported by the forkserver only (a preload module, `forkserver.PRELOAD_MODULES`), for its
side effect: the forkserver ignores SIGTERM, while every process it forks gets the default
back at its start (below), so only flowengine's workers, which ignore SIGTERM themselves
(`worker.run_worker`), keep ignoring it.

SIGTERM to the process group (``timeout``, systemd, ``kill -TERM -PGID``) must reach only the
coordinator, which drains the run like a first Ctrl-C. A forkserver that died of it made every
worker look as if it had exited with code 255 (multiprocessing's code for a lost forkserver),
and the run failed with its outputs left as .part. The forkserver is the program's, shared
with any forkserver process the application starts itself: those must still die of SIGTERM
(`Process.terminate()`), hence the reset in each child. Never import this module anywhere else.
"""

import signal
import sys
from multiprocessing import util


def _child_signals(_module: object) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    # The forkserver started with SIGINT blocked (forkserver.ensure_forkserver): not its
    # children, which ignore it or handle it as they choose.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


signal.signal(signal.SIGTERM, signal.SIG_IGN)
# Run in every child of this forkserver as it starts (multiprocessing's after-fork hooks).
util.register_after_fork(sys.modules[__name__], _child_signals)
