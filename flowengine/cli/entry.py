"""The `flowengine` command's entry point.

`flowengine run` in worker processes spends most of its start in two places:
this process importing the command line, the config model and the operators
(then validating and planning), and the forkserver importing the worker code.
The entry point reads the command line first, with nothing heavy imported, and
for such a run (or a `convert` that will run workers) starts the forkserver
at once, so the two happen on two cores at the same time, and asks it for a
worker per stage (engine/control/prestart.py: they start while this process
validates, and the run hands each its spec); then it hands over
to cli/main.py, with the garbage collector off until the imports are done
(`_imports_done`). At the end it exits without tearing down every module it
imported (see `_exit`).
"""

from __future__ import annotations

import argparse
import atexit
import gc
import os
import re
import sys
import threading
from typing import NoReturn

import flowengine.blas  # noqa: F401  (first: one BLAS thread, set before numpy loads)
from flowengine.cli.parser import build_parser
from flowengine.core.signals import SignalCount

__all__ = ["main"]

# A stage's `op:` in block or flow style; only a hint for what the forkserver preloads
# (validation reads the file properly, and a worker imports what was not preloaded).
_OP = re.compile(r"\bop\s*:\s*[\"']?([\w.:-]+)")
_CLUSTER = re.compile(r"\bengine\s*:\s*[\"']?ray\b")
_INTERRUPTED = 130      # cli/runs.py's EXIT_INTERRUPTED, which comes with the heavy imports


def main() -> int:
    """The command line of this process; the exit code."""
    gc.disable()                    # while importing: see _imports_done
    args = build_parser().parse_args()
    ops = _worker_ops(args)
    try:
        if ops is not None:
            from flowengine.engine.worker.forkserver import start_forkserver
            start_forkserver(ops)
        from flowengine.cli.main import run_command
        _imports_done()
        if args.command in ("run", "convert"):
            # From here a Ctrl-C is counted, never raised: raised, it could land in code that
            # cannot pass it on (a finaliser) and be lost, and the run went on to its end.
            # The run's own counts take this one's (core/signals.py).
            SignalCount().install()
        if ops and args.command == "run":
            # Once imported: the forkserver has its preload by then, and forks them while
            # this process validates and plans.
            from flowengine.engine.control import prestart
            prestart.prestart(len(ops))     # a worker per stage, as a rule
        code = run_command(args, process_entry=True)
    except KeyboardInterrupt:
        # Ctrl-C while importing, or between here and where run_command catches it (a
        # traceback and death by SIGINT before): as run_command says it.
        print("\nflowengine: interrupted", file=sys.stderr)
        _exit(_INTERRUPTED)
    if threading.active_count() == 1:
        _exit(code)
    return code                     # a thread of ours still runs: the interpreter joins it


def _imports_done() -> None:
    """Turn the garbage collector back on, blind to what the imports left. The command's
    imports (numpy, PyAV, pydantic, pyzmq, the operators) leave ~300 000 objects that live
    as long as the process; with the collector on, it walked them again on each of its runs
    while they grew, ~25 ms of the command's start (the forkserver pauses its collector for
    the same reason, engine/worker/gc_pause.py)."""
    gc.freeze()
    gc.enable()


def _exit(code: int) -> NoReturn:
    """End the process as `sys.exit(code)` would, less the interpreter's teardown of every
    module and object (PyAV, numpy, pydantic, the operators: ~50 ms, a tenth of a short
    run's wall time, spent on memory the kernel frees anyway). What the program arranged
    for its exit still runs: the atexit functions (logging's last flush, multiprocessing's
    clean-up), then the standard streams are flushed."""
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):   # a closed pipe: the normal exit could not flush either
            code = code or 120          # what the interpreter exits with when it cannot flush
    os._exit(code)


def _worker_ops(args: argparse.Namespace) -> list[str] | None:
    """The operators this command line seems to run in worker processes; None: it runs none
    (it runs in this process, only prints, or runs on a cluster). A hint: a wrong guess
    costs only time (a forkserver started for nothing, or started later by the run)."""
    if args.command == "run":
        if args.in_process or _on_a_cluster(args.config):
            return None
        return _ops_named_in(args.config)
    if args.command != "convert" or args.in_process or args.print_config or args.plan:
        return None
    if args.in_process is None:     # convert's default: one file through one replica runs here
        inputs = args.paths if args.output else args.paths[:-1]
        if len(inputs) == 1 and os.path.isfile(inputs[0]) and args.replicas in (None, 1):
            return None
    return ["files", "file_sink"] + (["loudness"] if args.loudness is not None else [])


def _ops_named_in(path: str) -> list[str]:
    """The operators a config file seems to name (unreadable: none; validation says why)."""
    try:
        with open(path, encoding="utf-8") as file:
            return _OP.findall(file.read())
    except (OSError, UnicodeDecodeError):
        return []


def _on_a_cluster(path: str) -> bool:
    """Whether the config seems to run on a cluster (`engine: ray`): its hosts' agents fork
    its workers, not this process's forkserver. Only a hint, like the operators above."""
    try:
        with open(path, encoding="utf-8") as file:
            return _CLUSTER.search(file.read()) is not None
    except (OSError, UnicodeDecodeError):
        return False


if __name__ == "__main__":
    sys.exit(main())
