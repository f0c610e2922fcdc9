"""Pipeline wiring checks, Runner and AsyncRunner on real codecs, bounded flush."""

from __future__ import annotations

import asyncio

import av
import numpy as np
import pytest

from audio_checks import dominant_frequency

from flowengine.audio.buffers import AudioFrame
from flowengine.errors import ConfigError, FlowError, FormatError
from flowengine.audio.format import AudioFormat
from flowengine.ops.io import AudioFileReader, AudioFileWriter, MemorySink, ToneSource
from flowengine.ops.node import AGAIN, EOF
from flowengine.ops import (
    make_decoder_node, make_encoder_node, make_identity_node, make_processor_node, make_python_node,
    make_sink_node, make_source_node,
)
from flowengine.ops.pipeline import Pipeline
from flowengine.ops.processors import Processor
from flowengine.ops.processors.resample import expected_output_samples
from flowengine.local.runner import AsyncRunner, Runner

FMT = AudioFormat(48000, 2, "f32")
OUT = AudioFormat(44100, 2, "f32")


def tone(seconds: float = 1.0, chunk: int = 1000, freq: float = 1000.0) -> ToneSource:
    return ToneSource(frequency=freq, amplitude=0.5, seconds=seconds, sample_rate=48000,
                      channels=2, chunk_samples=chunk)


def mp3_chain() -> list:
    return [make_processor_node("pcm", Processor.gain(FMT, gain_db=-6.0)),
            make_processor_node("pcm", Processor.resample(FMT, OUT)),
            make_encoder_node("mp3", {"input_format": OUT, "bitrate": 128000})]


def decode_mp3(packets) -> np.ndarray:
    """Decode with PyAV directly (not our Decoder): (channels, n) float."""
    ctx = av.CodecContext.create("mp3", "r")
    blocks = []
    for packet in packets:
        for frame in ctx.decode(av.Packet(packet.data)):
            blocks.append(frame.to_ndarray())
    for frame in ctx.decode(None):
        blocks.append(frame.to_ndarray())
    pcm = np.concatenate(blocks, axis=1)
    return pcm / 32768.0 if pcm.dtype == np.int16 else pcm



# ---- Runner ----------------------------------------------------------------------------------

def test_runner_tone_gain_resample_mp3_counts_every_stage():
    sink = MemorySink()
    stats = Runner(tone(1.0), mp3_chain(), sink).run()
    n_in = 48000
    n_out = expected_output_samples(n_in, 48000, 44100)
    assert [s.name for s in stats.stages] == ["tonesource", "gain", "resample", "mp3_encoder",
                                              "memorysink"]
    assert stats["tonesource"].samples_out == n_in and stats["tonesource"].buffers_out == 48
    assert stats["gain"].samples_in == stats["gain"].samples_out == n_in
    assert stats["resample"].samples_in == n_in and stats["resample"].samples_out == n_out
    assert stats["mp3_encoder"].samples_in == n_out
    assert stats["memorysink"].buffers_in == len(sink.packets) == stats["mp3_encoder"].buffers_out
    assert sink.finalized
    packets = sink.packets
    # pts continuous, and the last packet ends exactly at the end of the input.
    for a, b in zip(packets, packets[1:]):
        assert b.pts == a.pts + a.duration
    assert packets[-1].pts + packets[-1].duration == n_out
    pcm = decode_mp3(packets)
    assert n_out <= pcm.shape[1] <= n_out + 1152 + 1105 + 529
    assert abs(dominant_frequency(pcm[0, 4000:40000], 44100) - 1000) < 3
    # gain -6 dB of amplitude 0.5 -> ~0.25 peak
    assert 0.22 < np.max(np.abs(pcm[:, 4000:40000])) < 0.28


def test_runner_and_async_runner_give_identical_mp3_bytes():
    sync_sink, async_sink = MemorySink(), MemorySink()
    Runner(tone(0.5), mp3_chain(), sync_sink).run()
    asyncio.run(AsyncRunner(tone(0.5), mp3_chain(), async_sink).run())
    assert sync_sink.data() and sync_sink.data() == async_sink.data()
    assert [p.pts for p in sync_sink.packets] == [p.pts for p in async_sink.packets]


def test_async_runner_in_the_loop_with_async_source_and_sink_gives_the_same_pcm():
    chain = lambda: [make_processor_node("pcm", Processor.fir([0.5, 0.3, 0.2], FMT)),  # noqa: E731
                     make_processor_node("pcm", Processor.resample(FMT, OUT, out_chunk_samples=500))]
    reference = MemorySink()
    Runner(tone(0.3, chunk=777), chain(), reference).run()

    async def frames():
        for frame in tone(0.3, chunk=777).frames():
            await asyncio.sleep(0)
            yield frame

    class AsyncSink:
        def __init__(self):
            self.frames, self.finalized = [], 0

        async def push(self, buf):
            await asyncio.sleep(0)
            self.frames.append(buf)

        async def finalize(self):
            self.finalized += 1

    sink = AsyncSink()
    stats = asyncio.run(AsyncRunner(frames(), chain(), sink, offload=False).run())
    got = np.concatenate([f.planar() for f in sink.frames], axis=1)
    np.testing.assert_array_equal(got, reference.pcm())
    assert sink.finalized == 1
    assert stats.stages[-1].buffers_in == len(sink.frames)
    assert [f.samples for f in sink.frames][:-1] == [500] * (len(sink.frames) - 1)


def test_runner_with_a_list_source_no_nodes_and_a_node_sink():
    frames = list(tone(0.1).frames())
    inner = MemorySink()
    stats = Runner(frames, [], make_sink_node(inner, "pcm")).run()
    assert inner.frames == frames and inner.finalized
    assert stats.stages[0].buffers_out == stats.stages[-1].buffers_in == len(frames)


def test_runner_finalizes_once_and_runs_once():
    class Counting(MemorySink):
        calls = 0

        def finalize(self):
            Counting.calls += 1
            super().finalize()

    runner = Runner(tone(0.1), [make_identity_node()], Counting())
    runner.run()
    assert Counting.calls == 1
    with pytest.raises(FlowError, match="a Runner runs once"):
        runner.run()


def test_runner_detects_a_node_that_never_reaches_eof():
    class Stuck:
        def push(self, buf):
            pass

        def pull(self):
            raise BlockingIOError

    runner = Runner(tone(0.05), [make_identity_node(), make_python_node(Stuck(), "pcm", "pcm",
                                                                         name="stuck")],
                    MemorySink(), max_idle_pulls=50)
    with pytest.raises(FlowError, match="node 'stuck' answered AGAIN 50 times in a row after its "
                                        "end of input without reaching EOF"):
        runner.run()


def test_runner_adds_the_node_name_to_a_node_error():
    wrong = make_processor_node("pcm", Processor.gain(AudioFormat(48000, 2, "s16")))
    with pytest.raises(FormatError) as caught:
        Runner(tone(0.05), [make_identity_node(), wrong], MemorySink()).run()
    assert "expected 48000 Hz 2 ch s16 planar, got 48000 Hz 2 ch f32 planar" in str(caught.value)
    assert any("in node 'gain' (stage 1 of pipeline 'run')" in note
               for note in caught.value.__notes__)


def test_runner_checks_the_wiring_at_build_time():
    packets_source = make_source_node([], kind="packet", name="pkts")
    with pytest.raises(ConfigError, match="run: node 'pkts' outputs packet buffers but node "
                                          "'gain' takes pcm buffers"):
        Runner(packets_source, [make_processor_node("gain", {})], MemorySink())
    with pytest.raises(ConfigError, match=r"run: node 'tone' outputs 48000 Hz 2 ch f32 planar but "
                                          r"node 'gain' takes 44100 Hz 2 ch f32 planar"):
        Runner(make_source_node(tone(0.1), name="tone"),
               [make_processor_node("pcm", Processor.gain(OUT))], MemorySink())


# ---- Pipeline --------------------------------------------------------------------------------

def test_pipeline_kind_mismatch_names_both_nodes():
    enc = make_encoder_node("wav", {"input_format": FMT})
    with pytest.raises(ConfigError, match="^pipeline 'pipeline': node 'wav_encoder' outputs packet "
                                          "buffers but node 'identity' takes pcm buffers$"):
        Pipeline([enc, make_identity_node("pcm")])
    with pytest.raises(ConfigError, match="node 'memorysink' has no output \\(it is a sink\\) "
                                          "but node 'identity' follows it"):
        Pipeline([make_sink_node(MemorySink()), make_identity_node()])
    with pytest.raises(ConfigError, match="node 'tone' takes no input \\(it is a source\\) but "
                                          "follows node 'identity'"):
        Pipeline([make_identity_node(), make_source_node(tone(0.1), name="tone")])
    with pytest.raises(ConfigError, match="needs at least one node"):
        Pipeline([])


def test_pipeline_format_mismatch_names_both_nodes_and_formats():
    resample = make_processor_node("pcm", Processor.resample(FMT, OUT))
    gain = make_processor_node("pcm", Processor.gain(AudioFormat(48000, 1, "f32")))
    with pytest.raises(ConfigError, match=r"^pipeline 'p': node 'resample' outputs 44100 Hz 2 ch "
                                          r"f32 planar but node 'gain' takes 48000 Hz 1 ch f32 "
                                          r"planar: sample rate and channels must agree \(put a "
                                          r"resample or channel_map node between them\)$"):
        Pipeline([resample, gain], name="p")


def test_pipelines_nest_and_behave_as_nodes():
    inner = Pipeline([make_identity_node(), make_processor_node("pcm",
                                                                Processor.gain(FMT, gain=2.0))])
    outer = Pipeline([inner, make_processor_node("pcm", Processor.delay(1.0, FMT))])
    frames = list(tone(0.1, chunk=480).frames())
    assert outer.pull() is AGAIN
    out = []
    for frame in frames:
        outer.push(frame)
        while (item := outer.pull()) is not AGAIN:
            out.append(item)
    outer.push(None)
    while (item := outer.pull()) is not EOF:
        out.append(item)
    assert outer.pull() is EOF
    x = np.concatenate([f.planar() for f in frames], axis=1)
    y = np.concatenate([f.planar() for f in out], axis=1)
    assert y.shape[1] == x.shape[1] + 48
    np.testing.assert_allclose(y[:, 48:], 2 * x, atol=1e-6)
    assert outer.stats()["samples_in"] == x.shape[1]
    assert [name for name, _ in outer.stage_stats()] == ["pipeline", "delay"]
    with pytest.raises(FlowError, match="pipeline 'pipeline': push after end of input"):
        outer.push(frames[0])


def test_pipeline_with_a_source_head_reads_one_buffer_at_a_time():
    reads = []

    def generated():
        for frame in tone(0.1, chunk=480).frames():
            reads.append(frame)
            yield frame

    pipe = Pipeline([make_source_node(generated(), name="gen"), make_identity_node()])
    first = pipe.pull()
    assert isinstance(first, AudioFrame) and len(reads) == 1
    rest = []
    while (item := pipe.pull()) is not EOF:
        rest.append(item)
    assert len(rest) + 1 == len(reads) == 10


def test_runner_file_round_trip_decode_encode(tmp_path):
    src = tmp_path / "in.mp3"
    writer = AudioFileWriter(str(src))
    Runner(tone(1.0), [], writer).run()
    dst = tmp_path / "out.flac"
    reader = AudioFileReader(str(src), mode="packet")
    stats = Runner(reader, [make_decoder_node("mp3"), make_encoder_node("flac")],
                   AudioFileWriter(str(dst))).run()
    assert stats["mp3_decoder"].samples_out == stats["flac_encoder"].samples_in
    with av.open(str(dst)) as container:
        stream = container.streams.audio[0]
        assert stream.codec_context.sample_rate == 48000 and stream.codec_context.channels == 2
        decoded = sum(frame.samples for frame in container.decode(stream))
    assert decoded == stats["mp3_decoder"].samples_out
    assert abs(decoded - 48000) <= 1152 + 1105 + 529


def test_a_failed_run_never_leaves_a_short_file_under_the_final_name(tmp_path):
    class FailsLater:
        def __init__(self):
            self.held, self.count = [], 0

        def push(self, buf):
            self.count += buf is not None
            if self.count == 5:
                raise RuntimeError("the fifth buffer is bad")
            self.held.append(buf)

        def pull(self):
            return self.held.pop(0) if self.held else None

    path = tmp_path / "out.wav"
    with pytest.raises(RuntimeError, match="the fifth buffer is bad"):
        with AudioFileWriter(path) as writer:
            Runner(ToneSource(seconds=1, chunk_samples=1000),
                   [make_python_node(FailsLater(), "pcm", "pcm")], writer).run()
    assert not path.exists()
    assert (tmp_path / "out.wav.part").stat().st_size > 0     # what was written, marked incomplete
    writer.close()                                            # closing again changes nothing
    assert not path.exists()
