"""The `flowengine` command's entry point.

`flowengine run` in worker processes spends most of its start in two places:
this process importing the command line, the config model and the operators
(then validating and planning), and the forkserver importing the worker code.
The entry point reads the command line first, with nothing heavy imported, and
for such a run starts the forkserver at once, so the two happen on two cores
at the same time; then it hands over to cli/main.py.
"""

from __future__ import annotations

import re
import sys

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
    return run_command(args, process_entry=True)


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
