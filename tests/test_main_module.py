"""Workers run a script's main module only when one of their operators is defined there.

multiprocessing makes every process it starts import the starting program's main
module first (as ``__mp_main__``): a script's imports, in every worker, on every
run. The local launcher hides it unless a worker needs it.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from flowengine.engine.control.launcher import uses_main_module
from flowengine.engine.plan import WorkerSpec

PRELUDE = """
    import os, sys
    from pathlib import Path
    from flowengine.engine import Engine, build_plan
    from flowengine.config import load_source, resolve_source

    if __name__ == "__mp_main__":      # imported by a worker
        with open(sys.argv[1], "a") as marks:
            marks.write(f"{os.getpid()}\\n")

    def run(stages):
        import yaml
        text = yaml.safe_dump({"name": "main-module", "stages": stages}, sort_keys=False)
        Engine(build_plan(resolve_source(load_source(text, filename="<t>")).config),
               handle_signals=False).run()
"""


def _run_script(tmp_path: Path, body: str) -> list[str]:
    """Run PRELUDE + body as a script; the pids of the workers that imported it."""
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(PRELUDE) + textwrap.dedent(body))
    marks = tmp_path / "marks.txt"
    marks.write_text("")
    done = subprocess.run([sys.executable, str(script), str(marks)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "ran" in done.stdout
    return marks.read_text().split()


def test_workers_of_built_in_operators_do_not_import_the_script(tmp_path):
    marks = _run_script(tmp_path, """
        if __name__ == "__main__":
            run([{"name": "tone", "op": "tone", "params": {"seconds": 0.1}},
                 {"name": "gain", "op": "gain"}, {"name": "sink", "op": "null_sink"}])
            print("ran")
        """)
    assert marks == []


def test_an_operator_registered_by_the_script_still_reaches_its_worker(tmp_path):
    marks = _run_script(tmp_path, """
        from flowengine.ops.flownode import make_identity_node
        from flowengine.ops.node import PCM
        from flowengine.ops.registry import registry

        @registry.operator("script_pass", kind="processor", inputs=PCM, outputs=PCM,
                           stateful=False, summary="defined by the script")
        def script_pass():
            return make_identity_node()

        if __name__ == "__main__":
            run([{"name": "tone", "op": "tone", "params": {"seconds": 0.1}},
                 {"name": "mine", "op": "script_pass"}, {"name": "sink", "op": "null_sink"}])
            print("ran")
        """)
    assert len(marks) == 1        # the worker of script_pass, and only it


@pytest.mark.parametrize("op, expected", [("gain", False), ("engine_ops:PassThrough", False),
                                          ("__main__:Mine", True)])
def test_uses_main_module_by_operator_name(op, expected):
    spec = WorkerSpec(stage="s", replica=0, op=op, params={}, kind="processor",
                      control_endpoint="ipc:///x", inbox_endpoint=None, inbox_hwm=8)
    assert uses_main_module(spec) is expected


class Local:
    """Stands for a class of the main module (its __module__ is set so below)."""


def test_uses_main_module_for_a_parameter_of_a_main_module_class():
    Local.__module__ = "__main__"
    spec = WorkerSpec(stage="s", replica=0, op="gain", params={"x": [Local()]},
                      kind="processor", control_endpoint="ipc:///x", inbox_endpoint=None,
                      inbox_hwm=8)
    assert uses_main_module(spec)
