"""Test-signal source: tones, chirps, noise, silence and speech-like bursts as AudioFrames.

Every sample is computed from its absolute index n (t = n / sample_rate), so a
signal produced in chunks equals the whole-signal formula: the phase never
jumps at a chunk boundary and the chunk size does not change the output.
Noise draws its random numbers sample by sample (interleaved, from one seeded
generator), so it is chunk-invariant and reproducible for a given seed.

With `realtime=True` the source paces itself to the wall clock like a live
input: each chunk is handed out once its last sample is "due", measured from
the moment the first chunk was requested (scheduled from the start time, so
sleeping late never accumulates drift). It waits through a
``flowengine.ops.pacing.MediaClock`` (a sleep, unless a worker installed its own
waiter); sources that start together may share one `clock`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from fractions import Fraction

import numpy as np

from flowengine.audio.buffers import DEFAULT_STREAM, AudioFrame
from flowengine.errors import ConfigError
from flowengine.audio.format import AudioFormat, from_float
from flowengine.ops.pacing import MediaClock

__all__ = ["ToneSource", "WAVEFORMS"]

WAVEFORMS = ("sine", "square", "chirp", "noise", "silence", "bursts")
_RANDOM = ("noise", "bursts")           # the waveforms drawn from a random generator

# Speech-like bursts: syllables at this rate, every fifth one silent (a pause between "words").
_SYLLABLE_RATE_HZ = 4.0
_SYLLABLES_PER_WORD = 5


def _positive(name: str, value, allow_none: bool = False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigError(f"ToneSource: {name} must be a positive number, got {value!r}")
    return value


class ToneSource:
    """A generated signal, iterated as AudioFrames of `chunk_samples` (the last may be short).

    waveform: "sine" | "square" | "chirp" (linear sweep from `frequency` to
    `end_frequency`, default 4 x frequency capped below Nyquist) | "noise"
    (white, uniform in [-amplitude, amplitude], seeded) | "silence" | "bursts"
    (white noise under a raised-cosine syllable envelope at 4 Hz with a pause
    every fifth syllable: a crude stand-in for speech).
    seconds=None makes an endless source (sensible with realtime=True); a
    chirp needs a finite length. Output is planar in `sample_type`.
    clock: the MediaClock a realtime source waits on (default: its own, started
    at the first chunk); streams that start together share one.

    >>> src = ToneSource(frequency=1000, seconds=0.01, sample_rate=8000, channels=1, chunk_samples=32)
    >>> [frame.samples for frame in src], src.total_samples
    ([32, 32, 16], 80)
    """

    def __init__(self, frequency: float = 440.0, amplitude: float = 0.5,
                 seconds: float | None = 5.0, sample_rate: int = 48000, channels: int = 2,
                 chunk_samples: int = 1024, waveform: str = "sine", realtime: bool = False,
                 stream: str = DEFAULT_STREAM, seed: int = 0, sample_type: str = "f32",
                 end_frequency: float | None = None, clock: MediaClock | None = None) -> None:
        if waveform not in WAVEFORMS:
            raise ConfigError(f"ToneSource: unknown waveform {waveform!r}: expected one of "
                              f"{', '.join(WAVEFORMS)}")
        self.frequency = float(_positive("frequency", frequency))
        if isinstance(amplitude, bool) or not isinstance(amplitude, (int, float)) \
                or not 0 <= amplitude <= 1:
            raise ConfigError(f"ToneSource: amplitude must be in [0, 1], got {amplitude!r}")
        self.amplitude = float(amplitude)
        self.seconds = _positive("seconds", seconds, allow_none=True)
        if isinstance(chunk_samples, bool) or not isinstance(chunk_samples, int) or chunk_samples <= 0:
            raise ConfigError(f"ToneSource: chunk_samples must be a positive integer, got "
                              f"{chunk_samples!r}")
        self.chunk_samples = chunk_samples
        self.format = AudioFormat(sample_rate, channels, sample_type)
        self.waveform = waveform
        self.realtime = bool(realtime)
        self.clock = clock
        self.stream = stream
        self.seed = seed
        nyquist = self.format.sample_rate / 2
        if waveform == "chirp" and self.seconds is None:
            raise ConfigError("ToneSource: a chirp needs a finite length (seconds=None is endless)")
        self.end_frequency = float(end_frequency) if end_frequency is not None \
            else min(4 * self.frequency, 0.45 * self.format.sample_rate)
        for name, value in (("frequency", self.frequency), ("end_frequency", self.end_frequency)):
            if waveform in ("sine", "square", "chirp") and value >= nyquist:
                raise ConfigError(f"ToneSource: {name} {value} Hz is at or above Nyquist "
                                  f"({nyquist} Hz for {self.format.sample_rate} Hz)")

    @property
    def sample_rate(self) -> int:
        return self.format.sample_rate

    @property
    def channels(self) -> int:
        return self.format.channels

    @property
    def total_samples(self) -> int | None:
        """Samples per channel the source produces (None when endless)."""
        if self.seconds is None:
            return None
        return int(round(self.seconds * self.format.sample_rate))

    def signal(self, start: int, count: int, rng: np.random.Generator | None = None) -> np.ndarray:
        """Float64 planar samples [start, start + count) of the signal, shape (channels, count).

        Noise-based waveforms need `rng` positioned at sample `start` (frames() keeps one).
        """
        n = np.arange(start, start + count, dtype=np.float64)
        rate = self.format.sample_rate
        amp = self.amplitude
        if self.waveform in ("sine", "square", "chirp"):
            if self.waveform == "chirp":
                t = n / rate
                sweep = (self.end_frequency - self.frequency) / self.seconds
                cycles = self.frequency * t + 0.5 * sweep * t * t
            else:
                cycles = n * (self.frequency / rate)
            phase = cycles - np.floor(cycles)          # in [0, 1): keeps sin() accurate for long runs
            if self.waveform == "square":
                mono = np.where(phase < 0.5, amp, -amp)
            else:
                mono = amp * np.sin(2 * math.pi * phase)
            return np.broadcast_to(mono, (self.channels, count))
        if self.waveform == "silence":
            return np.zeros((self.channels, count))
        noise = amp * (2.0 * rng.random((count, self.channels)) - 1.0)   # sample-major draws
        if self.waveform == "bursts":
            t = n / rate
            syllable = np.floor(t * _SYLLABLE_RATE_HZ)
            envelope = np.sin(math.pi * _SYLLABLE_RATE_HZ * t) ** 2
            envelope[syllable % _SYLLABLES_PER_WORD == _SYLLABLES_PER_WORD - 1] = 0.0
            noise *= envelope[:, None]
        return noise.T

    def frames(self) -> Iterator[AudioFrame]:
        """The signal as AudioFrames with pts = sample index (time base 1/sample_rate)."""
        # Only noise draws: numpy.random's first import is ~13 ms of a tone's start.
        rng = np.random.default_rng(self.seed) if self.waveform in _RANDOM else None
        total = self.total_samples
        rate = self.format.sample_rate
        time_base = Fraction(1, rate)
        clock = (self.clock or MediaClock()) if self.realtime else None
        position = 0
        while total is None or position < total:
            count = self.chunk_samples if total is None else min(self.chunk_samples, total - position)
            pcm = from_float(self.signal(position, count, rng), self.format.sample_type)
            if clock is not None:
                # Due when its last sample has "happened"; the delay is bounded by one chunk.
                clock.wait((position + count) / rate)
            yield AudioFrame(np.ascontiguousarray(pcm), self.format, position, time_base,
                             self.stream)
            position += count

    __iter__ = frames

    def __repr__(self) -> str:
        length = "endless" if self.seconds is None else f"{self.seconds} s"
        return (f"<ToneSource {self.waveform} {self.frequency} Hz {length} {self.format}"
                f"{' realtime' if self.realtime else ''}>")
