"""MP3 files written from flowengine's encoder packets decode to exactly the encoded samples.

The encoder's delay (first packet at pts -1105) and its last frame's padding (the last
packet's clipped duration) go into the file's LAME tag through skip_samples side data
(flowengine/ops/io/gapless.py); FFmpeg's decoder, reading the tag, drops them.
"""

from __future__ import annotations

import av
import numpy as np
import pytest

from flowengine.ops.codecs.configs import ENCODER_CONFIGS
from flowengine.ops.codecs.encoder import Encoder
from flowengine.audio.format import AudioFormat
from flowengine.ops.io import AudioFileReader, AudioFileWriter


def chirp(samples: int, sample_rate: int) -> np.ndarray:
    t = np.arange(samples) / sample_rate
    left = 0.5 * np.sin(2 * np.pi * (200 + 2000 * t) * t)
    return np.stack([left, 0.5 * left]).astype(np.float32)


def encode_to_file(pcm: np.ndarray, sample_rate: int, backend: str, path) -> list:
    encoder = Encoder("mp3", ENCODER_CONFIGS["mp3"](backend=backend))
    encoder.put_frame(pcm, format=AudioFormat(sample_rate, 2, "f32"))
    packets = []
    while (packet := encoder.get_packet(force=True)) is not None:
        packets.append(packet)
    writer = AudioFileWriter(path)
    for packet in packets:
        writer.push(packet)
    writer.push(None)
    return packets


def decode(path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.concatenate([frame.to_ndarray() for frame in container.decode(audio=0)],
                              axis=1)


@pytest.mark.parametrize("backend", ["lame", "pyav"])
@pytest.mark.parametrize("sample_rate,samples", [
    (48000, 48000), (48000, 48001), (44100, 5000), (22050, 30000), (48000, 1)])
def test_encoded_mp3_decodes_to_exactly_its_input(tmp_path, backend, sample_rate, samples):
    pcm = chirp(samples, sample_rate)
    packets = encode_to_file(pcm, sample_rate, backend, tmp_path / "out.mp3")
    assert packets[0].pts < 0                       # the encoder's delay, in front
    decoded = decode(tmp_path / "out.mp3")
    assert decoded.shape == pcm.shape
    if samples >= 1000:      # aligned at sample 0: the delay is gone, not shifted
        head = slice(0, min(samples, 8000))
        correlation = np.corrcoef(decoded[0, head], pcm[0, head])[0, 1]
        assert correlation > 0.99


def test_a_copied_mp3_keeps_its_packets_and_is_not_marked(tmp_path):
    """Demuxed packets start at pts 0 with whole-frame durations: nothing says where the
    delay is, so the copy holds the same frames, unmarked, and decodes as before."""
    encode_to_file(chirp(20000, 48000), 48000, "lame", tmp_path / "src.mp3")
    with AudioFileReader(tmp_path / "src.mp3", mode="packet") as reader:
        packets = list(reader)
    assert packets[0].pts == 0
    writer = AudioFileWriter(tmp_path / "copy.mp3")
    for packet in packets:
        writer.push(packet)
    writer.push(None)
    with av.open(str(tmp_path / "copy.mp3")) as container:
        copied = [bytes(p) for p in container.demux(audio=0) if p.size]
    assert copied == [p.data for p in packets]
    assert decode(tmp_path / "copy.mp3").shape[1] == len(packets) * 1152 - 529


@pytest.mark.parametrize("first_pts", [700, 1105, 2000, -300])
def test_a_stream_not_starting_at_pts_0_is_left_unmarked_and_loses_nothing(tmp_path,
                                                                           first_pts):
    """The tag's delay is the first packet's start skip less 529: a stream whose input began
    at another pts has no priming to skip there, so nothing is marked (a marked one lost
    ~3000 samples to FFmpeg wrapping the negative delay)."""
    pcm = chirp(10000, 48000)
    encoder = Encoder("mp3", ENCODER_CONFIGS["mp3"]())
    encoder.put_frame(pcm, pts=first_pts, format=AudioFormat(48000, 2, "f32"))
    writer = AudioFileWriter(tmp_path / "out.mp3")
    packets = 0
    while (packet := encoder.get_packet(force=True)) is not None:
        writer.push(packet)
        packets += 1
    writer.push(None)
    decoded = decode(tmp_path / "out.mp3")
    # Unmarked: every frame, less only the decoder's own 529-sample delay.
    assert decoded.shape[1] == packets * 1152 - 529 > 10000
