"""Fuzz every parser of untrusted bytes: 10 000+ mutated cases per target.

    python benchmarks/fuzz.py                          # every target, 10 000 cases each
    python benchmarks/fuzz.py --cases 500 --target config --target reader
    python benchmarks/fuzz.py --replay benchmarks/results/fuzz-failures/config-0.json
    python benchmarks/fuzz.py --engine atheris --target wire --cases 20000   # coverage-guided

Targets (tests/fuzz_targets.py): the wire decoder, the TCP ingest framing, the YAML config
loader, the decoders (mp3, aac, opus, flac, wav) and the file reader. Each case runs in a
worker process under a deadline (--timeout: no answer is a hang, the worker is killed and
restarted) and an address-space cap (--memory-mb); anything but the target's typed errors
is a failure. Results: benchmarks/results/fuzz.json (cases, outcomes, failures, worker
RSS at 10 % of the run and at the end, slowest case), merged per target so runs of
different targets can go side by side; each failure is saved with its case as base64
msgpack in benchmarks/results/fuzz-failures/TARGET-N.json (replay it with --replay).

--engine atheris (pip install -e '.[fuzz]') runs libFuzzer's coverage-guided mutation of
one target in this process instead, starting from the same seeds; libFuzzer enforces the
deadline (-timeout) and memory (-rss_limit_mb) and writes crashing inputs under
fuzz-failures/atheris-TARGET-*.

Memory: the worker's RSS grows while a run meets new kinds of input (allocator pools,
FFmpeg's per-codec tables: measured 5-26 MB over 9 000 cases), which alone cannot tell a
high-water mark from a leak. So after the run the first cases that passed run again in
the same worker (--replay-cases, default 2 000): a leak of L bytes per case grows RSS by
L x that count on the replay, a high-water mark does not (measured: opus, 6 000 cases
replayed twice, 0.0 MB; the reader, -8 to +2 MB of noise).
"""

from __future__ import annotations

import argparse
import collections
import fcntl
import json
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from hypothesis import HealthCheck, Phase, given, seed, settings  # noqa: E402

import fuzz_targets  # noqa: E402
from _bench_common import RESULTS_DIR, machine_info, print_table  # noqa: E402
from fuzz_targets import TARGETS, FuzzWorker, decode_case, encode_case  # noqa: E402

FAILURES_DIR = RESULTS_DIR / "fuzz-failures"
RESULTS_FILE = RESULTS_DIR / "fuzz.json"
MAX_SAVED_FAILURES = 20


def fuzz_target(name: str, cases: int, worker: FuzzWorker, run_seed: int,
                replay: int = 0) -> dict:
    """Run `cases` hypothesis-generated cases of one target; every outcome is recorded,
    none stops the run (no shrinking: the failing case itself is saved). Then the first
    `replay` cases that passed run again (`replay_growth`)."""
    outcomes: collections.Counter = collections.Counter()
    failures: list[dict] = []
    rss: dict[str, float] = {}
    slowest = {"seconds": 0.0}
    warm_at = max(1, cases // 10)
    count = 0
    passed: list = []

    @seed(run_seed)
    @settings(max_examples=cases, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(TARGETS[name].cases())
    def one(case) -> None:
        nonlocal count
        outcome = worker.run(name, case)
        count += 1
        outcomes[f"{outcome.status}:{outcome.label}"] += 1
        if outcome.failed:
            failures.append(_save_failure(name, len(failures), outcome, case))
            if outcome.status in ("hang", "crash", "memory"):
                rss.pop("warm_mb", None)    # a new worker: measure growth from its warm point
        else:
            if len(passed) < replay:
                passed.append(case)
            mb = outcome.rss_bytes / 2**20
            rss["max_mb"] = max(rss.get("max_mb", 0.0), mb)
            if "warm_mb" not in rss and count >= warm_at:
                rss["warm_mb"], rss["warm_case"] = mb, count
            rss["end_mb"] = mb
        if outcome.seconds > slowest["seconds"]:
            slowest.update(seconds=round(outcome.seconds, 4),
                           outcome=f"{outcome.status}:{outcome.label}",
                           case_bytes=len(encode_case(case)) * 3 // 4)

    start = time.perf_counter()
    one()
    seconds = time.perf_counter() - start
    growth = rss.get("end_mb", 0.0) - rss.get("warm_mb", rss.get("end_mb", 0.0))
    rss["replay_growth"] = replay_growth(name, passed, worker)
    return {"cases": count, "seconds": round(seconds, 1),
            "cases_per_second": round(count / seconds, 1),
            "outcomes": dict(sorted(outcomes.items())),
            "failures": len(failures), "failure_files": [f["file"] for f in failures],
            "failure_kinds": dict(collections.Counter(f"{f['status']}:{f['label']}"
                                                      for f in failures)),
            "worker_restarts": worker.restarts,
            "worker_rss_mb": {k: round(v, 1) if isinstance(v, float) else v
                              for k, v in rss.items()} | {"growth_after_warm": round(growth, 1)},
            "slowest_case": slowest,
            "allowed_errors": [e.__name__ for e in TARGETS[name].allowed]}


def replay_growth(name: str, cases: list, worker: FuzzWorker) -> dict:
    """RSS growth of the worker over a second run of `cases` (a leak grows it, a high-water
    mark does not); measured from after the first replayed case."""
    if len(cases) < 2:
        return {"cases": 0}
    first = worker.run(name, cases[0])
    restarts = worker.restarts
    last = first
    for case in cases[1:]:
        last = worker.run(name, case)
    if worker.restarts != restarts or last.failed:
        return {"cases": len(cases), "growth_mb": None, "note": "the worker was restarted"}
    return {"cases": len(cases),
            "growth_mb": round((last.rss_bytes - first.rss_bytes) / 2**20, 1)}


def _save_failure(name: str, index: int, outcome, case) -> dict:
    record = {"target": name, "status": outcome.status, "label": outcome.label,
              "detail": outcome.detail, "seconds": round(outcome.seconds, 3),
              "case_b64": encode_case(case)}
    if index < MAX_SAVED_FAILURES:
        FAILURES_DIR.mkdir(parents=True, exist_ok=True)
        path = FAILURES_DIR / f"{name}-{index}.json"
        path.write_text(json.dumps(record, indent=1) + "\n")
        record["file"] = str(path.relative_to(ROOT))
    else:
        record["file"] = None
    print(f"  {name}: {outcome.status} {outcome.label}: {outcome.detail.strip()[-300:]}",
          flush=True)
    return record


def _merge_results(per_target: dict, settings_used: dict) -> None:
    """Update fuzz.json target by target (locked: several runs may finish together)."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    with open(RESULTS_DIR / ".fuzz.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        old = json.loads(RESULTS_FILE.read_text()) if RESULTS_FILE.exists() else {}
        targets = {**old.get("targets", {}),
                   **{k: {**v, **settings_used} for k, v in per_target.items()}}
        payload = {"benchmark": "fuzz", "machine": machine_info(),
                   "total_cases": sum(t["cases"] for t in targets.values()),
                   "total_failures": sum(t["failures"] for t in targets.values()),
                   "fuzzer_max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                                              / 1024, 1),
                   "targets": dict(sorted(targets.items()))}
        RESULTS_FILE.write_text(json.dumps(payload, indent=2) + "\n")


# ---------------------------------------------------------------- atheris (libFuzzer)

_SEPARATOR = b"|frame|"     # splits one libFuzzer input into frames / packets


def _atheris_case(name: str, data: bytes):
    """A target's case from the raw bytes libFuzzer mutates."""
    if name == "wire":
        return data.split(_SEPARATOR)
    if name == "framing":
        return {"data": data, "cuts": [len(data) // 3], "max": 1000}
    if name == "config":
        return {"text": data.decode("utf-8", "replace"), "overrides": [], "via_file": False}
    if name == "reader":
        exts = fuzz_targets.READER_EXTENSIONS
        return {"ext": exts[data[0] % len(exts)] if data else ".mp3", "data": data[1:],
                "mode": "pcm", "chunk": 1024}
    codec = name.removeprefix("decoder-")
    case = {"codec": codec, "chunk": 1024, "on_error": "raise", "packets": codec == "opus",
            "chunks": data.split(_SEPARATOR) if codec == "opus" else [data]}
    if codec == "opus":
        case["extradata"] = fuzz_targets.encoded_packets("opus", 48000, 2)[1]
    if codec == "wav":
        case["fmt"] = [8000, 1, "s16"]
    return case


def _atheris_seeds(name: str) -> list[bytes]:
    if name == "wire":
        return [_SEPARATOR.join(bytes(f) for f in m) for m in fuzz_targets._valid_messages()]
    if name == "framing":
        return list(fuzz_targets.ingest_seeds())
    if name == "config":
        return [t.encode() for t in fuzz_targets.config_seeds()]
    if name == "reader":
        exts = fuzz_targets.READER_EXTENSIONS
        return [bytes([exts.index(ext)]) + data
                for ext, found in fuzz_targets.file_seeds().items() for data in found]
    codec = name.removeprefix("decoder-")
    if codec == "opus":
        return [_SEPARATOR.join(fuzz_targets.encoded_packets("opus", 48000, 2)[0])]
    return list(fuzz_targets.stream_seeds(codec))


def run_atheris(name: str, cases: int, timeout: float, memory_mb: int) -> int:
    """libFuzzer on one target, in this process (it exits when done)."""
    import os
    import tempfile

    import atheris
    target = TARGETS[name]
    corpus = Path(tempfile.mkdtemp(prefix=f"fuzz-corpus-{name}-"))
    for n, seed in enumerate(_atheris_seeds(name)):
        (corpus / f"seed{n}").write_bytes(seed)
    FAILURES_DIR.mkdir(parents=True, exist_ok=True)
    os.chdir(tempfile.mkdtemp(prefix="fuzz-work-"))     # config and reader cases write files

    def one_input(data: bytes) -> None:
        try:
            target.run(_atheris_case(name, data))
        except target.allowed:
            pass

    atheris.instrument_all()
    atheris.Setup([sys.argv[0], f"-runs={cases}", f"-timeout={max(1, int(timeout))}",
                   f"-rss_limit_mb={memory_mb}", "-max_len=65536", "-print_final_stats=1",
                   f"-artifact_prefix={FAILURES_DIR}/atheris-{name}-", str(corpus)], one_input)
    atheris.Fuzz()
    return 0


def replay(path: Path, timeout: float, memory_mb: int) -> int:
    record = json.loads(path.read_text())
    with FuzzWorker(timeout, memory_mb) as worker:
        outcome = worker.run(record["target"], decode_case(record["case_b64"]))
    print(f"{record['target']}: {outcome.status} {outcome.label} in {outcome.seconds:.3f} s")
    print(outcome.detail)
    return 1 if outcome.failed else 0


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=10_000, help="cases per target")
    parser.add_argument("--target", action="append", choices=sorted(TARGETS),
                        help="a target to fuzz (repeat; default: all)")
    parser.add_argument("--timeout", type=float, default=10.0, help="deadline of one case (s)")
    parser.add_argument("--memory-mb", type=int, default=1536,
                        help="address space a case may add to the warm worker (MB)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--engine", choices=["hypothesis", "atheris"], default="hypothesis")
    parser.add_argument("--replay", type=Path, help="run one saved failure again")
    parser.add_argument("--replay-cases", type=int, default=2000,
                        help="cases run a second time to tell a leak from a high-water mark")
    args = parser.parse_args(argv)
    if args.replay:
        return {"exit_code": replay(args.replay, args.timeout, args.memory_mb)}
    names = args.target or sorted(TARGETS)
    if args.engine == "atheris":
        return {"exit_code": run_atheris(names[0], args.cases, args.timeout, args.memory_mb)}
    rows, per_target = [], {}
    for name in names:
        print(f"{name}: {args.cases} cases ...", flush=True)
        with FuzzWorker(args.timeout, args.memory_mb) as worker:
            result = fuzz_target(name, args.cases, worker, args.seed,
                                 min(args.replay_cases, args.cases))
        per_target[name] = result
        _merge_results({name: result}, {"timeout_s": args.timeout,
                                        "memory_cap_mb": args.memory_mb})
        rows.append((name, result["cases"], result["seconds"], result["failures"],
                     result["worker_rss_mb"].get("max_mb"),
                     result["worker_rss_mb"]["growth_after_warm"],
                     result["worker_rss_mb"]["replay_growth"].get("growth_mb"),
                     result["slowest_case"]["seconds"]))
    print_table(["target", "cases", "seconds", "failures", "max RSS MB", "RSS growth MB",
                 "on replay MB", "slowest s"], rows)
    print(f"wrote {RESULTS_FILE}")
    return {"targets": per_target,
            "exit_code": 1 if any(r["failures"] for r in per_target.values()) else 0}


if __name__ == "__main__":
    sys.exit(main()["exit_code"])
