"""flowengine's own Encoder -> Decoder round trip, for every codec, on a tone and speech-like bursts."""

from __future__ import annotations

import numpy as np
import pytest

from audio_checks import aligned_correlation, best_lag, dominant_frequency

from flowengine import AudioFormat, Decoder, Encoder, ToneSource
from flowengine.ops.codecs.configs import DECODER_CONFIGS, ENCODER_CONFIGS, WavDecoderConfig
from flowengine.audio.format import from_float

RATE = 48000
# Samples a lossy codec may add: its start-up delay plus one frame of padding at the end.
MAX_ADDED = {"mp3": 1105 + 529 + 1152, "aac": 1024 + 1024, "opus": 312 + 960}


def signal(waveform: str, seconds: float = 1.0) -> np.ndarray:
    """Stereo f32: a 1 kHz tone, or speech-like noise bursts."""
    source = ToneSource(frequency=1000, amplitude=0.5, seconds=seconds, sample_rate=RATE,
                        channels=2, waveform=waveform, chunk_samples=RATE)
    return np.concatenate([frame.data for frame in source], axis=1)


def round_trip(codec: str, pcm: np.ndarray, fmt: AudioFormat, chunk: int, by_bytes: bool):
    encoder = Encoder(codec, ENCODER_CONFIGS[codec](fmt, chunk_samples=chunk))
    for start in range(0, pcm.shape[1], 777):        # input blocks unrelated to the chunk size
        encoder.put_frame(pcm[:, start:start + 777])
    packets = list(iter(lambda: encoder.get_packet(force=True), None))
    if codec == "wav":
        config = WavDecoderConfig(fmt, chunk_samples=1000)
    elif codec == "opus":
        config = DECODER_CONFIGS[codec](chunk_samples=1000, extradata=encoder.extradata)
    else:
        config = DECODER_CONFIGS[codec](chunk_samples=1000)
    decoder = Decoder(codec, config)
    if by_bytes:   # the whole stream cut in arbitrary places, as a socket delivers it
        data = b"".join(p.data for p in packets)
        for start in range(0, len(data), 1234):
            decoder.put_frame(data[start:start + 1234])
    else:
        for packet in packets:
            decoder.put_packet(packet)
    blocks = []
    while (block := decoder.get_frame(force=True)) is not None:
        blocks.append(block)
    assert all(b.shape[1] == 1000 for b in blocks[:-1])
    return np.concatenate(blocks, axis=1), packets


@pytest.mark.parametrize("codec", ["wav", "flac"])
@pytest.mark.parametrize("by_bytes", [False, True])
def test_lossless_round_trip_is_bit_exact(codec, by_bytes):
    fmt = AudioFormat(RATE, 2, "s16")
    pcm = from_float(signal("bursts"), "s16")
    out, _ = round_trip(codec, pcm, fmt, chunk=1500, by_bytes=by_bytes)
    if codec == "flac":   # decoded as f32: exact multiples of 1/32768
        out = from_float(out, "s16")
    assert out.shape == pcm.shape
    np.testing.assert_array_equal(out, pcm)


@pytest.mark.parametrize("codec", ["mp3", "aac", "opus"])
@pytest.mark.parametrize("chunk", [100, 4096])
def test_lossy_round_trip_keeps_length_pitch_and_shape(codec, chunk):
    fmt = AudioFormat(RATE, 2, "f32")
    pcm = signal("sine")
    by_bytes = codec != "opus"    # Opus packets are not self-delimiting: whole packets only
    out, packets = round_trip(codec, pcm, fmt, chunk, by_bytes)
    n = pcm.shape[1]
    assert n <= out.shape[1] <= n + MAX_ADDED[codec]
    assert packets[-1].pts + packets[-1].duration == n     # the timeline ends where the input did
    assert dominant_frequency(out[0], RATE) == pytest.approx(1000, abs=3)
    for channel in range(2):
        assert aligned_correlation(pcm[channel], out[channel]) > 0.95


def envelope(x: np.ndarray, block: int = 480) -> np.ndarray:
    """RMS per 10 ms block: what survives a perceptual codec of a noise-like signal."""
    n = len(x) // block * block
    return np.sqrt(np.mean(x[:n].reshape(-1, block) ** 2, axis=1))


@pytest.mark.parametrize("codec", ["mp3", "aac", "opus"])
def test_lossy_round_trip_keeps_the_envelope_of_speech_like_bursts(codec):
    # A perceptual codec does not keep the waveform of noise, but it keeps where the
    # bursts are and how loud: compare the 10 ms envelopes after aligning by the codec delay.
    fmt = AudioFormat(RATE, 2, "f32")
    pcm = signal("bursts")
    out, _ = round_trip(codec, pcm, fmt, chunk=960, by_bytes=False)
    lag = best_lag(envelope(pcm[0]), envelope(out[0]), max_lag=8)
    a, b = envelope(pcm[0]), envelope(out[0])[lag:]
    n = min(len(a), len(b))
    assert np.corrcoef(a[:n], b[:n])[0, 1] > 0.95
    # White noise loses its top octave to the codec's low-pass (mp3 ~17 kHz, aac ~14 kHz
    # at 128 kbit/s stereo), so up to about half the energy, never more than it had.
    assert 0.45 < np.sum(b[:n] ** 2) / np.sum(a[:n] ** 2) < 1.05
