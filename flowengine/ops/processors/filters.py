"""Linear filters: FIR, IIR (b/a or second-order sections) and Butterworth designs.

Each keeps its filter state across blocks, so filtering a stream in chunks
gives the same samples as filtering it whole: FIR equals
`np.convolve(x, taps)[:n]` per channel, IIR equals `scipy.signal.lfilter(b, a, x)`
or `scipy.signal.sosfilt(sos, x)`.
"""

from __future__ import annotations

import numpy as np
from flowengine.ops.processors._scipy import signal

from flowengine.audio.format import AudioFormat
from flowengine.ops.processors.base import BaseProcessor

__all__ = ["FirFilter", "IirFilter", "ButterworthFilter", "FIR_DIRECT_MAX_TAPS"]

# Direct filtering (lfilter) costs ~ taps * samples; FFT overlap-add has a large fixed
# cost per call. Measured here: at 257 taps lfilter is still as fast as oaconvolve for
# 4096-sample blocks, so go FFT only for long filters on blocks with a lot of work.
FIR_DIRECT_MAX_TAPS = 128
FIR_DIRECT_MAX_WORK = 2_000_000   # taps * samples per block


def _coefficients(name: str, values, where: str) -> np.ndarray:
    """A finite float64 array from user coefficients, or ValueError naming them."""
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: {name} must be numbers, got {values!r}") from exc
    if array.size == 0:
        raise ValueError(f"{where}: {name} is empty")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{where}: {name} has non-finite values: {array.tolist()}")
    return array


def _check_stable(a: np.ndarray, where: str) -> None:
    """Refuse a denominator with a pole on or outside the unit circle."""
    if a.size < 2:
        return
    largest = float(np.max(np.abs(np.roots(a))))
    if largest >= 1.0:
        raise ValueError(f"{where}: unstable filter: largest pole magnitude {largest:.6g} >= 1 "
                         f"(every pole of a must lie inside the unit circle)")


class FirFilter(BaseProcessor):
    """Convolves every channel with `taps` (1-D), keeping the overlap between blocks.

    Output has as many samples as input; with full_tail=True the last
    len(taps) - 1 samples of the full convolution come out on flush as well.
    Each block goes through lfilter with carried state, or, for long filters
    on big blocks, FFT overlap-add (oaconvolve) carrying the same overlap.
    """

    name = "fir"

    def __init__(self, taps, format: AudioFormat | dict | None = None, full_tail: bool = False,
                 **options) -> None:
        taps = _coefficients("taps", taps, self.name)
        if taps.ndim != 1:
            raise ValueError(f"{self.name}: taps must be 1-D, got shape {taps.shape}")
        self.taps = taps
        self.full_tail = bool(full_tail)
        super().__init__(format, **options)

    def _configure(self, input_format: AudioFormat) -> None:
        # lfilter's zi and the overlap-add carry have the same meaning: what the
        # past samples still add to the next len(taps) - 1 outputs.
        self._state = np.zeros((input_format.channels, self.taps.size - 1))

    def _process(self, block: np.ndarray) -> np.ndarray:
        n = block.shape[1]
        if self.taps.size <= FIR_DIRECT_MAX_TAPS or self.taps.size * n <= FIR_DIRECT_MAX_WORK:
            out, self._state = signal.lfilter(self.taps, [1.0], block, axis=-1, zi=self._state)
            return out
        full = signal.oaconvolve(block, self.taps[np.newaxis, :], axes=-1)
        overlap = self._state.shape[1]
        full[:, :overlap] += self._state
        self._state = full[:, n:]
        return full[:, :n]

    def _tail(self) -> np.ndarray | None:
        if not self.full_tail:
            return None
        tail, self._state = self._state, np.zeros_like(self._state)
        return tail


class IirFilter(BaseProcessor):
    """Recursive filter from b/a coefficients or second-order sections, state carried.

    Give `b` and `a` (a defaults to [1]) or `sos` (shape (sections, 6), as
    scipy.signal returns). Coefficients are normalised by a[0]; a[0] == 0 and
    unstable denominators are refused. Output has as many samples as input
    (an IIR tail is infinite, so nothing extra comes out on flush).
    """

    name = "iir"

    def __init__(self, b=None, a=None, sos=None, format: AudioFormat | dict | None = None,
                 **options) -> None:
        self._set_coefficients(b, a, sos)
        super().__init__(format, **options)

    def _set_coefficients(self, b, a, sos) -> None:
        where = self.name
        if sos is not None:
            if b is not None or a is not None:
                raise ValueError(f"{where}: give b/a or sos, not both")
            sos = _coefficients("sos", sos, where)
            if sos.ndim != 2 or sos.shape[1] != 6:
                raise ValueError(f"{where}: sos must have shape (sections, 6), got {sos.shape}")
            for k, section in enumerate(sos):
                if section[3] == 0:
                    raise ValueError(f"{where}: sos section {k} has a0 == 0 "
                                     f"(a0 normalises the section and must be nonzero)")
                _check_stable(section[3:], f"{where} sos section {k}")
            self.sos = sos / sos[:, 3:4]
            self.b = self.a = None
            return
        if b is None:
            raise ValueError(f"{where}: give b (and a) or sos")
        b = _coefficients("b", b, where)
        a = _coefficients("a", [1.0] if a is None else a, where)
        if b.ndim != 1 or a.ndim != 1:
            raise ValueError(f"{where}: b and a must be 1-D, got shapes {b.shape} and {a.shape}")
        if a[0] == 0:
            raise ValueError(f"{where}: a[0] == 0: a[0] normalises the filter and must be nonzero "
                             f"(got a = {a.tolist()})")
        _check_stable(a, where)
        self.b, self.a, self.sos = b / a[0], a / a[0], None

    def _configure(self, input_format: AudioFormat) -> None:
        channels = input_format.channels
        if self.sos is not None:
            self._state = np.zeros((self.sos.shape[0], channels, 2))
        else:
            self._state = np.zeros((channels, max(self.a.size, self.b.size) - 1))

    def _process(self, block: np.ndarray) -> np.ndarray:
        if self.sos is not None:
            out, self._state = signal.sosfilt(self.sos, block, axis=-1, zi=self._state)
        else:
            out, self._state = signal.lfilter(self.b, self.a, block, axis=-1, zi=self._state)
        return out


class ButterworthFilter(IirFilter):
    """Butterworth low-/high-pass (scipy.signal.butter, as second-order sections).

    Designed once the sample rate is known (at construction when a format is
    given, else at the first put_frame); 0 < cutoff_hz < sample_rate / 2.
    """

    name = "butterworth"
    KINDS = ("lowpass", "highpass")

    def __init__(self, kind: str, cutoff_hz: float, order: int = 4,
                 format: AudioFormat | dict | None = None, **options) -> None:
        if kind not in self.KINDS:
            raise ValueError(f"{self.name}: kind must be one of {self.KINDS}, got {kind!r}")
        if isinstance(order, bool) or int(order) != order or order < 1:
            raise ValueError(f"{kind}: order must be a positive integer, got {order!r}")
        cutoff_hz = float(cutoff_hz)
        if not cutoff_hz > 0:
            raise ValueError(f"{kind}: cutoff_hz must be > 0, got {cutoff_hz!r}")
        self.name = kind
        self.kind, self.cutoff_hz, self.order = kind, cutoff_hz, int(order)
        self.b = self.a = self.sos = None
        BaseProcessor.__init__(self, format, **options)

    def _configure(self, input_format: AudioFormat) -> None:
        nyquist = input_format.sample_rate / 2
        if self.cutoff_hz >= nyquist:
            raise ValueError(f"{self.kind}: cutoff_hz {self.cutoff_hz:g} must be below half the "
                             f"sample rate ({nyquist:g} Hz at {input_format.sample_rate} Hz)")
        sos = signal.butter(self.order, self.cutoff_hz, btype=self.kind,
                                  fs=input_format.sample_rate, output="sos")
        self._set_coefficients(None, None, sos)
        super()._configure(input_format)
