"""docs/config.md is generated from the model and the registry and is up to date; every
operator's example is a stage that validates; no document points outside the repository."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from flowengine.config import load_source, resolve_source
from flowengine.config.reference import config_reference
from flowengine.ops.registry import registry

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_committed_config_reference_is_current():
    committed = (ROOT / "docs" / "config.md").read_text(encoding="utf-8")
    assert committed == config_reference(), \
        "regenerate: flowengine schema --markdown > docs/config.md"


def test_the_reference_has_every_operator_and_parameter():
    text = config_reference()
    for spec in registry.specs():
        assert f"### `{spec.name}`" in text
        for param in spec.params:
            assert f"| `{param.name}` |" in text, (spec.name, param.name)


def _run_around(spec) -> str:
    """A run that uses `spec` with its example params."""
    stage = {"name": "x", "op": spec.name, "params": dict(spec.example)}
    before, after = [], []
    if spec.kind != "source":
        before = [{"name": "in", "op": "files", "params": {"paths": "music/**/*.flac"}}
                  if spec.name == "file_sink" else
                  {"name": "in", "op": "tone", "params": {"seconds": 0.1}}]
        if spec.inputs == "packet":
            before.append({"name": "enc", "op": "encoder", "params": {
                "codec": spec.name.split("_")[0] if spec.name != "decoder" else
                spec.example.get("codec", "mp3")}})
        if getattr(spec.factory, "multi_input", False):
            before.append({"name": "in2", "op": "tone", "params": {"seconds": 0.1}})
            stage["inputs"] = ["in", "in2"]
    if spec.kind != "sink":
        after = [{"name": "out", "op": "null_sink"}]
    import yaml
    return yaml.safe_dump({"name": "example", "stages": before + [stage] + after})


EXAMPLES = [s for s in registry.specs()
            if s.name not in ("tcp_ingest", "tcp_push", "ws_broadcast", "wav_decoder")]


@pytest.fixture(scope="module")
def example_inputs(tmp_path_factory) -> Path:
    """The files the examples name: in/song.mp3, music/album/track.flac."""
    from flowengine.ops.io import AudioFileWriter, ToneSource
    root = tmp_path_factory.mktemp("examples")
    for path in (root / "in" / "song.mp3", root / "music" / "album" / "track.flac"):
        path.parent.mkdir(parents=True)
        with AudioFileWriter(path) as out:
            for frame in ToneSource(seconds=0.1):
                out.push(frame)
    return root


@pytest.mark.parametrize("spec", EXAMPLES, ids=[s.name for s in EXAMPLES])
def test_every_operator_example_is_a_stage_that_validates(spec, example_inputs, monkeypatch):
    monkeypatch.chdir(example_inputs)
    resolve_source(load_source(_run_around(spec), f"{spec.name}.yaml"), check_paths=False)


# Backticked paths in the docs that name files of the repository (not outputs or examples).
_REPO_PATH = re.compile(r"`((?:docs|configs|benchmarks|flowengine|tests|\.ci)/[\w./-]+)`")


@pytest.mark.parametrize("doc", DOCS, ids=[d.name for d in DOCS])
def test_no_document_points_outside_the_repository(doc):
    text = doc.read_text(encoding="utf-8")
    for outside in ("shared/", "DESIGN.md", "DESIGN §", "/work/"):
        assert outside not in text, f"{doc.name} refers to {outside!r}, not in the repository"
    missing = [path for path in _REPO_PATH.findall(text)
               if "<" not in path and "*" not in path and not (ROOT / path).exists()
               and not path.startswith("benchmarks/results/")]
    assert missing == [], f"{doc.name} names files the repository does not have"
