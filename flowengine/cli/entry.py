"""The `flowengine` command's entry point.

`flowengine run` in worker processes spends most of its start in two places:
this process importing the command line, the config model and the operators
(then validating and planning), and the forkserver importing the worker code.
The entry point reads the command line first, with nothing heavy imported, and
for such a run starts the forkserver at once, so the two happen on two cores
at the same time; then it hands over to cli/main.py. At the end it exits
without tearing down every module it imported (see `_exit`).
"""

from __future__ import annotations

import atexit
import os
import re
import sys
import threading
from typing import NoReturn

from flowengine.cli.parser import build_parser

__all__ = ["main"]

# A stage's `op:` in block or flow style; only a hint for what the forkserver preloads
# (validation reads the file properly, and a worker imports what was not preloaded).
_OP = re.compile(r"\bop\s*:\s*[\"']?([\w.:-]+)")
_CLUSTER = re.compile(r"\bengine\s*:\s*[\"']?ray\b")


def main() -> int:
    """The command line of this process; the exit code."""
    args = build_parser().parse_args()
    if args.command == "run" and not args.in_process and not _on_a_cluster(args.config):
        from flowengine.engine.worker.forkserver import start_forkserver
        start_forkserver(_ops_named_in(args.config))
    from flowengine.cli.main import run_command
    code = run_command(args, process_entry=True)
    if threading.active_count() == 1:
        _exit(code)
    return code                     # a thread of ours still runs: the interpreter joins it


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
