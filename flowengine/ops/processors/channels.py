"""Channel remapping and mixing: mono <-> stereo, channel selection/reorder, any matrix.

Every form is a mixing matrix M of shape (out_channels, in_channels):
output[o] = sum_i M[o, i] * input[i]. The output format has out_channels.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from flowengine.audio.format import AudioFormat
from flowengine.ops.processors.base import BaseProcessor

__all__ = ["ChannelMixer", "default_mix_matrix"]


def default_mix_matrix(in_channels: int, out_channels: int) -> np.ndarray:
    """The matrix used when only a channel count is asked for.

    Same count: identity. 1 -> N: the mono channel is copied to every output.
    N -> 1: the average of the inputs (1/N each, so a full-scale signal on every
    channel stays full scale; a signal on one channel only drops by 20*log10(N) dB).
    Anything else is ambiguous and needs an explicit matrix.
    """
    if in_channels == out_channels:
        return np.eye(in_channels)
    if in_channels == 1:
        return np.ones((out_channels, 1))
    if out_channels == 1:
        return np.full((1, in_channels), 1.0 / in_channels)
    raise ValueError(f"channel_map: no default mix from {in_channels} to {out_channels} channels "
                     f"(defaults cover 1 -> N, N -> 1 and N -> N); give matrix= "
                     f"(shape ({out_channels}, {in_channels})) or channels=")


class ChannelMixer(BaseProcessor):
    """Remaps or mixes channels. Give exactly one of:

    matrix: (out_channels, in_channels) gains, output[o] = sum_i matrix[o][i] * input[i];
    channels: input channel indices, output channel k = input channel channels[k]
        (selection, reorder, duplication: [1, 0] swaps a stereo pair);
    out_channels: a channel count, mixed by default_mix_matrix (mono -> stereo
        duplicates, stereo -> mono averages).
    """

    name = "channel_map"

    def __init__(self, format: AudioFormat | dict | None = None, matrix=None,
                 channels: Sequence[int] | None = None, out_channels: int | None = None,
                 **options) -> None:
        given = [name for name, value in (("matrix", matrix), ("channels", channels),
                                          ("out_channels", out_channels)) if value is not None]
        if len(given) != 1:
            raise ValueError(f"channel_map: give exactly one of matrix, channels, out_channels "
                             f"(got {', '.join(given) or 'none'})")
        self._matrix_arg = None if matrix is None else self._checked_matrix(matrix)
        self._channels_arg = None if channels is None else self._checked_indices(channels)
        if out_channels is not None and (isinstance(out_channels, bool)
                                         or int(out_channels) != out_channels or out_channels < 1):
            raise ValueError(f"channel_map: out_channels must be a positive integer, "
                             f"got {out_channels!r}")
        self._out_channels_arg = None if out_channels is None else int(out_channels)
        self.matrix: np.ndarray | None = None
        super().__init__(format, **options)

    @staticmethod
    def _checked_matrix(matrix) -> np.ndarray:
        array = np.asarray(matrix, dtype=np.float64)
        if array.ndim != 2 or 0 in array.shape:
            raise ValueError(f"channel_map: matrix must be 2-D (out_channels, in_channels), "
                             f"got shape {array.shape}")
        if not np.all(np.isfinite(array)):
            raise ValueError("channel_map: matrix has non-finite values")
        return array

    @staticmethod
    def _checked_indices(channels: Sequence[int]) -> list[int]:
        indices = list(channels)
        if not indices or not all(isinstance(i, (int, np.integer)) and not isinstance(i, bool)
                                  and i >= 0 for i in indices):
            raise ValueError(f"channel_map: channels must be a non-empty list of input channel "
                             f"indices >= 0, got {channels!r}")
        return [int(i) for i in indices]

    def _configure(self, input_format: AudioFormat) -> None:
        in_channels = input_format.channels
        if self._matrix_arg is not None:
            if self._matrix_arg.shape[1] != in_channels:
                raise ValueError(f"channel_map: matrix has {self._matrix_arg.shape[1]} column(s) "
                                 f"(input channels) but the input has {in_channels} channel(s)")
            self.matrix = self._matrix_arg
        elif self._channels_arg is not None:
            too_big = [i for i in self._channels_arg if i >= in_channels]
            if too_big:
                raise ValueError(f"channel_map: channel index {too_big[0]} out of range for "
                                 f"{in_channels} input channel(s)")
            self.matrix = np.eye(in_channels)[self._channels_arg]
        else:
            self.matrix = default_mix_matrix(in_channels, self._out_channels_arg)

    def _output_format(self, input_format: AudioFormat) -> AudioFormat:
        return input_format.with_(channels=self.matrix.shape[0])

    def _process(self, block: np.ndarray) -> np.ndarray:
        return self.matrix @ block
