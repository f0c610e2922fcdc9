"""PCM -> PCM processors, built through the `Processor` constructors.

    p = Processor.gain(AudioFormat(48000, 2, "f32"), gain_db=-6)
    p.put_frame(pcm)
    while (out := p.get_frame(force=True)) is not None:
        ...

Every processor streams: processing a signal in chunks gives the same output
as processing it whole. The common protocol is `BaseProcessor` (base.py).
"""

from __future__ import annotations

from typing import Sequence

from flowengine.audio.format import AudioFormat
from flowengine.ops.processors.base import LAYOUTS, BaseProcessor
from flowengine.ops.processors.basic import DelayProcessor, GainProcessor, IdentityProcessor
from flowengine.ops.processors.dynamics import Compressor, static_curve_db
from flowengine.ops.processors.filters import ButterworthFilter, FirFilter, IirFilter
from flowengine.ops.processors.channels import ChannelMixer, default_mix_matrix

__all__ = [
    "Processor", "BaseProcessor", "LAYOUTS",
    "IdentityProcessor", "GainProcessor", "DelayProcessor",
    "FirFilter", "IirFilter", "ButterworthFilter",
    "ChannelMixer", "default_mix_matrix",
    "Compressor", "static_curve_db",
]

FormatLike = AudioFormat | dict | None


class Processor:
    """Constructors for every processor (the original library's `Processor.xxx(...)` API).

    Extra keyword options go to BaseProcessor: out_chunk_samples, out_sample_type, out_planar.
    """

    def __init__(self) -> None:
        raise TypeError("Processor is a namespace: use Processor.gain(...), Processor.fir(...), ...")

    @staticmethod
    def identity(format: FormatLike = None, **options) -> IdentityProcessor:
        return IdentityProcessor(format, **options)

    @staticmethod
    def gain(format: FormatLike = None, gain: float = 1.0, gain_db: float | None = None,
             **options) -> GainProcessor:
        return GainProcessor(format, gain=gain, gain_db=gain_db, **options)

    @staticmethod
    def delay(delay_ms: float, format: FormatLike = None, **options) -> DelayProcessor:
        return DelayProcessor(delay_ms, format, **options)

    @staticmethod
    def fir(taps, format: FormatLike = None, full_tail: bool = False, **options) -> FirFilter:
        return FirFilter(taps, format, full_tail=full_tail, **options)

    @staticmethod
    def iir(b=None, a=None, format: FormatLike = None, sos=None, **options) -> IirFilter:
        return IirFilter(b, a, sos=sos, format=format, **options)

    @staticmethod
    def lowpass(cutoff_hz: float, order: int = 4, format: FormatLike = None,
                **options) -> ButterworthFilter:
        return ButterworthFilter("lowpass", cutoff_hz, order, format, **options)

    @staticmethod
    def highpass(cutoff_hz: float, order: int = 4, format: FormatLike = None,
                 **options) -> ButterworthFilter:
        return ButterworthFilter("highpass", cutoff_hz, order, format, **options)

    @staticmethod
    def channel_map(format: FormatLike = None, matrix=None, channels: Sequence[int] | None = None,
                    out_channels: int | None = None, **options) -> ChannelMixer:
        return ChannelMixer(format, matrix=matrix, channels=channels, out_channels=out_channels,
                            **options)

    @staticmethod
    def compressor(format: FormatLike = None, sample_rate: int | None = None,
                   threshold_db: float = -20.0, knee_width_db: float = 0.0, ratio: float = 4.0,
                   expansion_ratio: float = 1.0, expansion_threshold_db: float = -60.0,
                   attack_time: float = 0.005, release_time: float = 0.05,
                   master_gain_db: float = 0.0, **options) -> Compressor:
        return Compressor(format, sample_rate, threshold_db, knee_width_db, ratio,
                          expansion_ratio, expansion_threshold_db, attack_time, release_time,
                          master_gain_db, **options)

    @staticmethod
    def resample(in_format: FormatLike, out_format: FormatLike, out_chunk_samples: int | None = None,
                 pad_final: bool = True):
        """Rate / channel / sample-type conversion (see resample.py)."""
        from flowengine.ops.processors.resample import Resampler  # imported here: resample.py is its own module
        return Resampler(in_format, out_format, out_chunk_samples=out_chunk_samples,
                         pad_final=pad_final)

    @staticmethod
    def loudness(format: FormatLike, target_lufs: float = -23.0, **options):
        """Loudness normalisation to target_lufs (see loudness.py)."""
        from flowengine.ops.processors.loudness import LoudnessNormalizer  # imported here: loudness.py is its own module
        return LoudnessNormalizer(format, target_lufs=target_lufs, **options)
