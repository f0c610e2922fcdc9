"""Operator fusion: fused stages run in one worker with the same output bytes as unfused, the
plan shows the group, and groups that are not chains are refused before anything runs."""

from __future__ import annotations

import pytest

from flowengine.config import load_source
from flowengine.config.validate import ConfigValidationError, validate_run
from flowengine.config.model import parse_run_config
from flowengine.engine import build_plan, run_plan

HEAD = """name: fusion
{fuse}
stages:
  - {{name: tone, op: tone, params: {{seconds: 0.5, sample_rate: 44100, chunk_samples: 1000}}}}
  - {{name: resample, op: resample, params: {{sample_rate: 48000}}}}
  - {{name: gain, op: gain, params: {{gain_db: -6}}{gain_extra}}}
  - {{name: encode, op: mp3_encoder{encode_extra}}}
  - {{name: sink, op: file_sink, params: {{path: '{path}'}}}}
"""


def resolve(text: str):
    source = load_source(text, "run.yaml")
    return validate_run(parse_run_config(source), source)


def run(tmp_path, name: str, fuse: str = "", gain_extra: str = "", encode_extra: str = ""):
    path = tmp_path / f"{name}.mp3"
    run = resolve(HEAD.format(fuse=fuse, gain_extra=gain_extra, encode_extra=encode_extra,
                              path=path))
    plan = build_plan(run.config)
    report = run_plan(plan)
    return plan, report, path.read_bytes()


def test_fused_stages_give_the_same_bytes_in_one_worker(tmp_path):
    _, _, plain = run(tmp_path, "plain")
    plan, report, fused = run(tmp_path, "fused", fuse="fuse: [resample, gain, encode]")
    assert fused == plain
    assert [s.name for s in plan.stages] == ["tone", "encode", "sink"]
    encode = plan.stage("encode")
    assert encode.fused == ["resample", "gain", "encode"]
    assert encode.op == "fused:resample+gain+encode"
    assert (encode.input_kind, encode.output_kind, encode.kind) == ("pcm", "packet", "encoder")
    assert report.stage("encode").workers[0].samples_in == 22050
    plan, _, with_previous = run(tmp_path, "previous", gain_extra=", fuse_with: previous")
    assert with_previous == plain
    assert plan.stage("gain").fused == ["resample", "gain"]


@pytest.mark.parametrize("fuse, encode_extra, message", [
    ("fuse: [resample, encode]", "",
     r"run\.yaml:2: fuse: fuse \[resample, encode\]: 'encode' must read only from 'resample' "
     r"and 'resample' feed only 'encode' \(a fused group is a chain\)"),
    ("fuse: [tone, resample]", "",
     r"fuse \[tone, resample\]: stage 'tone' is a source and cannot be fused"),
    ("fuse: [[gain, encode], [encode, sink]]", "",
     r"stage 'encode' is in two fused groups"),
    ("fuse: [gain, encode]", ", replicas: 2",
     r"stage 'encode' has replicas=2 but 'gain' has 1; a fused group runs as one stage"),
    ("fuse: [gain, nothing]", "", r"fuse: no stage named 'nothing'"),
])
def test_bad_fusion_is_a_config_error(tmp_path, fuse, encode_extra, message):
    with pytest.raises(ConfigValidationError, match=message):
        resolve(HEAD.format(fuse=fuse, gain_extra="", encode_extra=encode_extra,
                            path=tmp_path / "x.mp3"))
