"""A file sink whose path comes from the stream it writes: `out/{stream}.mp3`, `out/{stem}.m4a`.

The path is the one `stream_paths` gives for the stream of the first buffer
(a run config works them out before the run from its `files` source, with
the file fields {stem}, {ext}, {index}, and checks that no two inputs share
one), or else it is rendered from the stream id through
`render_path_template` (a safe name, never outside the template's
directory); missing directories are made, and an AudioFileWriter takes over.
One writer writes one stream: the engine gives every stream its own sink node
and finalises it at that stream's end, so each file is complete as soon as
its stream ends. A writer that never got a buffer writes no file. Like
AudioFileWriter, the file is `PATH.part` until finalize() completes it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from flowengine.audio.buffers import AudioFrame, Packet
from flowengine.errors import FlowError
from flowengine.ops.io.paths import check_path_template, render_path_template
from flowengine.ops.io.writer import AudioFileWriter

__all__ = ["TemplateFileWriter"]


class TemplateFileWriter:
    """push(buf) / finalize() like AudioFileWriter, with the path rendered per stream.

    base_dir: the directory outputs must stay in (default: the template's own).
    stream_paths: the path of each stream known before the run (stream id -> path).
    writer_options: AudioFileWriter's keywords (format, bitrate, ...).
    """

    def __init__(self, template: str | os.PathLike, base_dir: str | os.PathLike | None = None,
                 stream_paths: dict[str, str] | None = None, **writer_options: Any) -> None:
        self.template = os.fspath(template)
        check_path_template(self.template)
        self.base_dir = base_dir
        self.stream_paths = dict(stream_paths or {})
        self.writer_options = writer_options
        self.stream: str | None = None
        self.writer: AudioFileWriter | None = None
        self._finalized = False

    @property
    def path(self) -> Path | None:
        """The rendered path, once the first buffer has named the stream."""
        return None if self.writer is None else Path(self.writer.path)

    @property
    def samples_written(self) -> int:
        return 0 if self.writer is None else self.writer.samples_written

    @property
    def finalized(self) -> bool:
        return self._finalized

    @property
    def complete(self) -> bool:
        """The file was completed and has its final name (a writer with no stream: nothing to
        complete, so True once finalized)."""
        return self.writer.complete if self.writer is not None else self._finalized

    def push(self, buf: AudioFrame | Packet | None) -> None:
        if buf is None:
            self.finalize()
            return
        if self._finalized:
            raise FlowError(f"file sink {self.template!r}: a buffer was pushed after finalize()")
        if self.writer is None:
            known = self.stream_paths.get(buf.stream)
            path = Path(known) if known is not None else \
                render_path_template(self.template, buf.stream, self.base_dir)
            path.parent.mkdir(parents=True, exist_ok=True)
            self.stream = buf.stream
            self.writer = AudioFileWriter(path, **self.writer_options)
        elif buf.stream != self.stream:
            raise FlowError(f"file sink {self.template!r}: writes stream {self.stream!r} to "
                            f"'{self.writer.path}' and got a buffer of stream {buf.stream!r}; "
                            f"one sink writes one stream (the engine makes one per stream; in "
                            f"one process a stage loop gives each stream a node of its own)")
        self.writer.push(buf)

    def finalize(self) -> None:
        """Complete the file (none was started: nothing to do). Idempotent."""
        if self._finalized:
            return
        self._finalized = True
        if self.writer is not None:
            self.writer.finalize()

    def close(self) -> None:
        """Release the file; unless finalize() came first it stays PATH.part (incomplete)."""
        self._finalized = True
        if self.writer is not None:
            self.writer.close()

    def __repr__(self) -> str:
        where = f" -> '{self.writer.path}'" if self.writer is not None else ""
        return f"<TemplateFileWriter {self.template!r}{where}>"
