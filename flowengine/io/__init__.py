"""Sources and sinks: file reader and writer (any container PyAV handles), test-signal
generator, and the in-memory and null sinks."""

from .generator import WAVEFORMS, ToneSource
from .memory import MemorySink, NullSink
from .reader import READER_MODES, AudioFileReader
from .writer import WRITER_EXTENSIONS, AudioFileWriter

__all__ = ["AudioFileReader", "AudioFileWriter", "ToneSource", "MemorySink", "NullSink",
           "READER_MODES", "WRITER_EXTENSIONS", "WAVEFORMS"]
