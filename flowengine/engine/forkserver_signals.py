"""Imported by the forkserver only (a preload module, `coordinator.PRELOAD_MODULES`), for its
side effect: the forkserver ignores SIGTERM, and so do the workers it forks (a child keeps
ignored signals; the forkserver resets only SIGCHLD and SIGINT in them).

SIGTERM to the process group (``timeout``, systemd, ``kill -TERM -PGID``) must reach only the
coordinator, which drains the run like a first Ctrl-C. A forkserver that died of it made every
worker look as if it had exited with code 255 (multiprocessing's code for a lost forkserver),
and the run failed with its outputs left as .part. Never import this module anywhere else.
"""

import signal

signal.signal(signal.SIGTERM, signal.SIG_IGN)
