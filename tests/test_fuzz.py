"""Fuzzing every parser of untrusted bytes: mutated inputs give a typed error or a consistent
result, never another exception, a hang or unbounded memory (tests/fuzz_targets.py).

CI runs a few hundred cases per target; HYPOTHESIS_PROFILE=fuzz runs 10 000 each, and
benchmarks/fuzz.py runs the long form with figures.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowengine.config import load_run_config, load_source
from flowengine.errors import ConfigError
from fuzz_targets import SELF_TESTS, TARGETS, FuzzWorker, decode_case, encode_case

_LONG = os.environ.get("HYPOTHESIS_PROFILE") == "fuzz"
# Cases per target in CI: enough to cross every mutation kind, within a few seconds each.
_CI_CASES = {"wire": 200, "framing": 150, "config": 100, "reader": 60}


def _cases(name: str) -> int:
    return 10_000 if _LONG else _CI_CASES.get(name, 60)


@pytest.fixture(scope="module")
def worker():
    with FuzzWorker(timeout_s=30.0, memory_mb=1536) as fuzz_worker:
        yield fuzz_worker


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_mutated_inputs_give_only_typed_errors(worker, name):
    allowed = ", ".join(e.__name__ for e in TARGETS[name].allowed)
    labels = set()

    @settings(max_examples=_cases(name), deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(st.data())
    def one_case(data):
        case = data.draw(TARGETS[name].cases(), label="case")
        outcome = worker.run(name, case)
        assert not outcome.failed, (f"{name}: {outcome.status} {outcome.label} (only {allowed} "
                                    f"allowed):\n{outcome.detail}")
        labels.add(outcome.label)

    one_case()
    # The mutations reach both sides: inputs refused with a typed error, and accepted ones.
    assert len(labels) >= 2, f"{name}: every case ended the same way: {labels}"


def test_worker_memory_stays_bounded_over_many_cases(worker):
    """RSS of the worker after a warm-up and after more cases of the heaviest target."""
    decoder_case = {"codec": "mp3", "chunk": 1024, "on_error": "skip", "packets": False,
                    "chunks": [bytes([0xFF, 0xFB, 0x90, 0x64]) * 500]}
    for _ in range(20):
        worker.run("decoder-mp3", decoder_case)
    warm = worker.run("decoder-mp3", decoder_case).rss_bytes
    for _ in range(100):
        last = worker.run("decoder-mp3", decoder_case)
    assert last.status == "ok"
    assert last.rss_bytes - warm < 20 * 2**20, f"RSS grew {(last.rss_bytes - warm) >> 20} MB"


# ------------------------------------------------------------- the harness catches what it must

@pytest.fixture(scope="module")
def strict_worker():
    with FuzzWorker(timeout_s=1.0, memory_mb=256) as fuzz_worker:
        yield fuzz_worker


@pytest.mark.parametrize("name, status, label", [
    ("wrong_error", "error", "KeyError"),
    ("hang", "hang", "timeout"),
    ("memory", "memory", "MemoryError"),
    ("segfault", "crash", "exit code -11"),
])
def test_the_worker_reports_errors_hangs_memory_and_crashes(strict_worker, name, status, label):
    assert name in SELF_TESTS
    outcome = strict_worker.run(name, None)
    assert (outcome.status, outcome.label) == (status, label)
    # ... and the next case runs in a working (restarted) worker.
    assert strict_worker.run("wire", [b"\x81\xa1v\x01"]).status == "ok"


def test_cases_round_trip_through_their_saved_form():
    case = {"text": "a: \ud800", "chunks": [b"\xff\x00", b""], "n": [1, None]}
    assert decode_case(encode_case(case)) == case


# ------------------------------------------------------------- regressions found by fuzzing

_BILLION_LAUGHS = "".join(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]\n" for i in range(1, 9))


@pytest.mark.parametrize("text, message", [
    ("stages: &s [{op: tone, params: *s}]\n",
     r"^fuzz\.yaml:1: YAML alias refers to a node that contains it \(a recursive structure\)$"),
    ("l0: &l0 [x, x, x, x, x, x, x, x, x]\n" + _BILLION_LAUGHS + "stages: [{op: tone}]\n",
     r"^fuzz\.yaml:\d+: YAML aliases expand to more than 100000 nodes \(a run config needs "
     r"a few hundred\)$"),
    ("[" * 700 + "]" * 700, r"^fuzz\.yaml: invalid YAML: nested too deeply$"),
    ("stages:\n" + "".join(" " * i + "- \n" for i in range(0, 200, 2)),
     r"^fuzz\.yaml:\d+: YAML nested deeper than 64 levels$"),
    ("? [a, b]\n: 1\nstages: [{op: tone}]\n", r"^fuzz\.yaml:1: invalid YAML: found unhashable key$"),
], ids=["recursive", "billion-laughs", "deep-flow", "deep-block", "list-as-key"])
def test_hostile_yaml_structures_are_config_errors(text, message):
    with pytest.raises(ConfigError, match=message):
        load_source(text, "fuzz.yaml")


def test_yaml_anchors_within_the_limits_still_work():
    source = load_source("base: &p {frequency: 440}\nstages:\n  - {op: tone, params: *p}\n"
                         "  - {op: gain, params: {<<: *p}}\n")
    assert source.data["stages"][1]["params"] == {"frequency": 440}
    assert source.line_of(("stages", 0, "params", "frequency")) == 1   # the anchor's line


def test_a_config_file_that_is_not_utf8_is_a_config_error(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: caf\u00e9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=rf"^config file {path} is not UTF-8 text: byte 0xe9 at "
                                          r"byte offset 9 \(invalid continuation byte\)$"):
        load_run_config(path)
