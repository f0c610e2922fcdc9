"""Typed errors. Each message says what went wrong, where, and what to do."""

from __future__ import annotations


class FlowError(Exception):
    """Base class of every error flowengine raises on purpose."""


class FormatError(FlowError, ValueError):
    """PCM or a parameter does not match the expected audio format (shape, dtype, rate)."""


class CodecError(FlowError, RuntimeError):
    """A codec could not be opened, or rejected data (corrupt packet, truncated stream)."""


class UnknownCodecError(FlowError, ValueError):
    """A codec name that flowengine does not know."""


class WireError(FlowError, ValueError):
    """A message on a data-plane edge failed validation."""


class ConfigError(FlowError, ValueError):
    """A run description (YAML, parameters, pipeline wiring) is invalid."""


class UsageError(ConfigError):
    """A command line that cannot work (an unknown name, a missing input): exit code 2."""


class WorkerFailed(FlowError, RuntimeError):
    """A worker process of a multiprocess run died or reported an error."""


class OutputError(FlowError, OSError):
    """An output file could not be written (disk full, another writer, removed meanwhile); the
    message names the file and the cause, and ``errno`` is the system's when there is one."""


class OutputBusyError(OutputError):
    """Another writer (another run, or another sink or stream of this one) is writing the same
    output path: refused before a byte is written."""
