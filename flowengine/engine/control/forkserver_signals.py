"""Imported by the forkserver only (a preload module, `forkserver.PRELOAD_MODULES`), for its
side effect: the forkserver ignores SIGTERM, and the processes it forks get their signals
set at their start (below): flowengine's workers keep ignoring SIGTERM and ignore SIGINT from
their first instant, any other process gets SIGTERM's default back.

SIGTERM to the process group (``timeout``, systemd, ``kill -TERM -PGID``) must reach only the
coordinator, which drains the run like a first Ctrl-C. A forkserver that died of it made every
worker look as if it had exited with code 255 (multiprocessing's code for a lost forkserver),
and the run failed with its outputs left as .part. The forkserver is the program's, shared
with any forkserver process the application starts itself: those must still die of SIGTERM
(`Process.terminate()`), hence the reset in each child. Never import this module anywhere else.

The forkserver runs with SIGINT blocked (forkserver.ensure_forkserver), and so does each
child until this hook unblocks it. A Ctrl-C to the group in between was pending in the child
and raised KeyboardInterrupt inside the hook (a traceback under the command's line, found
interrupting `flowengine run` at random moments of its start): a worker now ignores it before
it unblocks, as `start.py` would a moment later; another process drops that one signal, which
came while it was not running yet.
"""

import multiprocessing
import signal
import sys
from multiprocessing import util

from flowengine.engine.worker.start import WORKER_NAME_PREFIX


def _child_signals(_module: object) -> None:
    if multiprocessing.current_process().name.startswith(WORKER_NAME_PREFIX):
        signal.signal(signal.SIGINT, signal.SIG_IGN)    # the coordinator's to handle
    else:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.sigtimedwait({signal.SIGINT}, 0)         # drop one pending since the fork
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


signal.signal(signal.SIGTERM, signal.SIG_IGN)
# Run in every child of this forkserver as it starts (multiprocessing's after-fork hooks).
util.register_after_fork(sys.modules[__name__], _child_signals)
