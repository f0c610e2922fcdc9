"""`fuse: auto`: the planner cuts a single stream's chain into as many workers as there are
cores, balanced by each operator's cost hint. The cut (pure), the groups it makes and leaves
alone, the same bytes as in one process and as one process per stage, what `flowengine plan`
says, and a bad value refused with file:line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from config_text import resolve
from flowengine.core.fusion import FusionStage, auto_layout, partition
from flowengine.engine import build_plan, run_plan
from flowengine.engine.plan import auto_replicas
from flowengine.errors import ConfigError
from flowengine.local.run import run_in_process

# --- the cut ------------------------------------------------------------------------------


@pytest.mark.parametrize("costs, k, sizes", [
    # bench_pipeline's dsp_balanced after its source: decode .. gain | encode, sink
    ([0.16, 0.06, 0.45, 0.04, 1.0, 0.065], 2, [4, 2]),
    # dsp: the loudness stage outweighs the encoder, so the cut comes after it
    ([0.16, 0.06, 2.6, 0.04, 1.0, 0.065], 2, [3, 3]),
    ([1, 10, 1, 1], 3, [1, 1, 2]),
    ([3, 1, 1, 1], 2, [1, 3]),
    ([1, 5, 1], 2, [1, 2]),             # equal cuts: the earliest wins
    ([0.5, 0.2, 0.3], 1, [3]),          # one core: one group
    ([0.5, 0.2, 0.3], 3, [1, 1, 1]),
    ([0.5, 0.2, 0.3], 8, [1, 1, 1]),    # more cores than stages: one stage each
    ([0.7], 2, [1]),
    ([], 2, []),
])
def test_partition_minimises_the_costliest_group(costs, k, sizes):
    assert partition(costs, k) == sizes


def chain(*names: str, costs: dict[str, float], **special: dict) -> list[FusionStage]:
    """FusionStages of `names` in a line (the first a source), with `special` fields per name."""
    stages = []
    for i, name in enumerate(names):
        fields = dict(inputs=(names[i - 1],) if i else (),
                      consumers=(names[i + 1],) if i + 1 < len(names) else (),
                      source=i == 0, cost=costs.get(name, 0.1))
        fields.update(special.get(name, {}))
        stages.append(FusionStage(name, **fields))
    return stages


COSTS = {"src": 0.04, "decode": 0.16, "resample": 0.06, "compressor": 0.45, "gain": 0.04,
         "encode": 1.0, "sink": 0.065}
PIPELINE = ("src", "decode", "resample", "compressor", "gain", "encode", "sink")


def layout(stages: list[FusionStage], cores: int) -> tuple[list[list[list[str]]], dict]:
    chains, alone = auto_layout(stages, cores)
    return [c.groups for c in chains], alone


def test_auto_layout_leads_with_the_source_and_balances_by_cost():
    chains, alone = auto_layout(chain(*PIPELINE, costs=COSTS), 2)
    assert [c.groups for c in chains] == [
        [["src", "decode", "resample", "compressor", "gain"], ["encode", "sink"]]]
    assert chains[0].costs == pytest.approx([0.75, 1.065])
    assert chains[0].describe() == ("src, decode, resample, compressor, gain | encode, sink "
                                    "on 2 cores (cost 0.75 | 1.1)")
    assert alone == {}
    assert layout(chain(*PIPELINE, costs=COSTS), 1)[0] == [[list(PIPELINE)]]
    # more cores: no cut lowers the encoder's group (a worker of its own would send to the
    # sink), so still two
    assert layout(chain(*PIPELINE, costs=COSTS), 16)[0] == layout(chain(*PIPELINE,
                                                                        costs=COSTS), 2)[0]


@pytest.mark.parametrize("costs, cores, groups", [
    ({"a": 1, "b": 1, "c": 1, "d": 1}, 16, [["a"], ["b"], ["c"], ["d"]]),
    ({"a": 1, "b": 1, "c": 1, "d": 1}, 4, [["a"], ["b"], ["c"], ["d"]]),
    # a third worker would leave the costliest group at 2: two do as well
    ({"a": 1, "b": 1, "c": 1, "d": 1}, 3, [["a", "b"], ["c", "d"]]),
    # cutting the gain off would gain 0.04, less than the hop costs
    ({"a": 0.04, "b": 1.0, "c": 0.065}, 2, [["a", "b", "c"]]),
    ({"a": 0.2, "b": 1.0, "c": 0.065}, 2, [["a"], ["b", "c"]]),
])
def test_a_chain_gets_no_more_groups_than_lower_its_costliest(costs, cores, groups):
    assert layout(chain(*costs, costs=costs), cores)[0] == [groups]


def test_chains_side_by_side_share_the_cores():
    """Two branches of equal cost after a fan-out: one worker each on two cores."""
    stages = [FusionStage("src", (), ("a", "x"), source=True, cost=0.1),
              FusionStage("a", ("src",), ("b",), cost=0.5),
              FusionStage("b", ("a",), (), cost=0.5),
              FusionStage("x", ("src",), ("y",), cost=0.5),
              FusionStage("y", ("x",), (), cost=0.5)]
    assert layout(stages, 2)[0] == [[["src"]], [["a", "b"]], [["x", "y"]]]


@pytest.mark.parametrize("special, groups, alone", [
    # an ordered stage cannot be fused: the chain splits around it, each side one group
    # (cutting either again would gain less than the hop costs)
    ({"compressor": {"ordered": True}},
     [[["src", "decode", "resample"]], [["gain", "encode", "sink"]]], {"compressor": "ordered"}),
    ({"compressor": {"restart": "on-failure"}},
     [[["src", "decode", "resample"]], [["gain", "encode", "sink"]]],
     {"compressor": "restart: on-failure"}),
    ({"compressor": {"multi_input": True}},
     [[["src", "decode", "resample"]], [["gain", "encode", "sink"]]],
     {"compressor": "several inputs in one node"}),
    ({"compressor": {"placed": True}},
     [[["src", "decode", "resample"]], [["gain", "encode", "sink"]]],
     {"compressor": "placed on the cluster"}),
    # a stage the user fused keeps the user's group (gain joins compressor)
    ({"gain": {"fuse_with_previous": True}},
     [[["src", "decode", "resample"]], [["encode", "sink"]]],
     {"compressor": "fused by fuse_with", "gain": "fused by fuse_with"}),
    # another error policy or replica count is another chain
    ({"encode": {"on_error": "skip"}, "sink": {"on_error": "skip"}},
     [[["src", "decode", "resample", "compressor", "gain"]], [["encode", "sink"]]], {}),
    # two replicas each on two cores: one group of them
    ({name: {"replicas": 2} for name in PIPELINE[1:]},
     [[["src"]], [list(PIPELINE[1:])]], {}),
])
def test_stages_that_cannot_share_a_worker_split_the_chain(special, groups, alone):
    assert layout(chain(*PIPELINE, costs=COSTS, **special), 2) == (groups, alone)


def test_a_fan_out_ends_a_chain():
    stages = chain("src", "decode", "encode", "sink", costs=COSTS)
    stages[1] = FusionStage("decode", ("src",), ("encode", "meter"), cost=0.16)
    stages.append(FusionStage("meter", ("decode",), (), cost=0.1))
    assert layout(stages, 2)[0] == [[["src", "decode"]], [["encode", "sink"]], [["meter"]]]


# --- runs ---------------------------------------------------------------------------------

RUN = """name: auto
{fuse}
stages:
  - {{name: src, op: file_source, params: {{path: '{source}', mode: packet}}}}
  - {{name: decode, op: mp3_decoder}}
  - {{name: resample, op: resample, params: {{sample_rate: 48000}}}}
  - {{name: compressor, op: compressor, params: {{threshold_db: -24}}}}
  - {{name: gain, op: gain, params: {{gain_db: -3}}}}
  - {{name: encode, op: mp3_encoder, params: {{bitrate: 128000}}}}
  - {{name: sink, op: file_sink, params: {{path: '{out}'}}}}
"""


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """Two seconds of a 44.1 kHz stereo chirp as MP3."""
    path = tmp_path_factory.mktemp("input") / "chirp.mp3"
    run_in_process(resolve(f"""name: input
stages:
  - {{name: tone, op: tone, params: {{waveform: chirp, frequency: 100, end_frequency: 8000,
      seconds: 2, sample_rate: 44100}}}}
  - {{name: sink, op: file_sink, params: {{path: '{path}'}}}}
"""))
    return path


def config(tmp_path: Path, source: Path, name: str, fuse: str = "") -> tuple[str, Path]:
    out = tmp_path / f"{name}.mp3"
    return RUN.format(fuse=fuse, source=source, out=out), out


def test_fuse_auto_gives_the_bytes_of_one_process_and_of_a_process_per_stage(tmp_path,
                                                                              source):
    text, out = config(tmp_path, source, "inprocess")
    in_process = run_in_process(resolve(text))
    text, per_stage_out = config(tmp_path, source, "perstage")
    run_plan(build_plan(resolve(text).config))
    text, auto_out = config(tmp_path, source, "auto", "fuse: auto")
    plan = build_plan(resolve(text).config)
    report = run_plan(plan)
    assert auto_out.read_bytes() == out.read_bytes() == per_stage_out.read_bytes()
    assert report.audit_ok
    # the stages of the group the source leads are reported each as itself; a fused group
    # (encode + sink) as one stage named after its last
    samples = {s.name: s.total("samples_out") for s in in_process.stages}
    reported = {s.name: s.total("samples_out") for s in report.stages}
    assert reported == {name: samples[name] for name in samples if name != "encode"}
    cores = auto_replicas()
    assert len(plan.workers) == min(cores, 7)
    assert any(note.startswith("fuse: auto grouped src, ") and f"on {cores} core" in note
               for note in plan.notes), plan.notes


def on_cores(cores: int, *args: str) -> subprocess.CompletedProcess:
    """`python -m flowengine ARGS` in a process that may use `cores` of this machine's cores."""
    if len(os.sched_getaffinity(0)) < cores:
        pytest.skip(f"needs {cores} cores")
    allowed = set(sorted(os.sched_getaffinity(0))[:cores])
    done = subprocess.run([sys.executable, "-m", "flowengine", *args], capture_output=True,
                          text=True, timeout=100,
                          preexec_fn=lambda: os.sched_setaffinity(0, allowed))
    assert done.returncode == 0, done.stderr
    return done


def test_on_one_core_the_whole_chain_is_one_worker_with_the_same_bytes(tmp_path, source):
    text, out = config(tmp_path, source, "inprocess")
    run_in_process(resolve(text))
    text, auto_out = config(tmp_path, source, "auto", "fuse: auto")
    path = tmp_path / "auto.yaml"
    path.write_text(text)
    assert "layout: fuse: auto grouped src, decode, resample, compressor, gain, encode, sink " \
        "on 1 core (cost 1.8)" in on_cores(1, "plan", str(path)).stdout
    done = on_cores(1, "run", str(path))
    assert "audit: 1 stream(s), all balanced" in done.stdout + done.stderr
    assert auto_out.read_bytes() == out.read_bytes()


def test_plan_names_the_groups_it_chose_for_two_cores(tmp_path, source):
    text, _ = config(tmp_path, source, "plan", "fuse: auto")
    path = tmp_path / "auto.yaml"
    path.write_text(text)
    done = on_cores(2, "plan", str(path))
    lines = done.stdout.splitlines()
    assert lines[0].startswith("run 'auto': 2 stages, 2 workers")
    note = next(line for line in lines if line.startswith("layout: fuse: auto grouped"))
    assert note.startswith("layout: fuse: auto grouped src, decode, resample, compressor, gain "
                           "| encode, sink on 2 cores (cost ")
    assert "stage gain (fused:src+decode+resample+compressor+gain, source, - -> pcm)" \
        in done.stdout
    assert "stage sink (fused:encode+sink, sink, pcm -> -)" in done.stdout


def test_many_streams_still_run_whole_per_replica(tmp_path):
    plan = build_plan(resolve("""name: many
fuse: auto
stages:
  - {name: src, op: tones, params: {streams: 4, seconds: 0.2}}
  - {name: gain, op: gain, replicas: 2}
  - {name: sink, op: null_sink, replicas: 2}
""").config, run_dir=str(tmp_path / "run"))
    assert [s.name for s in plan.stages] == ["sink"] and plan.stages[0].replicas == 2
    assert plan.notes[0].startswith("whole streams per replica: 'src' (tones)")
    assert plan.notes[1:] == ["fuse: auto found no chain of two or more stages left to group"]


@pytest.mark.parametrize("value", ["autox", "5", "{auto: true}"])
def test_a_bad_fuse_value_is_a_config_error_with_its_line(tmp_path, source, value):
    text, _ = config(tmp_path, source, "bad", f"fuse: {value}")
    with pytest.raises(ConfigError, match=r"run\.yaml:2: fuse: expected 'auto' \(the planner "
                                          r"groups the stages\) or a list of stage names \(one "
                                          r"group\) or of groups, got "):
        resolve(text)
