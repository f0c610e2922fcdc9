"""Workers placed by Ray: the folder transcode over 2 fake nodes vs the same run on one machine.

The run a user writes (``bench_scaling``'s folder transcode: ``files`` ->
``resample`` 48 kHz -> ``aac_encoder`` -> ``file_sink``, 2 replicas, whole
streams per replica) twice on this machine, interleaved:

- ``engine: local``: the workers forked by this process's forkserver;
- ``engine: ray``: the same run on a Ray test cluster of 3 nodes on 127.0.0.1
  (``flowengine.engine.cluster.testing``): the 2 replicas ``placement:
  {resources: {bench_slot: 1}, spread: true}`` land one on each worker node,
  forked by that node's host agent, each claiming its next file through the
  coordinator; CURVE on every socket (as a cluster run has it).

Reported separately, because they are different costs:

- **throughput** (seconds of audio per second of the run, from ``start`` to
  the last sink's done: ``RunReport.wall_seconds``): Ray is not on the data
  path, so the ratio ray / local should be ~1 (target >= 0.95x);
- **fixed cost** (``Engine.run()`` minus the run itself: connecting to the
  cluster, placement groups, one host agent per node, ports; then stopping the
  agents and disconnecting): what a Ray run adds whatever its length, against
  the local run's (each side's forkserver preloads the chain's modules).

The cluster itself (3 nodes: ~5-10 s, ~1 GB) is started once, outside the
timings. Needs ray (``pip install 'flowengine[ray]'``).

    python benchmarks/bench_cluster.py [--quick]
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _bench_common import print_table, repetitions, resolve_config, size_parser, \
    spread, write_results  # noqa: E402
from bench_scaling import chain_stages, make_inputs  # noqa: E402

TARGET = 0.95
SLOT = "bench_slot"


def ray_missing() -> str | None:
    """Why this benchmark cannot run here, or None."""
    import importlib.util
    if importlib.util.find_spec("ray") is None:
        return "ray is not installed (pip install 'flowengine[ray]')"
    return None


def run(config: dict) -> dict:
    from flowengine.engine import Engine, build_plan

    plan = build_plan(resolve_config(config).config)
    started = time.perf_counter()
    engine = Engine(plan, handle_signals=False)
    report = engine.run()
    total = time.perf_counter() - started
    if not report.audit_ok:
        raise RuntimeError(f"{config['name']}: the audit found lost or invented samples")
    return {"total_s": total, "run_s": report.wall_seconds,
            "startup_s": total - report.wall_seconds,
            "throughput": report.audio_seconds / report.wall_seconds,
            "audio_s": report.audio_seconds,
            "hosts": sorted({w.host or "local" for s in report.stages for w in s.workers})}


def main(argv: list[str] | None = None) -> dict:
    parser = size_parser(__doc__, "4 files of 5 s, 2 repetitions")
    args = parser.parse_args(argv)
    missing = ray_missing()
    if missing:
        print(f"bench_cluster: skipped: {missing}")
        return {"skipped": missing}
    files, seconds = (4, 5.0) if args.quick else (8, 20.0)
    repeat = repetitions(args, quick=2, full=3)
    from flowengine.engine.cluster.testing import TestCluster
    from flowengine.config.keys import generate_keys
    from flowengine.engine.worker.forkserver import start_forkserver

    # This process's forkserver preloads what the chain needs, as each host agent's does
    # (the first start decides: TestCluster.start would start it with nothing more).
    start_forkserver([s["op"] for s in chain_stages("x", Path("."))])
    cluster_started = time.perf_counter()
    cluster = TestCluster(cpus=2, workers={"a": {SLOT: 1}, "b": {SLOT: 1}}).start()
    cluster_s = time.perf_counter() - cluster_started
    try:
        with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp_name:
            tmp = Path(tmp_name)
            (tmp / "in").mkdir()
            make_inputs(tmp / "in", files, seconds)
            generate_keys(tmp / "keys")
            placement = {"placement": {"resources": {SLOT: 1}, "spread": True}}
            runs: dict[str, list[dict]] = {"local": [], "ray": []}
            for i in range(repeat + 1):          # the first of each is a warm-up
                for engine in ("local", "ray"):
                    out = tmp / f"{engine}{i}"
                    out.mkdir()
                    config = {"name": f"cluster-{engine}",
                              "stages": chain_stages(str(tmp / "in" / "*.mp3"), out,
                                                     replicas=2)}
                    if engine == "ray":
                        for stage in config["stages"][1:]:
                            stage.update(placement)
                        config["cluster"] = {"engine": "ray", "address": cluster.address}
                        config["security"] = {"keys": str(tmp / "keys")}
                    result = run(config)
                    if len(list(out.glob("*.aac"))) != files:
                        raise RuntimeError(f"{engine}: not every file was written")
                    if i:
                        runs[engine].append(result)
    finally:
        cluster.shutdown()
    local, ray = runs["local"], runs["ray"]
    throughput = {k: spread(r["throughput"] for r in v) for k, v in runs.items()}
    startup = {k: spread(r["startup_s"] for r in v) for k, v in runs.items()}
    ratio = throughput["ray"]["median"] / throughput["local"]["median"]
    met = ratio >= TARGET
    print_table(["engine", "audio s/s", "run s", "fixed s", "total s", "hosts"],
                [[name, throughput[name]["median"],
                  spread(r["run_s"] for r in entries)["median"], startup[name]["median"],
                  spread(r["total_s"] for r in entries)["median"],
                  " ".join(entries[0]["hosts"])] for name, entries in runs.items()])
    report = {
        "files": files, "seconds_per_file": seconds, "quick": args.quick, "repeat": repeat,
        "target": f"ray / local throughput >= {TARGET}x", "met": met,
        "throughput_ratio": round(ratio, 3),
        "throughput": throughput, "startup_s": startup,
        "ray_startup_extra_s": round(startup["ray"]["median"] - startup["local"]["median"], 3),
        "cluster_start_s": round(cluster_s, 2),
        "hosts": {"local": local[0]["hosts"], "ray": ray[0]["hosts"]},
        "pid": os.getpid()}
    path = write_results("cluster", report)
    print(f"target (ray / local throughput >= {TARGET}x): {'met' if met else 'NOT met'} "
          f"({ratio:.3f}x); a Ray run's fixed cost: {startup['ray']['median']:.2f} s (local "
          f"{startup['local']['median']:.2f} s); the test cluster took {cluster_s:.1f} s to "
          f"start; wrote {path}")
    return report


if __name__ == "__main__":
    main()
