"""MP3 encoding with the LAME bundled in the `lameenc` package, one packet per MP3 frame.

PyAV's wheel ships a slow build of LAME (~35-47x real time for 128 kb/s stereo
here); `lameenc` bundles an optimised one (~3x faster at the same settings).
lameenc returns a byte stream, not frames, so the bytes are cut into whole
frames with `mp3frames.Mp3FrameSplitter`.

Timestamps follow what FFmpeg's libmp3lame wrapper produces, so both MP3
backends give identical packets metadata: the first frame's pts is the first
input sample's pts minus 1105 (LAME's 576-sample encoder delay plus the 529
samples an MPEG decoder adds), each frame lasts 1152 (or 576) samples, and the
last frames' durations are clipped so that the stream ends at the last input
sample. lameenc writes no Xing/Info tag frame (its stream starts with an audio
frame; tests/test_encoder.py checks it), neither does FFmpeg's libmp3lame
wrapper, so with either backend every packet is an audio frame; a file muxer
that wants a Xing/Info header writes its own.
"""

from __future__ import annotations

import numpy as np

from flowengine.errors import CodecError
from flowengine.ops.codecs.mp3frames import MP3_SAMPLE_RATES, Mp3FrameSplitter, mp3_bitrates_kbps, mp3_samples_per_frame

try:
    import lameenc
except ImportError:          # optional: the Encoder falls back to PyAV's libmp3lame
    lameenc = None

__all__ = ["LAME_AVAILABLE", "MP3_INITIAL_PADDING", "check_mp3_params", "LameMp3Encoder"]

LAME_AVAILABLE = lameenc is not None
# LAME's encoder delay (576) + the MPEG Layer III decoder delay (529), as FFmpeg reports it.
MP3_INITIAL_PADDING = 576 + 529


def check_mp3_params(sample_rate: int, channels: int, bitrate: int, quality: int) -> None:
    """CodecError naming the parameter if LAME cannot encode these settings as asked.

    LAME itself would silently resample or pick the nearest bitrate instead.
    """
    if sample_rate not in MP3_SAMPLE_RATES:
        raise CodecError(f"mp3: sample_rate {sample_rate} Hz is not an MP3 rate; expected one of "
                         f"{', '.join(map(str, MP3_SAMPLE_RATES))} Hz (resample first)")
    if channels not in (1, 2):
        raise CodecError(f"mp3: channels must be 1 or 2, got {channels} (downmix first)")
    allowed = mp3_bitrates_kbps(sample_rate)
    if isinstance(bitrate, bool) or not isinstance(bitrate, int) or bitrate % 1000 \
            or bitrate // 1000 not in allowed:
        raise CodecError(f"mp3: bitrate {bitrate!r} is not allowed at {sample_rate} Hz; expected "
                         f"one of {', '.join(str(k * 1000) for k in allowed)} bit/s")
    if isinstance(quality, bool) or not isinstance(quality, int) or not 0 <= quality <= 9:
        raise CodecError(f"mp3: quality must be an integer 0 (best) .. 9 (fastest), got {quality!r}")


def _interleaved_s16_bytes(pcm: np.ndarray) -> bytes:
    """Planar int16 or float32 samples -> interleaved little-endian int16 bytes, as LAME takes them.

    Float is scaled, rounded and clipped like `format.from_float` (x * 32768, then clip to
    int16), fused with the interleaving: one pass per channel instead of three array copies.
    """
    is_float = pcm.dtype.kind == "f"
    out = np.empty((pcm.shape[1], pcm.shape[0]), dtype=np.float32 if is_float else np.int16)
    for channel, samples in enumerate(pcm):
        if is_float:
            np.multiply(samples, 32768.0, out=out[:, channel])
        else:
            out[:, channel] = samples
    if is_float:
        np.rint(out, out=out)
        np.clip(out, -32768.0, 32767.0, out=out)
        out = out.astype("<i2")
    return out.tobytes()


class LameMp3Encoder:
    """lameenc behind the Encoder backend interface: planar s16 or f32 in, (bytes, pts, dts,
    duration, key) tuples out."""

    name = "lameenc"
    takes_any_length = True     # LAME frames the samples itself; only the first pts counts
    sample_types = ("s16", "f32")
    extradata = None

    def __init__(self, sample_rate: int, channels: int, bitrate: int, quality: int) -> None:
        if lameenc is None:
            raise CodecError("mp3: backend 'lame' needs the lameenc package (pip install lameenc); "
                             "use backend 'pyav' or 'auto'")
        check_mp3_params(sample_rate, channels, bitrate, quality)
        self._sample_rate = sample_rate
        self.frame_size = mp3_samples_per_frame(sample_rate)
        self._lame = lameenc.Encoder()
        self._lame.set_in_sample_rate(sample_rate)
        self._lame.set_out_sample_rate(sample_rate)     # never let LAME resample on its own
        self._lame.set_channels(channels)
        self._lame.set_bit_rate(bitrate // 1000)
        self._lame.set_quality(quality)
        self._lame.silence()
        self._splitter = Mp3FrameSplitter()
        self._first_pts: int | None = None
        self._samples_in = 0
        self._frames_out = 0

    @property
    def pending_samples(self) -> int:
        """Samples held outside the codec (none: LAME buffers everything itself)."""
        return 0

    def encode(self, pcm: np.ndarray, pts: int) -> list[tuple[bytes, int, int, int, bool]]:
        """Encode planar int16/float32 samples (channels, n) whose first sample has timestamp `pts`."""
        if self._first_pts is None:
            self._first_pts = pts
        self._samples_in += pcm.shape[1]
        try:
            data = self._lame.encode(_interleaved_s16_bytes(pcm))
        except RuntimeError as exc:
            raise CodecError(f"mp3 (lameenc): encoding failed at sample {self._samples_in}: {exc}") \
                from None
        return self._packets(self._splitter.push(bytes(data)))

    def flush(self) -> list[tuple[bytes, int, int, int, bool]]:
        """Send end of stream to LAME and return its last frames; the encoder is then spent."""
        if not self._samples_in:        # lameenc refuses to flush a stream that never started
            return []
        try:
            data = self._lame.flush()
        except RuntimeError as exc:
            raise CodecError(f"mp3 (lameenc): flush failed: {exc}") from None
        packets = self._packets(self._splitter.push(bytes(data)))
        self._splitter.finish()
        return packets

    def _packets(self, frames: list[bytes]) -> list[tuple[bytes, int, int, int, bool]]:
        origin = (self._first_pts or 0) - MP3_INITIAL_PADDING
        end = (self._first_pts or 0) + self._samples_in
        out = []
        for frame in frames:
            pts = origin + self._frames_out * self.frame_size
            duration = max(0, min(self.frame_size, end - pts))
            out.append((frame, pts, pts, duration, True))
            self._frames_out += 1
        return out
