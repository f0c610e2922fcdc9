"""Sources and sinks: file reader and writer (any container PyAV handles), test-signal
generator, and the in-memory and null sinks."""

from flowengine.ops.io.generator import WAVEFORMS, ToneSource
from flowengine.ops.io.memory import MemorySink, NullSink
from flowengine.ops.io.reader import READER_MODES, AudioFileReader
from flowengine.ops.io.writer import WRITER_EXTENSIONS, AudioFileWriter

__all__ = ["AudioFileReader", "AudioFileWriter", "ToneSource", "MemorySink", "NullSink",
           "READER_MODES", "WRITER_EXTENSIONS", "WAVEFORMS"]
