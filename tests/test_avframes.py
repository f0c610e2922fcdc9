"""The per-buffer fast paths: reused av frames, FIFO views, integer timestamp arithmetic.

Each is checked against the slow, obvious way it replaces (from_ndarray / to_ndarray,
a copying FIFO, Fraction arithmetic), value for value and byte for byte.
"""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest

from flowengine.audio.avframes import FrameFiller, planar_array
from flowengine.audio.buffers import round_ratio, samples_from_ticks
from flowengine.ops.codecs.configs import AacEncoderConfig, FlacEncoderConfig, OpusEncoderConfig
from flowengine.ops.codecs.encoder import Encoder
from flowengine.audio.fifo import SampleFifo
from flowengine.audio.format import AudioFormat


def _noise(channels: int, samples: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (0.3 * rng.standard_normal((channels, samples))).astype(np.float32)


def test_frame_filler_fills_planar_and_packed_frames_of_any_size():
    planar = FrameFiller("fltp", "stereo", 48000, np.float32)
    packed = FrameFiller("s16", "stereo", 44100, np.int16)
    for samples in (1024, 1024, 7, 4096):           # same size reuses, a new size reallocates
        pcm = _noise(2, samples, seed=samples)
        frame = planar.fill(pcm, pts=samples)
        assert (frame.samples, frame.pts, frame.sample_rate) == (samples, samples, 48000)
        np.testing.assert_array_equal(frame.to_ndarray(), pcm)
        ints = (pcm * 10000).astype(np.int16)
        frame = packed.fill(ints, pts=None)
        assert frame.pts is None and frame.sample_rate == 44100
        np.testing.assert_array_equal(frame.to_ndarray().reshape(samples, 2).T, ints)


def test_planar_array_equals_to_ndarray_for_resampled_frames():
    resampler = av.AudioResampler(format="dblp", layout="stereo", rate=48000)
    source = av.AudioFrame.from_ndarray(_noise(2, 4410).astype(np.float64), format="dblp",
                                        layout="stereo")
    source.sample_rate = 44100
    frames = resampler.resample(source) + resampler.resample(None)
    assert sum(f.samples for f in frames) == 4800
    for frame in frames:
        np.testing.assert_array_equal(planar_array(frame, np.float64), frame.to_ndarray())


def _plain_pyav_packets(codec: str, av_format: str, pcm: np.ndarray, rate: int,
                        bit_rate: int | None) -> list[bytes]:
    """The same encode with a new frame per codec frame (from_ndarray), as PyAV users write it."""
    cc = av.CodecContext.create(codec, "w")
    cc.sample_rate, cc.layout, cc.format = rate, "stereo", av_format
    cc.time_base = Fraction(1, rate)
    if bit_rate:
        cc.bit_rate = bit_rate
    cc.open()
    size = cc.frame_size
    packets = []
    for start in range(0, pcm.shape[1], size):
        block = pcm[:, start:start + size]
        array = block if av.AudioFormat(av_format).is_planar else block.T.reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(array), format=av_format,
                                           layout="stereo")
        frame.sample_rate, frame.pts = rate, start
        packets += cc.encode(frame)
    packets += cc.encode(None)
    return [bytes(p) for p in packets if p.size]


@pytest.mark.parametrize("chunk", [4096, 1000])
@pytest.mark.parametrize("codec, av_format, make_config, dtype, bit_rate", [
    ("aac", "fltp", lambda fmt: AacEncoderConfig(fmt, bitrate=128000), np.float32, 128000),
    ("libopus", "flt", lambda fmt: OpusEncoderConfig(fmt, bitrate=96000), np.float32, 96000),
    ("flac", "s16", lambda fmt: FlacEncoderConfig(fmt), np.int16, None),
])
def test_encoder_with_a_reused_frame_gives_plain_pyav_bytes(chunk, codec, av_format,
                                                            make_config, dtype, bit_rate):
    """A reused frame must never be overwritten while the codec still reads it: the packets
    equal a plain PyAV encode's, byte for byte (2 s, fed in chunks of any size)."""
    rate = 48000
    pcm = _noise(2, 2 * rate)
    if dtype is np.int16:
        pcm = (pcm * 20000).astype(np.int16)
    fmt = AudioFormat(rate, 2, "s16" if dtype is np.int16 else "f32")
    encoder = Encoder(codec if codec != "libopus" else "opus", make_config(fmt))
    for start in range(0, pcm.shape[1], chunk):
        encoder.put_frame(pcm[:, start:start + chunk])
    ours = []
    while (packet := encoder.get_packet(force=True)) is not None:
        ours.append(packet.data)
    expected = _plain_pyav_packets(codec, av_format, pcm, rate, bit_rate)
    if codec == "aac":                 # flowengine's packets are ADTS: header + raw frame
        ours = [data[7:] for data in ours]
    assert len(ours) == len(expected) > 10
    assert ours == expected


def test_fifo_view_is_a_slice_inside_one_block_and_a_copy_across_blocks():
    fifo = SampleFifo(2, np.float32)
    first, second = _noise(2, 1000, seed=2), _noise(2, 600, seed=3)
    fifo.push(first, pts=50)
    fifo.push(second)
    both = np.concatenate([first, second], axis=1)
    out, pts = fifo.pop(400, view=True)                  # inside `first`: a view
    assert pts == 50 and np.shares_memory(out, first)
    np.testing.assert_array_equal(out, both[:, :400])
    out, pts = fifo.pop(400, view=True)
    assert pts == 450 and np.shares_memory(out, first)
    np.testing.assert_array_equal(out, both[:, 400:800])
    out, pts = fifo.pop(400, view=True)                  # 200 of `first`, 200 of `second`
    assert pts == 850 and not np.shares_memory(out, first) \
        and not np.shares_memory(out, second)
    np.testing.assert_array_equal(out, both[:, 800:1200])
    out, pts = fifo.pop(400, view=True)                  # the rest of `second`, exactly
    assert pts == 1250 and np.shares_memory(out, second) and len(fifo) == 0
    np.testing.assert_array_equal(out, both[:, 1200:])
    fifo.push(first)
    out, pts = fifo.pop(10)                              # without view=True: always a copy
    assert pts == 1650 and not np.shares_memory(out, first)


@pytest.mark.parametrize("num, den", [(5, 2), (7, 2), (-5, 2), (-7, 2), (10, 4), (14, 4),
                                      (1, 3), (2, 3), (-1, 3), (-2, 3), (0, 9), (44099, 44100)])
def test_round_ratio_rounds_halves_to_even_like_fraction(num, den):
    assert round_ratio(num, den) == round(Fraction(num, den))


@pytest.mark.parametrize("pts, time_base, rate", [
    (4096, Fraction(1, 48000), 48000), (1, Fraction(1, 14112000), 44100),
    (160, Fraction(1, 14112000), 44100), (480, Fraction(1, 14112000), 44100),
    (90000 * 3 + 1, Fraction(1, 90000), 44100), (-1024, Fraction(1, 44100), 48000),
])
def test_samples_from_ticks_equals_fraction_arithmetic(pts, time_base, rate):
    assert samples_from_ticks(pts, time_base, rate) == round(pts * time_base * rate)


def test_frame_filler_refuses_a_channel_count_its_layout_does_not_have():
    filler = FrameFiller("fltp", "stereo", 48000, np.float32)
    with pytest.raises(ValueError, match=r"^FrameFiller\(stereo\): 1 channel\(s\) given, the "
                                         r"layout has 2$"):
        filler.fill(np.zeros((1, 64), np.float32), 0)


def test_an_encoder_frame_keeps_its_buffer_across_refills():
    """What the module doc says FrameFiller saves: after an encode, a refill reuses the
    frame's buffer (the encoder copied what it keeps)."""
    cc = av.CodecContext.create("aac", "w")
    cc.sample_rate, cc.layout, cc.format, cc.bit_rate = 48000, "stereo", "fltp", 128000
    cc.open()
    filler = FrameFiller("fltp", "stereo", 48000, np.float32)
    pointers = []
    for k in range(4):
        frame = filler.fill(np.full((2, 1024), 0.1 * k, np.float32), 1024 * k)
        pointers.append(frame.planes[0].buffer_ptr)
        cc.encode(frame)
    assert len(set(pointers[1:])) == 1, pointers
