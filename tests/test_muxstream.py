"""A stream for packets encoded elsewhere: the same file bytes as a stream whose encoder was
opened, for every container whose bytes do not vary from run to run; and a clear error for
parameters the encoder refuses."""

from __future__ import annotations

import io
from fractions import Fraction

import av
import numpy as np
import pytest

from flowengine.ops.io.muxstream import packet_stream


def encoded(encoder: str, rate: int) -> tuple[list[av.Packet], bytes | None]:
    """One second of a stereo chord through FFmpeg's `encoder`: its packets and extradata."""
    cc = av.CodecContext.create(encoder, "w")
    cc.sample_rate, cc.layout, cc.format = rate, "stereo", "fltp"
    cc.open()
    t = np.arange(rate) / rate
    pcm = (0.3 * np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 660 * t)])
           ).astype(np.float32)
    packets = []
    for start in range(0, rate - cc.frame_size, cc.frame_size):
        frame = av.AudioFrame.from_ndarray(pcm[:, start:start + cc.frame_size], format="fltp",
                                           layout="stereo")
        frame.sample_rate, frame.pts, frame.time_base = rate, start, Fraction(1, rate)
        packets += cc.encode(frame)
    return packets + cc.encode(None), cc.extradata


def muxed(muxer: str, packets: list[av.Packet], make_stream) -> bytes:
    out = io.BytesIO()
    with av.open(out, "w", format=muxer) as container:
        stream = make_stream(container)
        for packet in packets:
            copy = av.Packet(bytes(packet))
            copy.pts, copy.dts, copy.duration = packet.pts, packet.dts, packet.duration
            copy.time_base, copy.stream = packet.time_base, stream
            container.mux(copy)
    return out.getvalue()


@pytest.mark.parametrize("muxer, encoder, rate", [
    ("adts", "aac", 48000), ("ipod", "aac", 44100), ("mp3", "libmp3lame", 44100)])
def test_a_packet_stream_writes_the_bytes_an_opened_encoders_stream_writes(muxer, encoder, rate):
    packets, extradata = encoded(encoder, rate)

    def opened(container):
        stream = container.add_stream(encoder, rate=rate)
        stream.layout = "stereo"
        stream.codec_context.open()
        if extradata is not None:
            stream.codec_context.extradata = extradata
        return stream

    expected = muxed(muxer, packets, opened)
    made = lambda container: packet_stream(container, muxer, encoder, rate, 2, extradata)
    first, again = muxed(muxer, packets, made), muxed(muxer, packets, made)
    assert len(expected) > 1000
    assert first == expected and again == expected     # again: the kept template's stream
    if extradata is not None:   # a user's Packet may carry it as a bytearray
        as_array = lambda container: packet_stream(container, muxer, encoder, rate, 2,
                                                   bytearray(extradata))
        assert muxed(muxer, packets, as_array) == expected


def test_parameters_the_encoder_refuses_raise_each_time_and_are_not_kept():
    for _ in range(2):      # a failed template is not cached: the second call fails the same
        with av.open(io.BytesIO(), "w", format="adts") as container:
            with pytest.raises(av.FFmpegError):
                packet_stream(container, "adts", "aac", 12345, 2, None)
