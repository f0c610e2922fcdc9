"""Lossless restarts when messages about an older generation of a replica arrive late: an
outdated ``resume`` queued at an upstream, ``replayed`` reports answered out of turn or by a
killed upstream, and an ended stream that a replay brings back into an upstream's buffer."""

from __future__ import annotations

import shutil

import zmq

from flowengine.engine import build_plan
from flowengine.engine.control.channel import WORKER_MESSAGES, decode_control, encode_control
from flowengine.engine.wire.protocol import InboxState, StreamSender
from flowengine.engine.recovery.replay import AckRelay, AckReporter, Forget, ReplayBuffer
from flowengine.engine.worker.process import Worker
from flowengine.engine.wire.codec import decode_batch
from test_restart_bounds import CAPS, feed, frame, one_stream, ramp_run
from worker_rig import worker_under_router

WAIT_S = 5.0   # bound on every wait for a message between two sockets of this process


# ------------------------------------ an upstream worker: hold and resume carry a generation

def receive_all(sock: zmq.Socket, quiet_ms: int = 300) -> list:
    """Everything `sock` gets until it is quiet for `quiet_ms`."""
    got = []
    while sock.poll(quiet_ms):
        got.append(sock.recv_multipart())
    return got


def told(router: zmq.Socket, quiet_ms: int = 100) -> list[dict]:
    """What the worker told the coordinator until it was quiet for `quiet_ms`, but stats."""
    messages = [decode_control(frames[1], expect=WORKER_MESSAGES)
                for frames in receive_all(router, quiet_ms)]
    return [m for m in messages if m["t"] != "stats"]


def serve_until(worker: Worker, router: zmq.Socket, kind: str) -> dict:
    """Let `worker` answer its control messages until it tells the coordinator `kind`."""
    for _ in range(int(WAIT_S / 0.05)):
        worker.control.poll(50)
        worker.service()
        for message in told(router, 10):
            if message["t"] == kind:
                return message
    raise AssertionError(f"no {kind!r} from {worker.id} within {WAIT_S} s")


def test_an_outdated_resume_does_not_unhold_a_replica_a_newer_restart_holds(tmp_path):
    # src feeds mid:0, which restarts losslessly. A resume for generation 1 waits at src (it
    # is between two buffers only later); generation 1 dies, hold for generation 2 comes in.
    plan = build_plan(ramp_run(tmp_path, streams=1, samples=256 * 4, replay_messages=64,
                               after=2), run_dir=str(tmp_path / "run"))
    spec, mid = plan.stage("src").workers[0], plan.stage("mid").workers[0]
    assert spec.replay_to == ["mid:0"]
    context = zmq.Context()
    try:
        inbox = context.socket(zmq.PULL)       # the replica's inbox: what the replay sends
        inbox.bind(mid.inbox_endpoint)
        worker, router = worker_under_router(context, spec, WAIT_S)
        buffer = worker.replay.buffers["mid:0"]   # two unacknowledged messages to replay
        buffer.record("caps", "s0", None, worker.sender.caps("s0", CAPS))
        buffer.record("data", "s0", 0, worker.sender.data(frame("s0", 0)))

        def tell(kind: str, generation: int) -> None:
            router.send_multipart([spec.id.encode(),
                                   encode_control(kind, to="mid:0", generation=generation)])

        tell("resume", 1)
        tell("hold", 2)
        serve_until(worker, router, "held")
        assert worker.resume_to == [] and worker.replay.held == {"mid:0"}
        worker.resume_replicas()
        worker.replay.resume("mid:0", 1)       # as a blocked send would take it: still outdated
        assert receive_all(inbox) == [] and worker.replay.held == {"mid:0"}
        assert told(router) == []              # no 'replayed' for the dead generation

        tell("resume", 2)
        for _ in range(int(WAIT_S / 0.05)):
            if worker.resume_to:
                break
            worker.control.poll(50)
            worker.service()
        worker.resume_replicas()
        # 'replayed', then 'resumed' (what had gone to it before: the base of its queue depth)
        [replayed, resumed] = told(router)
        assert {k: replayed[k] for k in ("t", "to", "generation", "messages", "names")} == \
            {"t": "replayed", "to": "mid:0", "generation": 2, "messages": 2, "names": ["s0"]}
        assert resumed == {"t": "resumed", "to": "mid:0", "generation": 2, "sent": 0}
        replay = [m for frames in receive_all(inbox) for m in decode_batch(frames)]
        assert [(m.kind, m.stream) for m in replay] == [("caps", "s0"), ("pcm", "s0")]  # once
        assert worker.replay.held == set()
    finally:
        context.destroy(linger=0)
        shutil.rmtree(plan.run_dir, ignore_errors=True)


# --------------------------------------- the relay: a replayed report counts for its generation

def test_a_replay_report_counts_only_for_the_generation_it_answers():
    # src:1 is slow: it owes the replays of generations 1, 2 and 3 when "x" ends at the sink,
    # and generation 3's replay holds "x". Taken in order, its answers for 1 and 2 passed for
    # 2's and 3's: the sink forgot "x" at once and then took generation 3's replay as new.
    relay = AckRelay({"mid:0": ["sink"]})
    for generation in (1, 2, 3):
        relay.resumed("mid:0", generation, ["src:0", "src:1"])
        relay.replayed("mid:0", "src:0", generation, [])
    relay.report("sink", {"ended": {"mid:0": ["x"]}})
    relay.replayed("mid:0", "src:1", 1, [])
    relay.replayed("mid:0", "src:1", 2, [])
    assert relay.take_forgets() == [] and relay.sizes()["deferred"] == 1
    relay.replayed("mid:0", "src:1", 3, ["x"])
    assert relay.take_forgets() == [Forget("mid:0", 3, ["x"], ["x"])]
    # The consumer then keeps its mark until generation 3's replay of "x" came by.
    inbox = InboxState(["mid:0"], indexed=["mid:0"])
    feed(inbox, one_stream(StreamSender("mid:0"), "x", 0, 2))
    third = StreamSender("mid:0@3")
    feed(inbox, one_stream(third, "y", 0, 1, end=False))
    inbox.forget("mid:0", ["x"], 3, ["x"])
    assert feed(inbox, one_stream(third, "x", 0, 2)) == []    # dropped, eos included
    assert inbox.index.sizes()["ended"] == 0 and inbox.statistics().duplicates == 4


def test_a_late_report_of_a_killed_upstream_is_not_taken_for_its_replacement():
    relay = AckRelay({"mid:0": ["sink"]})
    relay.resumed("mid:0", 1, ["src:0"])
    relay.upstream_replaced("src:0")         # killed before it answered generation 1
    relay.resumed("mid:0", 2, ["src:0"])     # its replacement owes generation 2's answer
    relay.report("sink", {"ended": {"mid:0": ["x"]}})
    relay.replayed("mid:0", "src:0", 1, [])  # the killed one's answer, read only now
    assert relay.take_forgets() == [] and relay.sizes()["deferred"] == 1
    relay.replayed("mid:0", "src:0", 2, ["x"])
    assert relay.take_forgets() == [Forget("mid:0", 2, ["x"], ["x"])]


# ------------------- an ended stream that a replay brings again is reported ended again

def test_a_stream_a_replay_brings_back_is_forgotten_upstream_again():
    # "x" ended at the sink and every upstream forgot it; then it came back into src's
    # buffer (e.g. src is itself a lossless stage's replacement that replayed it). The
    # replay of generation 1 carries it to the sink again, which drops it, eos included.
    relay = AckRelay({"mid:0": ["sink"]})
    inbox = InboxState(["mid:0"], indexed=["mid:0"])
    reporter = AckReporter(inbox, ["mid:0"], every=1)
    buffer = ReplayBuffer("mid:0", max_messages=8, max_bytes=10 ** 6)

    def relay_to_buffer(now: float) -> dict:
        """The sink's ack through the relay to src's buffer; the ack."""
        message = reporter.due(now)
        for acks, ended in relay.report("sink", message).values():
            for stream, index in acks.items():
                buffer.acknowledge(stream, index)
            for stream in ended:
                buffer.forget(stream)
        return message

    feed(inbox, one_stream(StreamSender("mid:0"), "x", 0, 2))
    relay_to_buffer(1.0)
    assert relay.sizes() == {"streams": 0, "deferred": 0}     # forgotten at the relay
    upstream = StreamSender("src:0", index_data=True)
    buffer.record("caps", "x", None, upstream.caps("x", CAPS))
    for i in range(2):
        buffer.record("data", "x", i, upstream.data(frame("x", 4 * i)))
    buffer.record("eos", "x", None, upstream.eos("x"))
    assert (buffer.streams, buffer.messages) == (["x"], 2)  # back, and nothing acks it
    relay.resumed("mid:0", 1, ["src:0"])
    assert feed(inbox, one_stream(StreamSender("mid:0@1"), "x", 0, 2)) == []
    assert relay_to_buffer(2.0) == {"acks": {}, "ended": {}, "again": {"mid:0": ["x"]}}
    assert (buffer.streams, buffer.messages) == ([], 0)
    assert inbox.index.sizes()["again"] == 0 and reporter.due(3.0) is None


def test_a_replayed_end_is_not_passed_on_before_every_consumer_stage_ended_the_stream():
    relay = AckRelay({"mid:0": ["sink", "meter"]})
    assert relay.report("sink", {"ended": {"mid:0": ["x"]}}) == {}
    assert relay.report("sink", {"ended": {}, "again": {"mid:0": ["x"]}}) == {}
    assert relay.report("meter", {"ended": {"mid:0": ["x"]}}) == {"mid:0": ({}, ["x"])}
    assert relay.report("meter", {"again": {"mid:0": ["x"]}}) == {"mid:0": ({}, ["x"])}
