"""Imported by a host agent's forkserver only (a preload module, ``agent.AGENT_PRELOAD``), for
its side effect: every worker it forks is killed by the kernel when the forkserver ends.

The forkserver ends when its agent does (multiprocessing's "alive" pipe reaches EOF), and an
agent ends when Ray kills it, when its host's raylet goes, or when the coordinator's job
ends. A worker then notices its orphaning at its next stats (its parent is gone), but a
stopped (SIGSTOP) or hung worker never would: ``PR_SET_PDEATHSIG`` makes the kernel send
SIGKILL instead, so nothing is left running on the host. Linux only; elsewhere a no-op.
"""

import ctypes
import ctypes.util
import os
import sys
from multiprocessing import util

_PR_SET_PDEATHSIG = 1
_SIGKILL = 9
_FORKSERVER_PID = os.getpid()     # imported in the forkserver: its children's parent


def _die_with_the_forkserver(_module: object) -> None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, _SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != _FORKSERVER_PID:    # it ended before the prctl: no signal would come
        os._exit(1)


if sys.platform.startswith("linux"):
    # Run in every child of this forkserver as it starts (multiprocessing's after-fork hooks).
    util.register_after_fork(sys.modules[__name__], _die_with_the_forkserver)
