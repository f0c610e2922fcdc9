"""Chaos: SIGKILL a random worker of a real `flowengine run` at a random point of it, and check
what the user is left with.

Each trial runs the CLI (``python -m flowengine run configs/NAME.yaml --quiet``)
as its own process in a fresh directory, with TMPDIR pointing inside it so
the run directory (socket files) and multiprocessing's own temp files land
there. The worker processes are found in /proc (children of the forkserver
the coordinator started); once all of them exist, the trial waits until the
run's outputs hold a random number of bytes (0: at once, so some kills land
during start-up; most while audio flows) and SIGKILLs one of them at random.
The kill point is one the trial observes, never a timer: on a loaded machine
a timer can outrun a short run, while bytes written mean the run is under way,
and the few kilobytes waited for are a small part of the run's output, so the
run is still going when the kill lands. It then checks that:

- the coordinator exits non-zero within ``--deadline`` (5 s) of the kill;
- its message names the dead stage: ``stage 'X' replica R (pid <killed pid>)
  was killed by SIGKILL``;
- no process is left: every worker is gone when the coordinator exits, and
  every other descendant (forkserver, resource tracker) within 2 s;
- TMPDIR is empty: no run directory, no socket files;
- every output is either complete under its final name (decodes to the whole
  expected length) or left as ``NAME.part`` and listed in the error message,
  never both, never a short file under the final name.

Detection time is kill -> coordinator exit (it includes stopping the other
workers and the interpreter's exit).

    python benchmarks/chaos.py --trials 30 [--seed 1] [--configs tone,transcode,fanout,mix]

Writes benchmarks/results/chaos.json (per trial: config, killed stage and
pid, the output bytes waited for, the delay that took, detection time,
outcome and any problem) and prints p50/p99.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import av

REPO = Path(__file__).resolve().parent.parent
CONFIGS_DIR = REPO / "configs"

__all__ = ["ChaosCase", "TrialResult", "CASES", "TRIALS", "make_input", "run_cli_trial",
           "run_engine_trial", "run_trials", "worker_pids", "alive_pids", "decoded_seconds",
           "output_bytes", "wait_for_output", "draw_kill_point", "percentile", "main"]

DEADLINE_S = 5.0            # the kill must end the run within this
ORPHAN_GRACE_S = 2.0        # helpers (forkserver, resource tracker) exit when the coordinator does
START_TIMEOUT_S = 60.0      # for every worker to exist (a loaded machine starts slowly)
OUTPUT_TIMEOUT_S = 60.0     # for the outputs to reach the trial's size
MAX_KILL_BYTES = 64 * 1024  # kill once the outputs hold up to this (a 60 s run writes ~1 MB)
_POLL_S = 0.005


@dataclass(frozen=True)
class ChaosCase:
    """One config of `configs/`, made long enough that the kill lands inside the run."""

    config: str                          # configs/NAME.yaml
    outputs: dict[str, str]              # sink stage -> its output, relative to the trial dir
    workers: int                         # worker processes of its plan
    lengthen: tuple[str, ...] = ()       # --set values; {seconds} is the audio length
    needs_input: bool = False            # reads out/tone.mp3 (given as src.path)

    def overrides(self, seconds: float, input_path: str, trial_dir: Path) -> list[str]:
        """Every --set of a trial: the length, the input, outputs inside the trial directory."""
        sets = [value.format(seconds=seconds) for value in self.lengthen]
        if self.needs_input:
            sets.append(f"src.path={input_path}")
        sets += [f"{stage}.path={trial_dir / path}" for stage, path in self.outputs.items()]
        return sets


CASES: dict[str, ChaosCase] = {
    "tone": ChaosCase("tone", {"sink": "out/tone.mp3"}, 5, ("tone.seconds={seconds}",)),
    "transcode": ChaosCase("transcode", {"sink": "out/transcode.aac"}, 6, needs_input=True),
    "fanout": ChaosCase("fanout", {"mp3_out": "out/fanout.mp3", "opus_out": "out/fanout.opus"},
                        7, needs_input=True),
    "mix": ChaosCase("mix", {"sink": "out/mix.mp3"}, 5, ("low.seconds={seconds}",
                                                          "high.seconds={seconds}")),
}

_FAILED = re.compile(r"stage '([^']+)' replica (\d+) \(pid (\d+)\) was killed by SIGKILL")


@dataclass
class TrialResult:
    trial: int
    config: str
    mode: str                           # "cli": a flowengine run process; "engine": Engine.run()
    kill_at_bytes: int                  # kill once the outputs hold this many bytes (0: at once)
    delay_s: float | None = None        # from "every worker exists" to the kill (measured)
    startup_s: float | None = None      # from the command's start to every worker existing
    killed_pid: int = 0
    killed_stage: str | None = None     # as the coordinator's message names it
    detection_s: float | None = None    # kill -> coordinator exit
    exit_code: int | None = None
    outputs: dict[str, str] = field(default_factory=dict)   # path -> complete/part/missing
    problems: list[str] = field(default_factory=list)
    message: str = ""

    @property
    def ok(self) -> bool:
        return not self.problems


# ---- /proc ---------------------------------------------------------------------------------

def _process_table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, state) of every process."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue                     # ended meanwhile
        fields = stat[stat.rindex(")") + 2:].split()
        table[int(entry)] = (int(fields[1]), fields[0])
    return table


def _descendants(root: int, table: dict[int, tuple[int, str]]) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in table.items():
        children.setdefault(parent, []).append(pid)
    found, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def alive_pids(pids: set[int]) -> list[int]:
    """The pids that still run (a zombie has ended; its parent just has not reaped it)."""
    table = _process_table()
    return sorted(p for p in pids if p in table and table[p][1] != "Z")


def worker_pids(coordinator: int) -> tuple[set[int], set[int]]:
    """(worker pids, every descendant) of the coordinator: workers are the forkserver's children."""
    table = _process_table()
    everything = _descendants(coordinator, table)
    helpers = {p for p in everything if table[p][0] == coordinator}
    workers = {p for p in everything if table[p][0] in helpers}
    return workers, everything


# ---- inputs and outputs --------------------------------------------------------------------

@contextlib.contextmanager
def killed_if_left_running(process: subprocess.Popen) -> Iterator[subprocess.Popen]:
    """A run started in its own session, SIGKILLed with its whole process group (workers,
    forkserver) if the block leaves it running, as a failed check does: nothing of it
    outlives the test or trial."""
    try:
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()


def make_input(directory: Path, seconds: float) -> Path:
    """out/tone.mp3 of configs/tone.yaml (`seconds` long), the input of transcode and fanout,
    made in this process (the Runner: no worker start-up)."""
    from flowengine.config import resolve_run
    from flowengine.local.run import make_output_dirs, run_in_process

    path = directory / "out" / "tone.mp3"
    run = resolve_run(CONFIGS_DIR / "tone.yaml", [f"tone.seconds={seconds}", f"sink.path={path}"])
    make_output_dirs(run)
    run_in_process(run)
    return path


def output_bytes(run_dir: Path, case: ChaosCase) -> int:
    """Bytes the trial's outputs hold so far, under their final name or as NAME.part."""
    total = 0
    for name in case.outputs.values():
        for path in (run_dir / name, run_dir / (name + ".part")):
            try:
                total += path.stat().st_size
            except FileNotFoundError:
                pass
    return total


def wait_for_output(run_dir: Path, case: ChaosCase, size: int, ended) -> bool:
    """Wait until the outputs hold `size` bytes: True, or False when `ended()` says the run
    is over (or OUTPUT_TIMEOUT_S passed) first."""
    deadline = time.monotonic() + OUTPUT_TIMEOUT_S
    while output_bytes(run_dir, case) < size:
        if ended() or time.monotonic() > deadline:
            return False
        time.sleep(_POLL_S)
    return True


def draw_kill_point(rng: random.Random, max_bytes: int) -> int:
    """Output bytes to wait for before the kill: 0 (start-up) one time in four, else 1..max."""
    return 0 if rng.random() < 0.25 else rng.randint(1, max_bytes)


def decoded_seconds(path: Path) -> float:
    """Seconds of audio a file decodes to (every frame decoded: a truncated file shows)."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        samples = sum(frame.samples for frame in container.decode(stream))
        return samples / stream.codec_context.sample_rate


def _check_outputs(result: TrialResult, run_dir: Path, case: ChaosCase, seconds: float) -> None:
    """`seconds`: the whole length of a complete output (a case that reads the input file
    outputs that file's length: a branch may finish it before the kill stops the run)."""
    for name in case.outputs.values():
        final, part = run_dir / name, run_dir / (name + ".part")
        if final.exists() and part.exists():
            result.problems.append(f"{name}: both the final file and {name}.part exist")
        if final.exists():
            result.outputs[name] = "complete"
            got = decoded_seconds(final)
            if got < seconds - 0.1:
                result.problems.append(f"{name}: under its final name but only {got:.2f} s "
                                       f"of {seconds:.2f} s")
        elif part.exists():
            result.outputs[name] = "part"
            if result.mode == "cli" and result.exit_code != 0 \
                    and f"{name}.part" not in result.message:
                result.problems.append(f"{name}.part left but not named in the error message")
        else:
            result.outputs[name] = "missing"


# ---- one trial -----------------------------------------------------------------------------

def run_cli_trial(trial: int, case: ChaosCase, work: Path, rng: random.Random, *, seconds: float,
                  input_path: str, max_bytes: int = MAX_KILL_BYTES,
                  deadline: float = DEADLINE_S) -> TrialResult:
    """`flowengine run` as its own process; SIGKILL one random worker once the outputs hold a
    random number of bytes; check what is left."""
    run_dir = work / f"trial{trial:03d}-{case.config}"
    tmp = run_dir / "tmp"
    tmp.mkdir(parents=True)
    result = TrialResult(trial, case.config, "cli", draw_kill_point(rng, max_bytes))
    sets = case.overrides(seconds, input_path, run_dir)
    command = [sys.executable, "-m", "flowengine", "run", str(CONFIGS_DIR / f"{case.config}.yaml"),
               "--quiet", *[arg for value in sets for arg in ("--set", value)]]
    env = {**os.environ, "TMPDIR": str(tmp)}
    process = subprocess.Popen(command, cwd=run_dir, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    try:
        seen = _kill_one_worker(process, case, rng, result, run_dir)
        if result.killed_pid:
            killed_at = time.monotonic()
            try:
                process.wait(timeout=max(deadline, 1.0) * 3)
            except subprocess.TimeoutExpired:
                result.problems.append(f"the coordinator did not exit within {deadline * 3:.0f} s")
                process.kill()
                process.wait()
            result.detection_s = round(time.monotonic() - killed_at, 4)
            if result.detection_s > deadline:
                result.problems.append(f"the run ended {result.detection_s:.2f} s after the kill "
                                       f"(limit {deadline:.0f} s)")
            left = alive_pids(seen[0])
            if left:
                result.problems.append(f"workers still running at the coordinator's exit: {left}")
            _check_nothing_left(result, seen[1], tmp)
    finally:
        if process.poll() is None:
            process.kill()
        _, stderr = process.communicate()
    result.exit_code = process.returncode
    result.message = stderr.strip()
    _check_message(result)
    _check_outputs(result, run_dir, case, decoded_seconds(Path(input_path))
                   if case.needs_input else seconds)
    return result


def run_engine_trial(trial: int, case: ChaosCase, work: Path, rng: random.Random, *,
                     seconds: float, input_path: str, max_bytes: int = MAX_KILL_BYTES,
                     deadline: float = DEADLINE_S) -> TrialResult:
    """The coordinator in this process (`Engine.run()`); a thread SIGKILLs one random worker
    once the outputs hold a random number of bytes. Detection: kill -> WorkerFailed (the run
    already cleaned up)."""
    from flowengine.config import resolve_run
    from flowengine.engine import Engine, build_plan
    from flowengine.errors import WorkerFailed
    from flowengine.local.run import make_output_dirs

    run_dir = work / f"trial{trial:03d}-{case.config}"
    tmp = run_dir / "tmp"
    tmp.mkdir(parents=True)
    result = TrialResult(trial, case.config, "engine", draw_kill_point(rng, max_bytes))
    run = resolve_run(CONFIGS_DIR / f"{case.config}.yaml",
                      case.overrides(seconds, input_path, run_dir))
    make_output_dirs(run)
    engine = Engine(build_plan(run.config, run_dir=str(tmp / "run")), handle_signals=False)
    victim = rng.randrange(len(engine.plan.workers))     # drawn here: the thread takes no rng
    killed: dict[str, float] = {}
    finished = threading.Event()

    def kill_one_worker() -> None:
        started = time.monotonic()
        while len(engine.pids) < len(engine.plan.workers):
            if finished.is_set() or time.monotonic() - started > START_TIMEOUT_S:
                return
            time.sleep(_POLL_S)
        running = time.monotonic()
        result.startup_s = round(running - started, 3)
        if not wait_for_output(run_dir, case, result.kill_at_bytes, finished.is_set):
            return
        os.kill(engine.pids[victim], signal.SIGKILL)
        killed["at"] = time.monotonic()
        result.delay_s = round(killed["at"] - running, 3)

    thread = threading.Thread(target=kill_one_worker, name="chaos killer", daemon=True)
    thread.start()
    try:
        engine.run()
        result.exit_code = 0
    except WorkerFailed as exc:
        ended = time.monotonic()
        result.exit_code, result.message = 1, str(exc)
        if "at" in killed:
            result.detection_s = round(ended - killed["at"], 4)
    finally:
        finished.set()
        thread.join()
    if "at" not in killed:
        result.problems.append(f"the run ended (exit {result.exit_code}) before its outputs "
                               f"held {result.kill_at_bytes} bytes (they hold "
                               f"{output_bytes(run_dir, case)})")
        return result
    result.killed_pid = engine.pids[victim]
    _check_message(result)
    expected = engine.plan.workers[victim].stage
    if result.killed_stage not in (None, expected):
        result.problems.append(f"the message names stage {result.killed_stage!r}; the killed "
                               f"worker was of stage {expected!r}")
    if result.detection_s is not None and result.detection_s > deadline:
        result.problems.append(f"WorkerFailed came {result.detection_s:.2f} s after the kill "
                               f"(limit {deadline:.0f} s)")
    left = alive_pids(set(engine.pids))
    if left:
        result.problems.append(f"workers still running after the run: {left}")
    _check_nothing_left(result, set(), tmp)
    _check_outputs(result, run_dir, case, decoded_seconds(Path(input_path))
                   if case.needs_input else seconds)
    return result


TRIALS = {"cli": run_cli_trial, "engine": run_engine_trial}


def _kill_one_worker(process: subprocess.Popen, case: ChaosCase, rng: random.Random,
                     result: TrialResult, run_dir: Path) -> tuple[set[int], set[int]]:
    """Wait for every worker, then for the trial's output bytes, then SIGKILL one.
    (workers, all seen)."""
    started = time.monotonic()
    workers: set[int] = set()
    everything: set[int] = set()
    while len(workers) < case.workers:
        if process.poll() is not None:
            result.problems.append(f"the run ended (exit {process.returncode}) before "
                                   f"{case.workers} workers were running")
            return workers, everything
        if time.monotonic() - started > START_TIMEOUT_S:
            result.problems.append(f"only {len(workers)} of {case.workers} workers within "
                                   f"{START_TIMEOUT_S:.0f} s")
            return workers, everything
        found, descendants = worker_pids(process.pid)
        workers |= found
        everything |= descendants
        time.sleep(_POLL_S)
    running = time.monotonic()
    result.startup_s = round(running - started, 3)
    if not wait_for_output(run_dir, case, result.kill_at_bytes,
                           lambda: process.poll() is not None) or process.poll() is not None:
        result.problems.append(f"the run ended (exit {process.returncode}) before its outputs "
                               f"held {result.kill_at_bytes} bytes")
        return workers, everything
    victim = rng.choice(sorted(workers))
    os.kill(victim, signal.SIGKILL)
    result.delay_s = round(time.monotonic() - running, 3)
    result.killed_pid = victim
    return workers, everything


def _check_nothing_left(result: TrialResult, everything: set[int], tmp: Path) -> None:
    deadline = time.monotonic() + ORPHAN_GRACE_S
    while alive_pids(everything) and time.monotonic() < deadline:
        time.sleep(0.02)
    left = alive_pids(everything)
    if left:
        result.problems.append(f"processes left {ORPHAN_GRACE_S:.0f} s after the coordinator "
                               f"exited: {left}")
    leftovers = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*"))
    if leftovers:
        result.problems.append(f"left in TMPDIR: {', '.join(leftovers)}")


def _check_message(result: TrialResult) -> None:
    if not result.killed_pid:
        return
    if result.exit_code in (0, None):
        result.problems.append(f"exit code {result.exit_code} after a worker was killed")
    match = _FAILED.search(result.message)
    if match is None:
        result.problems.append(f"the error message does not say which stage was killed: "
                               f"{result.message[:300]!r}")
    elif int(match.group(3)) != result.killed_pid:
        result.problems.append(f"the message names pid {match.group(3)}, the kill was pid "
                               f"{result.killed_pid}")
    else:
        result.killed_stage = match.group(1)


# ---- many trials ---------------------------------------------------------------------------

def run_trials(trials: int, seed: int, configs: list[str], work: Path, *, seconds: float,
               max_bytes: int = MAX_KILL_BYTES, mode: str = "cli", deadline: float = DEADLINE_S
               ) -> list[TrialResult]:
    """`trials` trials cycling over `configs`, with one shared input MP3 when one needs it."""
    rng = random.Random(seed)
    cases = [CASES[name] for name in configs]
    input_path = ""
    if any(case.needs_input for case in cases):
        input_path = str(make_input(work / "input", seconds))
    trial = TRIALS[mode]
    return [trial(n, cases[n % len(cases)], work, rng, seconds=seconds, input_path=input_path,
                  max_bytes=max_bytes, deadline=deadline)
            for n in range(trials)]


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100), linear between the closest ranks."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * q / 100.0
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--configs", default="tone,transcode,fanout,mix",
                        help="comma-separated names of configs/*.yaml to cycle over")
    parser.add_argument("--seconds", type=float, default=300.0,
                        help="audio length of every run, long enough that the kill lands inside "
                             "it (60 s of tone now encodes in < 2 s)")
    parser.add_argument("--max-bytes", type=int, default=MAX_KILL_BYTES,
                        help="kill once the outputs hold up to this many bytes (drawn per trial; "
                             "0 one time in four: at start-up)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent
                        / "results" / "chaos.json")
    parser.add_argument("--mode", choices=sorted(TRIALS), default="cli",
                        help="cli: each run a `flowengine run` process (default); engine: "
                             "Engine.run() in this process")
    parser.add_argument("--keep", action="store_true", help="keep the trial directories")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _bench_common import machine_info

    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = sorted(set(configs) - set(CASES))
    if unknown:
        parser.error(f"unknown config(s) {', '.join(unknown)}; known: {', '.join(CASES)}")
    work = Path(tempfile.mkdtemp(prefix="flowengine-chaos-"))
    try:
        results = run_trials(args.trials, args.seed, configs, work, seconds=args.seconds,
                             max_bytes=args.max_bytes, mode=args.mode)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    for r in results:
        status = "ok" if r.ok else "FAILED: " + "; ".join(r.problems)
        print(f"trial {r.trial:3d} {r.config:9s} killed {r.killed_stage or '?':9s} at "
              f"{r.kill_at_bytes:6d} output bytes ({r.delay_s or 0:5.2f} s), detected in "
              f"{r.detection_s or 0:.3f} s, exit {r.exit_code}, "
              f"outputs {r.outputs}: {status}")
    times = [r.detection_s for r in results if r.detection_s is not None]
    summary = {"trials": len(results), "ok": sum(r.ok for r in results), "seed": args.seed,
               "mode": args.mode,
               "configs": configs, "seconds": args.seconds, "max_bytes": args.max_bytes,
               "deadline_s": DEADLINE_S}
    if times:
        summary.update(detection_p50_s=round(percentile(times, 50), 4),
                       detection_p99_s=round(percentile(times, 99), 4),
                       detection_max_s=round(max(times), 4),
                       detection_mean_s=round(statistics.fmean(times), 4))
    stages: dict[str, int] = {}
    for r in results:
        if r.killed_stage:
            key = f"{r.config}:{r.killed_stage}"
            stages[key] = stages.get(key, 0) + 1
    summary["killed_stages"] = dict(sorted(stages.items()))
    import json

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"benchmark": "chaos", "machine": machine_info(),
                                    "summary": summary,
                                    "trials": [asdict(r) | {"ok": r.ok} for r in results]},
                                   indent=2) + "\n")
    print(f"{summary['ok']}/{summary['trials']} trials ok; detection (kill -> coordinator exit) "
          f"p50 {summary.get('detection_p50_s', float('nan')):.3f} s, "
          f"p99 {summary.get('detection_p99_s', float('nan')):.3f} s, "
          f"max {summary.get('detection_max_s', float('nan')):.3f} s; wrote {args.out}")
    return {"summary": summary, "out": str(args.out)}


if __name__ == "__main__":
    _summary = main()["summary"]
    sys.exit(0 if _summary["ok"] == _summary["trials"] else 1)
