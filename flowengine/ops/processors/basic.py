"""The simplest processors: identity (pass-through), gain and delay."""

from __future__ import annotations

import math

import numpy as np

from flowengine.audio.format import AudioFormat
from flowengine.ops.processors.base import BaseProcessor

__all__ = ["IdentityProcessor", "GainProcessor", "DelayProcessor"]


class IdentityProcessor(BaseProcessor):
    """Passes samples through unchanged (converted to the output type/layout if asked)."""

    name = "identity"

    def _process(self, block: np.ndarray) -> np.ndarray:
        return block


class GainProcessor(BaseProcessor):
    """Multiplies every sample by a linear gain (or 10**(gain_db/20) when gain_db is given).

    Integer outputs are clipped to their range; float outputs are not.
    """

    name = "gain"

    def __init__(self, format: AudioFormat | dict | None = None, gain: float = 1.0,
                 gain_db: float | None = None, **options) -> None:
        if gain_db is not None and gain != 1.0:
            raise ValueError(f"gain: give gain or gain_db, not both (got gain={gain!r}, "
                             f"gain_db={gain_db!r})")
        factor = 10.0 ** (float(gain_db) / 20.0) if gain_db is not None else float(gain)
        if not math.isfinite(factor):
            raise ValueError(f"gain: the gain must be finite, got gain={gain!r}, gain_db={gain_db!r}")
        self.gain = factor
        super().__init__(format, **options)

    def _process(self, block: np.ndarray) -> np.ndarray:
        return block * self.gain


class DelayProcessor(BaseProcessor):
    """Delays the signal by round(delay_ms * sample_rate / 1000) samples.

    The delay is zeros put in front: each input block gives an output block of
    the same size, and the last `delay_samples` samples come out on flush, so
    the output is input + delay_samples long. Output pts start at the first
    input pts (the zeros are part of the output timeline).
    """

    name = "delay"

    def __init__(self, delay_ms: float, format: AudioFormat | dict | None = None,
                 **options) -> None:
        delay_ms = float(delay_ms)
        if not math.isfinite(delay_ms) or delay_ms < 0:
            raise ValueError(f"delay: delay_ms must be a finite number >= 0, got {delay_ms!r}")
        self.delay_ms = delay_ms
        self.delay_samples = 0
        super().__init__(format, **options)

    def _configure(self, input_format: AudioFormat) -> None:
        self.delay_samples = int(round(self.delay_ms * input_format.sample_rate / 1000.0))
        self._line = np.zeros((input_format.channels, self.delay_samples))

    def _process(self, block: np.ndarray) -> np.ndarray:
        if self.delay_samples == 0:
            return block
        joined = np.concatenate([self._line, block], axis=1)
        n = block.shape[1]
        self._line = joined[:, n:]
        return joined[:, :n]

    def _tail(self) -> np.ndarray | None:
        tail, self._line = self._line, self._line[:, :0]
        return tail
