"""The README's Python examples run as written, its first commands are what CI runs, and its
shell and YAML blocks marked `<!-- test: run -->` run as written, in order, in one directory."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
EXAMPLES = re.findall(r"```python\n(.*?)```", README, flags=re.S)
# A block the test runs: `<!-- test: run -->` on the line before its fence. A YAML block starts
# with `# file: NAME` and is written to NAME; a bash block is run with `flowengine` being
# `python -m flowengine` of this checkout.
RUN_BLOCKS = re.findall(r"<!-- test: run -->\n```(bash|yaml)\n(.*?)```", README, flags=re.S)


def test_readme_has_examples():
    assert len(EXAMPLES) >= 3


@pytest.mark.parametrize("index", range(len(EXAMPLES)))
def test_readme_example_runs(index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exec(compile(EXAMPLES[index], f"README.md example {index + 1}", "exec"), {"__name__": "__readme__"})


def test_ci_runs_the_readme_test_command():
    commands = re.findall(r"```(?:bash|sh)\n(.*?)```", README, flags=re.S)
    test_command = commands[1].strip()
    assert "pytest" in test_command
    assert test_command in (ROOT / ".ci" / "run").read_text()


def test_readme_has_runnable_blocks():
    kinds = [kind for kind, _ in RUN_BLOCKS]
    assert kinds.count("bash") >= 5 and kinds.count("yaml") >= 3


@pytest.mark.timeout(600)
def test_readme_shell_and_yaml_blocks_run_as_written(tmp_path):
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    prelude = f"set -euo pipefail\nflowengine() {{ {sys.executable} -m flowengine \"$@\"; }}\n"
    for number, (kind, body) in enumerate(RUN_BLOCKS, 1):
        if kind == "yaml":
            first = body.splitlines()[0]
            assert first.startswith("# file: "), f"block {number}: YAML without '# file: NAME'"
            (tmp_path / first.removeprefix("# file: ").strip()).write_text(body)
            continue
        done = subprocess.run(["bash", "-c", prelude + body], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"README block {number}:\n{body}\n{done.stderr[-3000:]}"
    outputs = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert outputs == ["mono.opus", "tone.flac", "tone.m4a", "tone.mp3", "tone.opus",
                       "track-0.m4a", "track-0.opus", "track-1.m4a", "track-1.opus",
                       "track-2.m4a", "track-2.opus", "track-3.m4a", "track-3.opus"]
