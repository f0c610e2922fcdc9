"""How flowengine's messages reach a terminal: one line each, `flowengine: ...`, never source code.

Python prints a warning with the file, line number and the line of source
that raised it (`.../io/reader.py:295: RuntimeWarning: ...` and then the
`for packet in ...` line): noise for a user, who wants the message. The CLI
and every worker process call `show_messages_as_lines()` once: a warning is
then logged as `flowengine: warning: MESSAGE`, and log records go to stderr
as `flowengine: MESSAGE` lines (WARNING and above, INFO with `verbose`),
unless the program configured logging itself. A program using flowengine as
a library keeps its own logging and warnings as they are.
"""

from __future__ import annotations

import logging
import sys
import warnings

__all__ = ["show_messages_as_lines", "LOG_FORMAT"]

LOG_FORMAT = "flowengine: %(message)s"


def _warning_as_line(message, category, filename, lineno, file=None, line=None) -> None:
    """warnings.showwarning that logs the message alone (no file, line or source)."""
    logging.getLogger("flowengine").warning("warning: %s", message)


def show_messages_as_lines(verbose: bool = False) -> None:
    """Warnings as log lines; log lines on stderr (a no-op for logging already configured)."""
    warnings.showwarning = _warning_as_line
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format=LOG_FORMAT,
                        stream=sys.stderr)
