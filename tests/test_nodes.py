"""Node protocol for every node type; identity, python, tap, codec and fork-join nodes."""

from __future__ import annotations

import numpy as np
import pytest

from flowengine.audio.buffers import AudioFrame, Packet
from flowengine.ops.codecs.configs import Mp3EncoderConfig, WavDecoderConfig, WavEncoderConfig
from flowengine.ops.codecs.encoder import Encoder
from flowengine.errors import CodecError, ConfigError, FlowError, FormatError
from flowengine.audio.format import AudioFormat
from flowengine.ops.node import AGAIN, EOF
from flowengine.ops import (
    make_decoder_node, make_encoder_node, make_fork_join_node, make_identity_node,
    make_processor_node, make_python_node, make_sink_node, make_source_node, make_tap_node,
)
from flowengine.ops.pipeline import Pipeline
from flowengine.ops.processors import Processor

FMT = AudioFormat(48000, 2, "f32")
MONO = AudioFormat(48000, 1, "f32")


def sine(n: int, fmt: AudioFormat = FMT, freq: float = 440.0, seed: int = 0) -> np.ndarray:
    t = np.arange(n) / fmt.sample_rate
    rng = np.random.default_rng(seed)
    rows = [0.4 * np.sin(2 * np.pi * freq * (c + 1) * t) + 0.05 * rng.standard_normal(n)
            for c in range(fmt.channels)]
    return np.array(rows, dtype=np.float32)


def frames_of(signal: np.ndarray, block: int, fmt: AudioFormat = FMT) -> list[AudioFrame]:
    return [AudioFrame(signal[:, i:i + block], fmt, pts=i)
            for i in range(0, signal.shape[1], block)]


def drain(node, limit: int = 100000) -> list:
    """Pull until AGAIN or EOF (bounded)."""
    out = []
    for _ in range(limit):
        item = node.pull()
        if item is AGAIN or item is EOF:
            return out
        out.append(item)
    raise AssertionError("node never stopped producing")


def run_node(node, buffers) -> list:
    out = []
    for buf in buffers:
        node.push(buf)
        out += drain(node)
    node.push(None)
    out += drain(node)
    assert node.pull() is EOF
    return out


def joined(frames: list[AudioFrame]) -> np.ndarray:
    return np.concatenate([f.planar() for f in frames], axis=1)


class ListSink:
    def __init__(self) -> None:
        self.items: list = []
        self.finalized = 0

    def push(self, buf) -> None:
        self.items.append(buf)

    def finalize(self) -> None:
        self.finalized += 1


# ---- the protocol, for every node type ------------------------------------------------------

def _wav_packets(n: int = 3000) -> list[Packet]:
    enc = Encoder("wav", WavEncoderConfig(FMT, chunk_samples=1000))
    enc.put_frame(sine(n))
    out = []
    while (p := enc.get_packet(force=True)) is not None:
        out.append(p)
    return out


class Doubler:
    """A user object: emits each frame twice."""

    def __init__(self) -> None:
        self.queue: list = []

    def push(self, buf) -> None:
        self.queue += [buf, buf]

    def pull(self):
        return self.queue.pop(0) if self.queue else None


NODE_CASES = {
    # name: (factory, first input, whether the first input alone gives output)
    "identity": (lambda: make_identity_node("pcm"), lambda: frames_of(sine(100), 100)[0], True),
    "python": (lambda: make_python_node(Doubler(), "pcm", "pcm"),
               lambda: frames_of(sine(100), 100)[0], True),
    "tap": (lambda: make_tap_node(ListSink()), lambda: frames_of(sine(100), 100)[0], True),
    "processor": (lambda: make_processor_node("pcm", Processor.delay(1.0, FMT)),
                  lambda: frames_of(sine(100), 100)[0], True),
    "encoder": (lambda: make_encoder_node("mp3", Mp3EncoderConfig(FMT)),
                lambda: frames_of(sine(100), 100)[0], False),
    "decoder": (lambda: make_decoder_node("wav", WavDecoderConfig(FMT, chunk_samples=1500)),
                lambda: _wav_packets()[0], False),
    "fork_join": (lambda: make_fork_join_node(
        [[make_processor_node("pcm", Processor.gain(FMT, gain=0.5, out_chunk_samples=64))],
         [make_identity_node()]]), lambda: frames_of(sine(100), 100)[0], True),
    "pipeline": (lambda: Pipeline([make_identity_node(), make_encoder_node(
        "wav", WavEncoderConfig(FMT, chunk_samples=256))]),
        lambda: frames_of(sine(100), 100)[0], False),
    "sink": (lambda: make_sink_node(ListSink(), "pcm"), lambda: frames_of(sine(100), 100)[0],
             False),
}


@pytest.mark.parametrize("case", sorted(NODE_CASES))
def test_node_protocol(case):
    factory, first_input, gives_output = NODE_CASES[case]
    node = factory()
    assert node.pull() is AGAIN                       # nothing pushed yet
    node.push(first_input())
    got = drain(node)
    assert bool(got) == gives_output                  # AGAIN before enough input
    node.push(None)
    got += drain(node)
    assert node.pull() is EOF                         # flushed and done ...
    assert node.pull() is EOF                         # ... and it stays done
    if node.output_kind is not None:
        assert got, "the end of input drained nothing"
    with pytest.raises(FlowError, match="push after end of input"):
        node.push(first_input())


def test_identity_passes_the_same_objects_in_order():
    frames = frames_of(sine(1000), 100)
    node = make_identity_node("pcm")
    assert run_node(node, frames) == frames
    assert all(a is b for a, b in zip(run_node(make_identity_node(), frames), frames))
    assert node.stats()["samples_in"] == node.stats()["samples_out"] == 1000


def test_identity_refuses_the_other_kind():
    node = make_identity_node("packet")
    with pytest.raises(FormatError, match=r"node 'identity': expected a packet buffer \(Packet\), "
                                          r"got AudioFrame"):
        node.push(frames_of(sine(10), 10)[0])
    with pytest.raises(FormatError, match="kind must be one of 'pcm', 'packet', got 'audio'"):
        make_identity_node("audio")


def test_identity_reset_starts_a_new_stream():
    node = make_identity_node()
    run_node(node, frames_of(sine(10), 10))
    node.reset()
    frame = frames_of(sine(10), 10)[0]
    node.push(frame)
    assert node.pull() is frame


# ---- python node conventions -----------------------------------------------------------------

class Convention:
    """pull(): None, BlockingIOError or EOFError, as scripted; counts flush and pushes."""

    def __init__(self, script: list) -> None:
        self.script = list(script)
        self.pushed: list = []
        self.flushed = 0

    def push(self, buf) -> None:
        self.pushed.append(buf)

    def flush(self) -> None:
        self.flushed += 1

    def pull(self):
        step = self.script.pop(0) if self.script else None
        if isinstance(step, type) and issubclass(step, BaseException):
            raise step()
        return step


def test_python_node_none_is_again_before_flush_and_eof_after():
    obj = Convention([None, None])
    node = make_python_node(obj, "pcm", "pcm")
    assert node.pull() is AGAIN
    node.push(None)
    assert obj.flushed == 1
    assert node.pull() is EOF
    assert node.pull() is EOF
    assert obj.script == []        # pulled once before and once after the flush, then no more


def test_python_node_blocking_io_error_is_again_and_eof_error_is_eof():
    frame = frames_of(sine(10), 10)[0]
    obj = Convention([BlockingIOError, frame, EOFError])
    node = make_python_node(obj, "pcm", "pcm")
    assert node.pull() is AGAIN
    assert node.pull() is frame
    assert node.pull() is EOF                 # EOFError ends it even before push(None)
    assert node.pull() is EOF
    assert node.stats()["buffers_out"] == 1


def test_python_node_without_flush_gets_push_none():
    class NoFlush:
        def __init__(self):
            self.got = []

        def push(self, buf):
            self.got.append(buf)

        def pull(self):
            return None

    obj = NoFlush()
    node = make_python_node(obj, "pcm", "pcm")
    frame = frames_of(sine(10), 10)[0]
    node.push(frame)
    node.push(None)
    assert obj.got == [frame, None]
    assert node.pull() is EOF


def test_python_node_checks_its_output_kind():
    node = make_python_node(Convention([np.zeros((2, 10), np.float32)]), "pcm", "pcm", name="mine")
    with pytest.raises(FormatError, match=r"python node 'mine' output: expected a pcm buffer "
                                          r"\(AudioFrame\), got ndarray"):
        node.pull()


def test_python_node_reset_needs_obj_reset():
    node = make_python_node(Convention([]), "pcm", "pcm", name="mine")
    with pytest.raises(NotImplementedError, match="python node 'mine': Convention has no reset"):
        node.reset()


def test_python_node_doubles_through_a_pipeline():
    frames = frames_of(sine(500), 100)
    out = run_node(Pipeline([make_python_node(Doubler(), "pcm", "pcm"), make_identity_node()]),
                   frames)
    assert out == [f for f in frames for _ in range(2)]


# ---- tap -------------------------------------------------------------------------------------

def test_tap_copies_every_buffer_and_finalizes_its_sink_once():
    sink = ListSink()
    tap = make_tap_node(sink)
    frames = frames_of(sine(1000), 128)
    assert run_node(tap, frames) == frames
    assert sink.items == frames
    assert sink.finalized == 1
    assert tap.pull() is EOF and sink.finalized == 1


def test_tap_into_a_sink_node_drives_it_to_eof():
    inner = ListSink()
    tap = make_tap_node(make_sink_node(inner, "pcm"))
    run_node(tap, frames_of(sine(300), 100))
    assert len(inner.items) == 3 and inner.finalized == 1


# ---- processor / codec adapters --------------------------------------------------------------

def test_processor_node_matches_the_processor_in_chunks():
    x = sine(4000)
    node = make_processor_node("pcm", Processor.fir([0.5, 0.25, 0.125], FMT))
    out = joined(run_node(node, frames_of(x, 333)))
    ref = np.stack([np.convolve(ch.astype(np.float64), [0.5, 0.25, 0.125])[:4000] for ch in x])
    np.testing.assert_allclose(out, ref, atol=1e-6)
    assert node.input_format == FMT and node.output_format == FMT


def test_processor_node_from_a_registry_dict():
    x = sine(1000)
    for node in (make_processor_node("gain", {"gain_db": -6.0, "format": FMT}),
                 make_processor_node("pcm", {"op": "gain", "gain_db": -6.0})):
        out = joined(run_node(node, frames_of(x, 256)))
        np.testing.assert_allclose(out, x * 10 ** (-6 / 20), rtol=1e-6)
    with pytest.raises(ConfigError, match="operator 'mp3_encoder' is a encoder, not a processor"):
        make_processor_node("mp3_encoder", {})
    with pytest.raises(ConfigError, match="the config dict needs an 'op' key"):
        make_processor_node("pcm", {"gain": 2.0})


def test_encoder_and_decoder_nodes_round_trip_wav_bit_exact():
    fmt = AudioFormat(44100, 2, "s16")
    x = (sine(5000) * 32767).astype(np.int16)
    enc = make_encoder_node("wav", {"input_format": fmt, "chunk_samples": 700})
    packets = run_node(enc, frames_of(x, 1000, fmt))
    assert sum(p.duration for p in packets) == 5000
    assert [p.pts for p in packets] == list(range(0, 5000, 700))
    dec = make_decoder_node("wav", {"output_format": fmt, "chunk_samples": 1024})
    out = run_node(dec, packets)
    assert [f.samples for f in out] == [1024] * 4 + [904]
    assert [f.pts for f in out] == list(range(0, 5000, 1024))
    np.testing.assert_array_equal(joined(out), x)
    assert dec.stats()["samples_out"] == 5000


def _mp3_packets(x: np.ndarray, fmt: AudioFormat) -> list[Packet]:
    return run_node(make_encoder_node("mp3", {"input_format": fmt}), frames_of(x, 4096, fmt))


def _corrupt(packet: Packet) -> Packet:
    return Packet(b"\xff\xfb" + bytes(10), packet.time_base_num, packet.time_base_den,
                  packet.pts, packet.dts, packet.duration, packet.flags, packet.codec)


def test_decoder_node_skip_counts_bad_packets_and_keeps_decoding():
    x = sine(48000, MONO)
    packets = _mp3_packets(x, MONO)
    packets[10] = _corrupt(packets[10])
    node = make_decoder_node("mp3", {"chunk_samples": 1152}, on_error="skip")
    out = run_node(node, packets)
    assert node.stats()["errors"] == 1
    # The damaged frame is 1152 samples of silence: the stream keeps its length.
    assert sum(f.samples for f in out) == len(packets) * 1152
    assert (node.damage.frames, node.damage.samples) == (1, 1152)
    assert node.on_error == "skip"


def test_decoder_node_fail_raises_codec_error_naming_the_offset():
    packets = _mp3_packets(sine(20000, MONO), MONO)
    packets[5] = _corrupt(packets[5])
    node = make_decoder_node("mp3", None, on_error="fail")
    with pytest.raises(CodecError, match=r"mp3 decoder, stream '0': damaged frame at byte of the "
                                         r"stream's packets \d+ \([\d.]+ s\)"):
        run_node(node, packets)
    with pytest.raises(ConfigError, match="on_error must be 'fail' or 'skip', got 'ignore'"):
        make_decoder_node("mp3", None, on_error="ignore")


def test_codec_config_dict_with_an_unknown_field():
    with pytest.raises(ConfigError, match="mp3 encoder: unknown parameter\\(s\\) 'bitrat'; valid "
                                          "parameters: input_format, chunk_samples, bitrate"):
        make_encoder_node("mp3", {"bitrat": 1})


# ---- sources and sinks -----------------------------------------------------------------------

def test_source_node_reads_an_iterable_then_eof():
    frames = frames_of(sine(500), 100)
    node = make_source_node(frames)
    assert node.input_kind is None and node.output_kind == "pcm"
    got = [node.pull() for _ in range(5)]
    assert got == frames
    assert node.pull() is EOF and node.pull() is EOF
    node.reset()                       # a list can be read again
    assert node.pull() is frames[0]
    with pytest.raises(FormatError, match="takes no input buffers"):
        make_source_node(frames).push(frames[0])


def test_source_node_push_none_stops_early_and_checks_kind():
    node = make_source_node(iter(frames_of(sine(500), 100)))
    node.pull()
    node.push(None)
    assert node.pull() is EOF
    bad = make_source_node([b"bytes"], name="bad")
    with pytest.raises(FormatError, match=r"source 'bad' output: expected a pcm buffer"):
        bad.pull()


# ---- fork-join -------------------------------------------------------------------------------

def _branches():
    # Different block sizes in the two branches: the join must align them by sample position.
    return [[make_processor_node("pcm", Processor.gain(FMT, gain=0.5, out_chunk_samples=300))],
            [make_processor_node("pcm", Processor.gain(FMT, gain=-2.0, out_chunk_samples=700)),
             make_identity_node()]]


@pytest.mark.parametrize("reduce, weights, expected", [
    ("sum", None, lambda a, b: a + b),
    ("weighted_sum", [0.25, 3.0], lambda a, b: 0.25 * a + 3.0 * b),
    ("mean", None, lambda a, b: (a + b) / 2),
    ("max", None, np.maximum),
    ("min", None, np.minimum),
    ("concat", None, lambda a, b: np.concatenate([a, b])),
])
def test_fork_join_reduce_matches_numpy(reduce, weights, expected):
    x = sine(5000).astype(np.float64)
    node = make_fork_join_node(_branches(), reduce=reduce, weights=weights)
    out = run_node(node, frames_of(sine(5000), 512))
    ref = expected(x * 0.5, x * -2.0)
    np.testing.assert_allclose(joined(out), ref, atol=1e-6)
    assert [f.pts for f in out] == list(np.cumsum([0] + [f.samples for f in out[:-1]]))
    assert node.output_format.channels == (4 if reduce == "concat" else 2)
    assert node.stats()["samples_in"] == node.stats()["samples_out"] == 5000


def test_fork_join_pads_a_shorter_branch_with_zeros():
    x = sine(1000)
    node = make_fork_join_node([[make_identity_node()],
                                [make_processor_node("pcm", Processor.delay(2.0, FMT))]])
    out = joined(run_node(node, frames_of(x, 256)))
    delay = 96                                 # 2 ms at 48 kHz
    padded = np.concatenate([x, np.zeros((2, delay), np.float32)], axis=1)
    delayed = np.concatenate([np.zeros((2, delay), np.float32), x], axis=1)
    np.testing.assert_allclose(out, padded + delayed, atol=1e-6)


def test_fork_join_length_mismatch_can_be_an_error():
    node = make_fork_join_node([[make_identity_node()],
                                [make_processor_node("pcm", Processor.delay(2.0, FMT))]],
                               on_length_mismatch="error", name="fj")
    with pytest.raises(FlowError, match=r"fork-join 'fj': branches ended with different numbers "
                                        r"of samples still to join \(branch 0: 0, branch 1: 96\)"):
        run_node(node, frames_of(sine(1000), 256))


def test_fork_join_configuration_errors():
    with pytest.raises(ConfigError, match="reduce must be one of sum, weighted_sum, mean, max, "
                                          "min, concat, got 'avg'"):
        make_fork_join_node([[make_identity_node()]], reduce="avg")
    with pytest.raises(ConfigError, match=r"weighted_sum needs one weight per branch \(2\), got 1"):
        make_fork_join_node([[make_identity_node()], [make_identity_node()]],
                            reduce="weighted_sum", weights=[1.0])
    with pytest.raises(ConfigError, match="branch 0 must take and give pcm, it goes packet -> "
                                          "packet"):
        make_fork_join_node([[make_identity_node("packet")]])


def test_fork_join_branches_must_agree_on_rate():
    to_44k = Processor.resample(FMT, AudioFormat(44100, 2, "f32"))
    node = make_fork_join_node([[make_identity_node()], [make_processor_node("pcm", to_44k)]],
                               name="fj")
    with pytest.raises(FormatError, match="fork-join 'fj': branch 1 outputs 44100 Hz but branch "
                                          "0 outputs 48000 Hz"):
        run_node(node, frames_of(sine(4800), 4800))
