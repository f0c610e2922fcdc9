"""N generated test streams from one source: "tone-0" .. "tone-{N-1}", chunk by chunk in turn.

Stream i is a ToneSource at `frequency * (1 + i / N)`, so every stream has
its own pitch (a mix-up between streams shows as a wrong dominant
frequency), and lasts `seconds` (one value for all, or one per stream).

    >>> source = MultiToneSource(streams=3, seconds=0.01, sample_rate=8000, channels=1,
    ...                          chunk_samples=40)
    >>> [(frame.stream, frame.samples) for frame in source]
    [('tone-0', 40), ('tone-1', 40), ('tone-2', 40), ('tone-0', 40), ('tone-1', 40), ('tone-2', 40)]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from flowengine.errors import ConfigError
from flowengine.ops.pacing import MediaClock
from flowengine.ops.io.generator import ToneSource
from flowengine.ops.io.multistream import InterleavedSource, StreamInterleaver

__all__ = ["MultiToneSource"]


class MultiToneSource(InterleavedSource):
    """`streams` ToneSources interleaved (see module doc). Other keywords go to ToneSource."""

    def __init__(self, streams: int = 2, frequency: float = 440.0,
                 seconds: float | Sequence[float] | None = 1.0, prefix: str = "tone",
                 **tone: Any) -> None:
        if isinstance(streams, bool) or not isinstance(streams, int) or streams < 1:
            raise ConfigError(f"tones: streams must be a positive integer, got {streams!r}")
        if isinstance(seconds, (list, tuple)):
            if len(seconds) != streams:
                raise ConfigError(f"tones: seconds has {len(seconds)} values for {streams} "
                                  f"streams (give one per stream, or one number for all)")
            lengths = list(seconds)
        else:
            lengths = [seconds] * streams
        self.streams = [f"{prefix}-{i}" for i in range(streams)]
        # One clock: a tick's chunks of every stream are due at once (flowengine.ops.pacing).
        clock = MediaClock()
        self.sources = [ToneSource(frequency=frequency * (1 + i / streams), seconds=length,
                                   stream=stream, clock=clock, **tone)
                        for i, (stream, length) in enumerate(zip(self.streams, lengths))]
        self.format = self.sources[0].format
        entries = [(source.stream, self._opener(source)) for source in self.sources]
        self._interleaver = StreamInterleaver(entries, max_open=streams, name="tones")

    @staticmethod
    def _opener(source: ToneSource):
        return lambda: (source.frames(), lambda: None)

    @property
    def frequencies(self) -> list[float]:
        return [source.frequency for source in self.sources]

    frames = InterleavedSource.__iter__

    def __repr__(self) -> str:
        return f"<MultiToneSource {len(self.sources)} streams {self.format}>"
