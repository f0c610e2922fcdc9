"""MP3 files that decode to exactly the encoded samples: FFmpeg's gapless note, from packets.

An MP3 encoder adds silence: LAME's delay in front of the audio and padding to a
whole frame at the end. flowengine's encoders say where the audio is: the first
packet starts at a negative pts (-1105 samples: LAME's 576 plus the decoder's
529, FFmpeg's convention) and the last packet's duration is clipped to the end
of the input. FFmpeg's mp3 muxer writes delay and padding into the file's LAME
tag when the packets carry AV_PKT_DATA_SKIP_SAMPLES side data (how many samples
to drop at the start of the first packet and at the end of the last), and
decoders that read the tag (FFmpeg, browsers, most players) then give back
exactly the input's samples instead of ~1100 samples more in front and up to a
frame more behind.

`SkipSamplesMarker` holds back one packet, so that the last one is known when
it is marked. The padding is counted over the whole stream (frames muxed x
samples per frame - the packets' durations), as a short input can leave
padding in more than one packet. PyAV 18 copies side data between packets but
cannot create it (an empty `PacketSideData` keeps its size 0), so one 10-byte
skip_samples entry is taken, once, from FFmpeg's own libmp3lame (a one-frame
encode marks its first packet) and rewritten for every use. Without it (an
FFmpeg built without libmp3lame) packets are muxed unmarked: the file plays,
with the silence, as before.

Only a stream whose first packet starts exactly one MP3 priming (1105
samples, both encoders) before 0 is marked, i.e. whose input began at pts 0.
Any other start would make the skip cut real audio, or wrap the tag's delay
(start - 529) below 0, which FFmpeg turns into ~3500 samples dropped; such a
stream is left unmarked, end included, and decodes with its silence, as before.
"""

from __future__ import annotations

import functools
import struct

import av
import numpy as np
from av.packet import PacketSideData

from flowengine.audio.buffers import samples_from_ticks
from flowengine.ops.codecs.lame import MP3_INITIAL_PADDING

__all__ = ["SkipSamplesMarker"]

# The LAME tag keeps the padding in 12 bits; FFmpeg's mp3 muxer writes the side data's end
# skip plus the decoder's 529 samples.
_MAX_TAG_PADDING = 4095 - 529


@functools.cache
def _side_data_template() -> PacketSideData | None:
    """A skip_samples side data entry of the right size (10 bytes), or None."""
    try:
        context = av.CodecContext.create("libmp3lame", "w")
        context.sample_rate, context.layout, context.format = 44100, "mono", "fltp"
        context.open()
        frame = av.AudioFrame.from_ndarray(np.zeros((1, context.frame_size), np.float32),
                                           format="fltp", layout="mono")
        frame.sample_rate, frame.pts = 44100, 0
        packets = list(context.encode(frame)) + list(context.encode(None))
    except (av.FFmpegError, ValueError):
        return None
    for packet in packets:
        side_data = PacketSideData.from_packet(packet, "skip_samples")
        if side_data.data_size == 10:
            return side_data
    return None


class SkipSamplesMarker:
    """Marks the first packet of a stream with its delay and the last with its padding.

    `hold(packet)` returns the packet to mux now (the one before it) or None;
    `release()` returns the last packet, marked, once the stream has ended.
    """

    def __init__(self, samples_per_frame: int, sample_rate: int) -> None:
        self._frame = samples_per_frame
        self._rate = sample_rate
        self._held: av.Packet | None = None
        self._marked = False        # the first packet carried an encoder's priming
        self._frames = 0            # packets seen, the held one included
        self._covered: int | None = 0   # samples their durations cover (None: one had none)

    def hold(self, packet: av.Packet) -> av.Packet | None:
        previous = self._release_middle()
        if self._frames == 0:
            # Marked only when the first packet starts exactly one encoder priming before
            # 0: any other start means the input did not begin at pts 0, and a skip of it
            # would cut real audio or wrap below the decoder's 529 (FFmpeg takes the tag's
            # delay from any marked packet, so nothing is marked then, end included).
            self._marked = packet.pts is not None and samples_from_ticks(
                -packet.pts, packet.time_base, self._rate) == MP3_INITIAL_PADDING
        self._frames += 1
        if packet.duration is None or self._covered is None:
            self._covered = None
        else:
            self._covered += samples_from_ticks(packet.duration, packet.time_base,
                                                self._rate)
        self._held = packet
        return previous

    def _held_start(self) -> int:
        """Samples to skip at the start of the held packet: the priming, on the first."""
        return MP3_INITIAL_PADDING if self._marked and self._frames == 1 else 0

    def _release_middle(self) -> av.Packet | None:
        """The held packet as a packet in the middle of the stream (no end padding)."""
        packet, self._held = self._held, None
        if packet is not None:
            _mark(packet, self._held_start(), 0)
        return packet

    def release(self) -> av.Packet | None:
        """The held packet as the stream's last, marked with the stream's end padding:
        the samples its frames hold beyond what the packets' durations cover."""
        packet, self._held = self._held, None
        if packet is None:
            return None
        padding = 0 if self._covered is None or not self._marked \
            else self._frames * self._frame - self._covered
        _mark(packet, self._held_start(), padding if 0 < padding <= _MAX_TAG_PADDING else 0)
        return packet


def _mark(packet: av.Packet, start: int, end: int) -> None:
    template = _side_data_template() if start or end else None
    if template is not None:
        template.update(struct.pack("<IIBB", start, end, 0, 0))
        template.to_packet(packet)
