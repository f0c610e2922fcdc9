"""Routing between replicas, without sockets: sticky and balanced routers, the ordered stage's
stamp, the ordered merge after it, the ``oq``/``oe`` wire keys, and the plan's ordered checks."""

from __future__ import annotations

import re
from fractions import Fraction

import msgpack
import numpy as np
import pytest

from engine_ops import op
from flowengine.audio.buffers import AudioFrame, Packet
from flowengine.config.model import RunConfig
from flowengine.engine import build_plan
from flowengine.engine.plan import auto_replicas
from flowengine.engine.wire.protocol import InboxState, ProtocolError, RunEnd, StreamCaps, \
    StreamData, StreamEnd
from flowengine.engine.worker.routing import BALANCED, HASHED, KERNEL_SLACK_MESSAGES, STICKY, \
    BalancedRouter, OrderedMerge, OrderStamp, StickyRouter, reorder_window, sticky_replica
from flowengine.engine.wire.codec import Caps, decode, encode_caps, encode_eof, encode_eos, encode_frame, \
    encode_packet
from flowengine.errors import ConfigError, FlowError, WireError
from flowengine.audio.format import AudioFormat

FMT = AudioFormat(8000, 1, "f32", True)


def frame(stream: str, start: int, n: int = 4) -> AudioFrame:
    return AudioFrame(np.arange(start, start + n, dtype=np.float32)[None, :], FMT, start,
                      stream=stream)


# ------------------------------------------------------------------------------ wire

def test_order_keys_round_trip_and_stay_optional():
    message = decode(encode_frame(frame("a", 8), 3, sender="g:1", order=17))
    assert (message.seq, message.order, message.sender) == (3, 17, "g:1")
    assert decode(encode_frame(frame("a", 8), 3)).order is None
    packet = Packet(b"\x01\x02", 1, 44100, 0, 0, 1152, 1, "mp3", "a")
    assert decode(encode_packet(packet, 0, order=5)).order == 5
    eos = decode(encode_eos("a", 9, messages=4, samples=16, order_end=12))
    assert eos.info == {"messages": 4, "samples": 16, "order_end": 12}
    assert decode(encode_eos("a", 9, messages=4)).info == {"messages": 4, "samples": 0}


@pytest.mark.parametrize("value, problem", [
    (-1, "bad value for order: -1 (expected >= 0)"),
    ("3", "wrong type for order (expected int or nil, got str)"),
])
def test_bad_order_field_is_a_wire_error(value, problem):
    header, payload = encode_frame(frame("a", 0), 0)
    fields = msgpack.unpackb(header)
    fields[5] = value      # version, kind, stream, seq, sender, order, ...
    with pytest.raises(WireError, match=re.escape(f"pcm message: {problem}")):
        decode([msgpack.packb(fields), payload])


def test_bad_order_end_is_a_wire_error():
    fields = msgpack.unpackb(encode_eos("a", 0, messages=0)[0])
    fields["oe"] = -2
    with pytest.raises(WireError, match=r"eos message: bad value for 'oe': -2"):
        decode([msgpack.packb(fields)])
    with pytest.raises(WireError, match="order must be >= 0, got -1"):
        encode_frame(frame("a", 0), 0, order=-1)


# --------------------------------------------------------------------------- routers

def test_hashed_router_agrees_with_every_process():
    router = StickyRouter(3, hashed=True, has_room=lambda replica: replica == 1)
    choices = {f"s{i}": router.replica(f"s{i}") for i in range(30)}
    assert choices == {s: sticky_replica(s, 3) for s in choices}   # room does not matter
    assert set(choices.values()) == {0, 1, 2}
    with pytest.raises(ConfigError, match="at least one replica, got 0"):
        StickyRouter(0)


def test_sticky_router_puts_a_new_stream_on_the_replica_with_fewest_open_streams():
    router = StickyRouter(3)
    assert [router.replica(f"s{i}") for i in range(6)] == [0, 1, 2, 0, 1, 2]
    assert router.replica("s4") == 1                     # kept while the stream is open
    router.forget("s1")
    router.forget("s4")                                  # replica 1 now has none open
    assert router.peek("s1") is None and router.open == [2, 0, 2]
    assert [router.replica(s) for s in ("s6", "s7", "s8")] == [1, 1, 0]
    assert router.assigned == [3, 4, 2] and router.open == [3, 2, 2]


def test_sticky_router_prefers_a_replica_with_room_and_says_which_streams_have_room():
    room = {0: False, 1: True}
    router = StickyRouter(2, has_room=room.__getitem__)
    assert router.has_room_for("new")                    # replica 1 could take it
    assert [router.replica(s) for s in ("a", "b", "c")] == [1, 1, 1]   # 0 is full
    room[0] = True
    assert router.replica("d") == 0                      # fewest open among those with room
    room[1] = False
    assert not router.has_room_for("a") and router.has_room_for("d")
    room[0] = False
    assert not router.has_room_for("e")                  # nowhere to put a new stream
    assert router.replica("e") == 0                      # none has room: fewest open


def test_balanced_router_round_robin_over_replicas_with_room():
    router = BalancedRouter("src:0", 3)
    assert [router.choose([True, True, True]) for _ in range(4)] == [0, 1, 2, 0]
    assert router.choose([True, False, True]) == 2       # 1 is full: skipped
    assert router.choose([False, True, False]) == 1
    assert router.choose([False, False, False]) is None  # nobody has room: the caller waits


def test_balanced_router_sends_caps_and_eos_everywhere_and_numbers_the_stream():
    router = BalancedRouter("src:0", 2)
    caps = Caps.for_frame(frame("a", 0))
    inboxes = [InboxState(["src:0"]), InboxState(["src:0"])]
    for replica, frames in router.caps("a", caps):
        assert isinstance(inboxes[replica].receive(decode(frames))[0], StreamCaps)
    orders = []
    for i, replica in enumerate([0, 0, 1, 0, 1]):
        message = decode(router.data(replica, frame("a", 4 * i)))
        orders.append((replica, message.order))
        # each replica sees a protocol-correct part: its own contiguous seq
        (event,) = inboxes[replica].receive(message)
        assert isinstance(event, StreamData)
    assert orders == [(0, 0), (0, 1), (1, 2), (0, 3), (1, 4)]
    ends = [(r, decode(f)) for r, f in router.eos("a")]
    assert [(r, m.info) for r, m in ends] == [
        (0, {"messages": 3, "samples": 12, "order_end": 5}),
        (1, {"messages": 2, "samples": 8, "order_end": 5})]
    for replica, message in ends:
        assert isinstance(inboxes[replica].receive(message)[0], StreamEnd)
    assert router.sent == [3, 2]


# ----------------------------------------------------------------------- order stamp

def test_order_stamp_gives_the_input_place_and_pts():
    stamp = OrderStamp("gain")
    incoming = AudioFrame(np.zeros((1, 4), np.float32), FMT, 800, Fraction(1, 8000), "a")
    stamp.take("a", 7, incoming)
    out = AudioFrame(np.zeros((1, 4), np.float32), AudioFormat(16000, 1, "f32", True), 0,
                     Fraction(1, 16000), "a")
    assert stamp.stamp("a", out) == 7
    assert out.pts == 1600  # 0.1 s in the output's time base
    with pytest.raises(FlowError, match=r"stage 'gain' stream 'a': an ordered stage needs one "
                                        r"output per input, but its operator gave a second "
                                        r"buffer for input oq 7"):
        stamp.stamp("a", out)
    stamp.done("a")
    stamp.take("a", 8, incoming)
    with pytest.raises(FlowError, match="gave none for oq 8"):
        stamp.done("a")
    with pytest.raises(FlowError, match="gave at the end of the stream"):
        stamp.stamp("a", out)
    with pytest.raises(ProtocolError, match="stream 'a' came without its order index"):
        stamp.take("a", None, incoming)
    stamp.end("a", 9)
    assert stamp.order_end("a") == 9 and stamp.order_end("a") is None


# ---------------------------------------------------------------------- ordered merge

class Parts:
    """Replica parts of spread streams, fed through InboxState and OrderedMerge like a worker."""

    def __init__(self, replicas: int = 2, window: int = 8, others: tuple[str, ...] = ()) -> None:
        self.senders = [f"g:{r}" for r in range(replicas)]
        self.inbox = InboxState(self.senders + list(others))
        self.merge = OrderedMerge(self.senders, window, stage="g")
        self.seq: dict[tuple[str, str], int] = {}
        self.counts: dict[tuple[str, str], list[int]] = {}

    def _feed(self, frames: list, ) -> list:
        message = decode(frames)
        return self.merge.receive(self.inbox.receive(message), message.order,
                                  message.info.get("order_end"))

    def _next(self, sender: str, stream: str) -> int:
        seq = self.seq.get((sender, stream), 0)
        self.seq[(sender, stream)] = seq + 1
        return seq

    def caps(self, sender: str, stream: str) -> list:
        self.counts[(sender, stream)] = [0, 0]
        return self._feed(encode_caps(stream, self._next(sender, stream),
                                      Caps.for_frame(frame(stream, 0)), sender=sender))

    def data(self, sender: str, stream: str, order: int) -> list:
        counts = self.counts[(sender, stream)]
        counts[0] += 1
        counts[1] += 4
        return self._feed(encode_frame(frame(stream, 4 * order), self._next(sender, stream),
                                       sender=sender, order=order))

    def eos(self, sender: str, stream: str, end: int) -> list:
        messages, samples = self.counts[(sender, stream)]
        return self._feed(encode_eos(stream, self._next(sender, stream), messages=messages,
                                     samples=samples, sender=sender, order_end=end))

    def eof(self, sender: str) -> list:
        return self._feed(encode_eof(sender))


def starts(events: list) -> list[int]:
    return [e.buffer.pts for e in events if isinstance(e, StreamData)]


def test_merge_restores_order_opens_once_and_ends_once_after_every_part():
    parts = Parts()
    assert [type(e) for e in parts.caps("g:1", "a")] == [StreamCaps]
    assert parts.data("g:1", "a", 1) == []           # waits for 0
    assert parts.caps("g:0", "a") == []               # the stream is open already
    assert starts(parts.data("g:0", "a", 0)) == [0, 4]
    assert starts(parts.data("g:0", "a", 2)) == [8]
    assert parts.eos("g:0", "a", 4) == []             # g:1 still has a part open, 3 missing
    assert starts(parts.data("g:1", "a", 3)) == [12]
    (end,) = parts.eos("g:1", "a", 4)
    assert isinstance(end, StreamEnd) and (end.stream, end.messages, end.samples) == ("a", 4, 16)
    assert not isinstance(parts.eof("g:0")[-1], RunEnd)
    assert isinstance(parts.eof("g:1")[-1], RunEnd)


def test_merge_waits_for_a_replica_that_has_not_opened_yet():
    parts = Parts()
    parts.caps("g:0", "a")
    parts.data("g:0", "a", 0)
    assert parts.eos("g:0", "a", 2) == []   # every opened part ended, but seq 1 is missing
    parts.caps("g:1", "a")                  # ... it comes from the slow replica
    assert starts(parts.data("g:1", "a", 1)) == [4]
    assert isinstance(parts.eos("g:1", "a", 2)[0], StreamEnd)


def test_merge_ends_a_stream_whose_other_replica_had_nothing():
    parts = Parts()
    parts.caps("g:0", "a")
    parts.data("g:0", "a", 0)
    assert isinstance(parts.eos("g:0", "a", 1)[-1], StreamEnd)   # g:1 never opened "a"


def test_merge_reports_a_duplicate_naming_stream_and_seq():
    parts = Parts()
    parts.caps("g:0", "a")
    parts.caps("g:1", "a")
    parts.data("g:0", "a", 0)
    with pytest.raises(ProtocolError, match=r"stream 'a' after ordered stage 'g': duplicate "
                                            r"seq 0 \(delivered up to 0\)"):
        parts.data("g:1", "a", 0)


def test_merge_reports_a_gap_when_the_run_ends():
    parts = Parts()
    for sender in parts.senders:
        parts.caps(sender, "a")
    parts.data("g:0", "a", 0)
    parts.data("g:1", "a", 2)
    parts.eos("g:0", "a", 3)
    parts.eos("g:1", "a", 3)
    parts.eof("g:0")
    with pytest.raises(ProtocolError, match=r"stream 'a' after ordered stage 'g': gap at the "
                                            r"end: 1 message\(s\) missing, first missing seq 1"):
        parts.eof("g:1")


def test_merge_reports_window_overflow_and_disagreeing_ends():
    parts = Parts(window=4)
    parts.caps("g:0", "a")
    with pytest.raises(ProtocolError, match=r"reorder window overflow: seq 4 is 4 ahead of the "
                                            r"next expected 0 \(window 4\)"):
        parts.data("g:0", "a", 4)
    parts = Parts()
    for sender in parts.senders:
        parts.caps(sender, "a")
    parts.data("g:0", "a", 0)
    parts.eos("g:0", "a", 3)
    with pytest.raises(ProtocolError, match=r"eos from 'g:1' says 2 message\(s\), another "
                                            r"replica said 3"):
        parts.eos("g:1", "a", 2)


def test_merge_refuses_data_beyond_the_end_and_missing_order():
    parts = Parts()
    for sender in parts.senders:
        parts.caps(sender, "a")
    parts.data("g:1", "a", 1)
    parts.eos("g:0", "a", 2)
    with pytest.raises(ProtocolError, match=r"seq 2 from 'g:1' is beyond the end \(2"):
        parts.data("g:1", "a", 2)
    parts = Parts()
    parts.caps("g:0", "a")
    parts.counts[("g:0", "a")] = [1, 4]
    with pytest.raises(ProtocolError, match=r"data from 'g:0' without its order index"):
        parts._feed(encode_frame(frame("a", 0), parts._next("g:0", "a"), sender="g:0"))


def test_merge_ends_a_stream_only_after_the_eos_of_every_part_that_opened():
    # Every message is delivered before any eos: only the parts' ends can decide the end.
    parts = Parts()
    for sender in parts.senders:
        parts.caps(sender, "a")
    assert starts(parts.data("g:0", "a", 0) + parts.data("g:1", "a", 1)
                  + parts.data("g:0", "a", 2) + parts.data("g:1", "a", 3)) == [0, 4, 8, 12]
    assert parts.eos("g:0", "a", 4) == []          # g:1's part is still open
    assert parts.merge.open_streams == ["a"]
    (end,) = parts.eos("g:1", "a", 4)
    assert end == StreamEnd("g:0", "a", 4, 16)
    assert parts.merge.open_streams == []


def test_merge_refuses_an_eos_for_a_stream_it_never_saw_or_already_ended():
    # InboxState lets no eos through before its sender's caps; a merge fed otherwise must
    # still say what is wrong, by stream and sender.
    merge = OrderedMerge(["g:0", "g:1"], 8, stage="g")
    with pytest.raises(ProtocolError, match=r"^stream 'x' after ordered stage 'g': eos from "
                                            r"'g:1' for a stream no replica opened$") as error:
        merge.receive([StreamEnd("g:1", "x", 0, 0)], order_end=0)
    assert (error.value.problem, error.value.sender, error.value.stream) == ("order", "g:1", "x")
    parts = Parts()
    parts.caps("g:0", "a")
    parts.data("g:0", "a", 0)
    assert isinstance(parts.eos("g:0", "a", 1)[-1], StreamEnd)
    with pytest.raises(ProtocolError, match=r"^stream 'a' after ordered stage 'g': eos from "
                                            r"'g:1' after the stream ended$") as error:
        parts.merge.receive([StreamEnd("g:1", "a", 0, 0)], order_end=1)
    assert (error.value.problem, error.value.sender, error.value.stream) == ("ended", "g:1", "a")


def test_merge_says_what_is_missing_when_the_run_ends_before_a_stream_is_complete():
    # The eos says 3 messages, the last one never came.
    parts = Parts()
    for sender in parts.senders:
        parts.caps(sender, "a")
    parts.data("g:0", "a", 0)
    parts.data("g:1", "a", 1)
    for sender in parts.senders:
        assert parts.eos(sender, "a", 3) == []
    parts.eof("g:0")
    with pytest.raises(ProtocolError, match=r"^stream 'a' after ordered stage 'g': gap at the "
                                            r"end: 1 message\(s\) missing, first missing seq 2 "
                                            r"\(end 3\)$") as error:
        parts.eof("g:1")
    assert error.value.problem == "gap"
    # Every message came, but a part that opened never ended (InboxState would have refused
    # its eof; fed directly, the merge must not drop the stream without a word).
    merge = OrderedMerge(["g:0", "g:1"], 8, stage="g")
    caps = Caps.for_frame(frame("b", 0))
    merge.receive([StreamCaps("g:0", "b", caps, False), StreamCaps("g:1", "b", caps, False)])
    assert starts(merge.receive([StreamData("g:0", "b", 1, frame("b", 0))], order=0)) == [0]
    assert merge.receive([StreamEnd("g:0", "b", 1, 4)], order_end=1) == []
    with pytest.raises(ProtocolError, match=r"^stream 'b' after ordered stage 'g': the run "
                                            r"ended before the eos of the part from 'g:1'$") \
            as error:
        merge.receive([RunEnd()])
    assert (error.value.problem, error.value.stream) == ("incomplete", "b")
    # ... nor one that no part ended.
    merge = OrderedMerge(["g:0"], 8, stage="g")
    merge.receive([StreamCaps("g:0", "c", caps, False)])
    with pytest.raises(ProtocolError, match=r"^stream 'c' after ordered stage 'g': the run "
                                            r"ended before the eos of any replica's part$"):
        merge.receive([RunEnd()])


def test_merge_passes_other_senders_through():
    parts = Parts(others=("x:0",))
    parts.caps("x:0", "b")
    (event,) = parts.data("x:0", "b", 0)
    assert isinstance(event, StreamData) and event.sender == "x:0"
    assert parts.merge.open_streams == []


def test_many_streams_interleaved_at_random_come_out_in_order():
    rng = np.random.default_rng(5)
    parts = Parts(replicas=3, window=64)
    streams = [f"s{i}" for i in range(20)]
    # each stream's messages dealt out to replicas; each replica's queue keeps its own order
    queues = {s: [] for s in parts.senders}
    for stream in streams:
        for sender in parts.senders:
            queues[sender].append(("caps", stream, 0))
        for order in range(12):
            queues[parts.senders[rng.integers(3)]].append(("data", stream, order))
        for sender in parts.senders:
            queues[sender].append(("eos", stream, 12))
    delivered: dict[str, list[int]] = {s: [] for s in streams}
    ended = []
    while any(queues.values()):
        sender = rng.choice([s for s, q in queues.items() if q])
        kind, stream, order = queues[sender].pop(0)
        events = getattr(parts, kind)(sender, stream, order) if kind != "caps" else \
            parts.caps(sender, stream)
        for event in events:
            if isinstance(event, StreamData):
                delivered[event.stream].append(event.buffer.pts // 4)
            elif isinstance(event, StreamEnd):
                ended.append(event.stream)
    assert delivered == {s: list(range(12)) for s in streams}
    assert sorted(ended) == sorted(streams)


# ------------------------------------------------------------------------------ plan

def config(*stages: dict) -> RunConfig:
    return RunConfig.model_validate({"stages": list(stages)})


RAMP = {"name": "src", "op": op("RampSource")}
SINK = {"name": "sink", "op": op("CheckingSink"), "params": {"out_dir": "/nonexistent"}}


def test_plan_balances_into_ordered_stages_and_merges_after_them(tmp_path):
    plan = build_plan(config(RAMP, {"name": "g", "op": "gain", "replicas": 2, "ordered": True,
                                    "hwm": 8}, SINK), run_dir=str(tmp_path / "ordered"))
    src, gain, sink = plan.stages
    assert [e.routing for e in src.workers[0].outputs] == [BALANCED]
    assert src.workers[0].outputs[0].hwm == gain.hwm == 4   # the hwm split over the replicas
    assert [e.routing for e in src.workers[0].outputs] == [BALANCED]
    # The ordered replicas each send parts of a stream: all parts must meet downstream.
    assert [e.routing for e in gain.workers[0].outputs] == [HASHED]
    assert gain.ordered and all(w.ordered for w in gain.workers)
    assert sink.workers[0].merge_senders == ["g:0", "g:1"]
    assert sink.workers[0].reorder_window == reorder_window(2, 8, sink.workers[0].inbox_hwm) == \
        2 * 2 * (8 + sink.workers[0].inbox_hwm) + KERNEL_SLACK_MESSAGES
    assert gain.workers[0].merge_senders == []
    plain = build_plan(config(RAMP, {"name": "g", "op": "gain", "replicas": 2}, SINK),
                       run_dir=str(tmp_path / "plain"))
    assert [[e.routing for e in w.outputs] for s in plain.stages for w in s.workers] == \
        [[STICKY], [STICKY], [STICKY], []]   # each sender alone with its streams: it chooses
    restarting = build_plan(config(RAMP, {"name": "g", "op": "gain", "replicas": 2,
                                          "restart": "on-failure"}, SINK),
                            run_dir=str(tmp_path / "restarting"))
    # A replacement must continue its predecessor's streams on the same replicas.
    assert [[e.routing for e in w.outputs] for s in restarting.stages for w in s.workers] == \
        [[STICKY], [HASHED], [HASHED], []]


def test_replicas_auto_is_the_core_count(tmp_path):
    plan = build_plan(config(RAMP, {"name": "g", "op": "gain", "replicas": "auto"}, SINK),
                      run_dir=str(tmp_path / "run"))   # in tmp_path: a plan never run leaves it
    assert plan.stage("g").replicas == len(plan.stage("g").workers) == auto_replicas() >= 1


@pytest.mark.parametrize("stages, message", [
    ([{"name": "r", "op": "resample", "params": {"sample_rate": 16000}, "ordered": True}],
     "stage 'r': ordered: true spreads each stream over the replicas, but operator 'resample' "
     "is stateful"),
    ([{"name": "p", "op": op("PassThrough"), "ordered": True}],
     "operator 'engine_ops:PassThrough' is stateful"),
    ([{"name": "g", "op": "gain", "ordered": True}, {"op": "identity", "ordered": True}],
     "stage 'identity': ordered: true reads from ordered stage 'g': two ordered stages in a row"),
])
def test_ordered_is_refused_where_order_cannot_come_back(stages, message):
    with pytest.raises(ConfigError, match=message):
        build_plan(config(RAMP, *stages, SINK))


def test_an_ordered_stage_needs_a_stage_after_it():
    with pytest.raises(ConfigError, match="stage 'g': ordered: true needs a stage after it"):
        build_plan(config(RAMP, {"name": "g", "op": "gain", "ordered": True}))
    with pytest.raises(ConfigError, match="'null_sink' is a sink"):
        build_plan(config(RAMP, {"op": "null_sink", "ordered": True}))
