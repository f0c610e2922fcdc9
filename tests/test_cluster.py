"""Workers on a Ray cluster (cluster: {engine: ray}): placement, the same bytes as on one
machine, and the coordinator's failure rules unchanged: a dead worker or host agent named
with its host in < 2 s, a frozen worker found by its heartbeats, an infeasible placement
named, restart on the same node, Ctrl-C drains; nothing left on any node after each case.

One real Ray test cluster per module (head + nodes 'a' and 'b' with custom resources
node_a / node_b and labels role: a / b, on 127.0.0.1), real processes and sockets."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flowengine.engine.cluster.testing import LOOPBACK_ENV, TestCluster, leftovers, \
    process_table

# Read by ray when it is imported: every Ray process of the test cluster on 127.0.0.1.
os.environ.update(LOOPBACK_ENV)
ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'flowengine[ray]' "
                                        "(the test extra installs it)")

from flowengine.config.model import RunConfig  # noqa: E402
from flowengine.engine import Engine, build_plan  # noqa: E402
from flowengine.config.keys import generate_keys  # noqa: E402
from flowengine.errors import WorkerFailed  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    # Node a also has the "encoder" slots of docs/cluster.md's worked example.
    started = TestCluster(workers={"a": {"node_a": 8, "encoder": 2},
                                   "b": {"node_b": 8}}).start()
    keys = tmp_path_factory.mktemp("keys") / "keys"
    generate_keys(keys)
    started.keys = str(keys)
    # This process drives the runs below: connected once, the launcher uses the connection.
    # ray.init makes SIGTERM exit the process: later tests fork children that inherit it.
    kept = signal.getsignal(signal.SIGTERM)
    ray.init(address=started.address, logging_level="WARNING")
    signal.signal(signal.SIGTERM, kept)
    try:
        yield started
    finally:
        ray.shutdown()
        started.shutdown()
        assert signal.getsignal(signal.SIGTERM) == kept


@pytest.fixture(autouse=True)
def nothing_left_on_any_node(cluster):
    yield
    assert leftovers() == [], "flowengine processes left on the cluster's nodes"


def on_cluster(cluster, config: dict, **cluster_keys) -> RunConfig:
    return RunConfig.model_validate({**config, "security": {"keys": cluster.keys},
                                     "cluster": {"engine": "ray", "address": cluster.address,
                                                 **cluster_keys}})


def tone_run(out: Path, seconds: float = 1.0, realtime: bool = False,
             **placements: dict) -> dict:
    """tone -> resample -> gain -> mp3 -> file, `placements` by stage name."""
    stages = [
        {"name": "tone", "op": "tone", "params": {"frequency": 440, "seconds": seconds,
                                                  "sample_rate": 44100, "channels": 2,
                                                  "realtime": realtime}},
        {"name": "resample", "op": "resample", "params": {"sample_rate": 48000}},
        {"name": "gain", "op": "gain", "params": {"gain_db": -6}},
        {"name": "encode", "op": "mp3_encoder", "params": {"bitrate": 128000}},
        {"name": "sink", "op": "file_sink", "params": {"path": str(out)}}]
    for stage in stages:
        stage.update(placements.get(stage["name"], {}))
    return {"name": "tone", "stages": stages}


def hosts(report) -> dict[str, list[str]]:
    return {s.name: [w.host for w in s.workers] for s in report.stages}


def maps_ray(pid: int) -> bool:
    return "site-packages/ray/" in Path(f"/proc/{pid}/maps").read_text()


def test_placement_lands_on_the_requested_nodes_and_workers_never_load_ray(cluster, tmp_path):
    worker_pids: list[int] = []

    def look(report) -> None:
        if not worker_pids:
            worker_pids.extend(w.pid for s in report.stages for w in s.workers)
            assert [pid for pid in worker_pids if maps_ray(pid)] == []

    config = tone_run(tmp_path / "out.mp3", seconds=2.0, realtime=True,
                      resample={"placement": {"resources": {"node_a": 1}}},
                      gain={"placement": {"labels": {"role": "b"}}},
                      encode={"replicas": 2, "placement": {"resources": {"CPU": 1},
                                                           "spread": True}})
    engine = Engine(build_plan(on_cluster(cluster, config)), progress=look)
    report = engine.run()
    placed = hosts(report)
    assert placed["resample"] == [cluster.host("a")]
    assert placed["gain"] == [cluster.host("b")]
    assert placed["tone"] == placed["sink"] == [cluster.host("head")]  # the coordinator's node
    assert len(set(placed["encode"])) == 2                             # spread over hosts
    assert worker_pids and report.audit_ok
    assert [s.hosts for s in engine.plan.stages] == [placed[s.name] for s in engine.plan.stages]
    # Every endpoint is a tcp:// one of the host that binds it, with CURVE on.
    assert engine.plan.control_endpoint.startswith("tcp://127.0.0.1:")
    assert all(w.inbox_endpoint.startswith("tcp://127.0.0.1:") and w.curve is not None
               for w in engine.plan.workers if w.inbox_endpoint)
    assert [p for p in worker_pids if os.path.exists(f"/proc/{p}")] == []


def _config_on_nodes(path: Path, cluster, out_dir: Path) -> dict:
    """A configs/ example with its stages spread round-robin over head, a and b."""
    import yaml
    config = yaml.safe_load(path.read_text())
    spots = [{}, {"placement": {"resources": {"node_a": 1}}},
             {"placement": {"resources": {"node_b": 1}}}]
    for i, stage in enumerate(config["stages"]):
        stage.update(spots[i % 3])
    return config


@pytest.mark.parametrize("name", ["tone", "transcode", "fanout", "mix"])
def test_the_configs_examples_give_the_same_bytes_as_on_one_machine(cluster, tmp_path, name,
                                                                     monkeypatch):
    import yaml
    outputs = {}
    for engine in ("local", "ray"):
        where = tmp_path / engine
        (where / "out").mkdir(parents=True)
        monkeypatch.chdir(where)
        if name in ("transcode", "fanout"):         # they read the tone example's output
            Engine(build_plan(RunConfig.model_validate(
                yaml.safe_load((ROOT / "configs" / "tone.yaml").read_text())))).run()
        config = yaml.safe_load((ROOT / "configs" / f"{name}.yaml").read_text())
        if engine == "ray":
            config = on_cluster(cluster, _config_on_nodes(ROOT / "configs" / f"{name}.yaml",
                                                          cluster, where))
        else:
            config = RunConfig.model_validate(config)
        Engine(build_plan(config)).run()
        outputs[engine] = {p.name: p.read_bytes() for p in sorted((where / "out").iterdir())}
    assert outputs["ray"].keys() == outputs["local"].keys() and outputs["local"]
    for file, data in outputs["local"].items():
        if file.endswith(".opus"):      # an Ogg stream's serial number is random: the audio
            assert decoded(tmp_path / "ray" / "out" / file) == \
                decoded(tmp_path / "local" / "out" / file), f"{name}: {file} differs"
        else:
            assert outputs["ray"][file] == data, f"{name}: {file} differs"


def decoded(path: Path) -> bytes:
    import av
    with av.open(str(path)) as container:
        return b"".join(bytes(plane) for frame in container.decode(audio=0)
                        for plane in frame.planes)


def _failing_run(cluster, tmp_path, act, config: dict | None = None, **engine_options):
    """Run a 4 s paced tone on the cluster; `act(report)` at the first progress; returns
    (engine, WorkerFailed, seconds from the act to the coordinator's first _fail)."""
    acted: dict[str, float] = {}
    failed: dict[str, float] = {}

    def progress(report) -> None:
        if not acted:
            act(engine, report)
            acted["at"] = time.monotonic()

    config = config or tone_run(tmp_path / "out.mp3", seconds=4.0, realtime=True,
                                resample={"placement": {"resources": {"node_a": 1}}},
                                gain={"placement": {"resources": {"node_b": 1}}})
    engine = Engine(build_plan(on_cluster(cluster, config)), progress=progress,
                    **engine_options)
    fail = engine._fail

    def first_fail(tracked, what):        # when the coordinator saw it, before it cleans up
        failed.setdefault("at", time.monotonic())
        return fail(tracked, what)

    engine._fail = first_fail
    with pytest.raises(WorkerFailed) as info:
        engine.run()
    return engine, info.value, failed["at"] - acted["at"]


def _pids_gone(engine: Engine) -> list[str]:
    """The run's worker processes still there (none: what a test wants)."""
    table = process_table()
    return [f"{pid} (parent {table[pid][0]}): {table[pid][1][:80]}" for pid in engine.pids
            if pid in table]


def test_a_killed_worker_is_named_with_its_host_and_signal_within_2_s(cluster, tmp_path):
    def kill_gain(engine, report):
        os.kill(report.stage("gain").workers[0].pid, signal.SIGKILL)

    engine, error, seconds = _failing_run(cluster, tmp_path, kill_gain)
    print(f"SIGKILL of a worker on node b seen after {seconds:.3f} s")
    assert str(error).startswith("stage 'gain' replica 0 (pid ")
    assert str(error).endswith(f" on {cluster.host('b')}) was killed by SIGKILL")
    assert seconds < 2.0
    assert _pids_gone(engine) == []


def test_a_killed_host_agent_fails_the_workers_it_hosted_naming_the_host(cluster, tmp_path):
    def kill_agent_a(engine, report):
        agent = engine.launcher._agents[cluster.nodes["a"]]
        os.kill(agent.info["pid"], signal.SIGKILL)

    engine, error, seconds = _failing_run(cluster, tmp_path, kill_agent_a)
    print(f"SIGKILL of the host agent on node a seen after {seconds:.3f} s")
    assert error.stage == "resample"
    assert f"was lost with its host {cluster.host('a')}: the flowengine host agent there " \
           f"died" in str(error)
    assert seconds < 2.0
    assert _pids_gone(engine) == []     # its workers went with it (orphans.py)


def test_a_frozen_worker_is_found_by_its_heartbeats_and_killed(cluster, tmp_path):
    stopped = []

    def stop_resample(engine, report):
        stopped.append(report.stage("resample").workers[0].pid)
        os.kill(stopped[0], signal.SIGSTOP)

    engine, error, seconds = _failing_run(cluster, tmp_path, stop_resample,
                                          heartbeat_timeout=2.0)
    assert str(error).startswith(f"stage 'resample' replica 0 (pid {stopped[0]} on "
                                 f"{cluster.host('a')}) sent no heartbeat for ")
    # Silent for 2 s since its last stats, which came up to 1 s before it was stopped.
    assert 1.0 <= seconds < 3.5
    assert _pids_gone(engine) == []


def test_an_infeasible_placement_names_the_stage_and_the_resource(cluster, tmp_path):
    from flowengine.engine.cluster.ray_launcher import PlacementError

    config = tone_run(tmp_path / "out.mp3", gain={"placement": {"resources": {"gpu_box": 1}}})
    engine = Engine(build_plan(on_cluster(cluster, config, placement_timeout_s=1)))
    started = time.monotonic()
    with pytest.raises(PlacementError) as info:
        engine.run()
    assert 1.0 <= time.monotonic() - started < 10.0
    assert str(info.value).startswith("stage 'gain': placement: no host of the Ray cluster has "
                                      "the resource 'gpu_box'")
    assert "cluster.placement_timeout_s" in str(info.value)
    assert engine.pids == []
    assert ray.util.placement_group_table() == {} or all(
        g["state"] == "REMOVED" for g in ray.util.placement_group_table().values())


def test_restart_on_failure_replaces_the_worker_on_the_same_node_losing_nothing(cluster,
                                                                                 tmp_path):
    def kill_gain(engine, report):
        os.kill(report.stage("gain").workers[0].pid, signal.SIGKILL)

    acted = []
    config = tone_run(tmp_path / "out.mp3", seconds=3.0, realtime=True,
                      gain={"restart": "on-failure", "placement": {"resources": {"node_b": 1}}})
    engine = Engine(build_plan(on_cluster(cluster, config)),
                    progress=lambda report: acted or (kill_gain(engine, report),
                                                      acted.append(1)))
    report = engine.run()
    assert [(e.stage, e.generation) for e in report.restarts] == [("gain", 1)]
    assert hosts(report)["gain"] == [cluster.host("b")]       # the replacement's host
    assert report.audit_ok and not report.gaps                # gain restarts losslessly
    local = tone_run(tmp_path / "local.mp3", seconds=3.0)
    Engine(build_plan(RunConfig.model_validate(local))).run()
    assert (tmp_path / "out.mp3").read_bytes() == (tmp_path / "local.mp3").read_bytes()
    assert _pids_gone(engine) == []


def _cli(args: list[str], cwd: Path, extra_env: dict | None = None,
         **popen) -> subprocess.Popen:
    env = {**os.environ, **LOOPBACK_ENV, **(extra_env or {}),
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, "-m", "flowengine", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, **popen)


def _write(cluster, tmp_path: Path, config: dict) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(json.dumps({**config, "security": {"keys": cluster.keys},
                                "cluster": {"engine": "ray", "address": cluster.address}}))
    return path


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_drains_a_cluster_run_and_finalises_the_output(cluster, tmp_path, signum):
    config = tone_run(tmp_path / "out.mp3", seconds=30.0, realtime=True,
                      gain={"placement": {"resources": {"node_a": 1}}},
                      encode={"placement": {"resources": {"node_b": 1}}})
    process = _cli(["run", str(_write(cluster, tmp_path, config)), "--verbose", "--quiet"],
                   tmp_path)
    try:
        # The sink's inbox is logged once every worker is ready, just before the start.
        for line in process.stderr:
            if "stage 'sink' replica 0 inbox listening" in line:
                break
        partial = tmp_path / "out.mp3.part"     # audio reached the sink: the run is under way
        deadline = time.monotonic() + 30
        while not (partial.exists() and partial.stat().st_size) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert partial.exists(), "no audio reached the sink within 30 s"
        process.send_signal(signum)        # the first drains, SIGTERM as Ctrl-C
        out, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130, err
    assert "interrupted: the run was drained and its outputs finalised" in err
    assert "audit: 1 stream(s), all balanced" in out
    assert (tmp_path / "out.mp3").stat().st_size > 0 and not (tmp_path / "out.mp3.part").exists()


def test_flowengine_plan_says_what_each_replica_asks_ray_for(cluster, tmp_path):
    config = tone_run(tmp_path / "out.mp3",
                      gain={"replicas": 2, "placement": {"resources": {"node_a": 1},
                                                         "labels": {"role": "a"},
                                                         "spread": True}})
    process = _cli(["plan", str(_write(cluster, tmp_path, config))], tmp_path)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    assert "cluster: ray at " + cluster.address in out
    assert "  replica 0: on the coordinator's host" in out
    assert "  replica 1: placed by Ray at start" in out
    assert "  replicas ask Ray for: resources {CPU: 1, node_a: 1} per replica, on hosts " \
           "labelled {role: a}, spread over hosts" in out


def test_a_run_on_the_cluster_through_the_cli_names_its_hosts(cluster, tmp_path):
    config = tone_run(tmp_path / "out.mp3", gain={"placement": {"resources": {"node_b": 1}}})
    process = _cli(["run", str(_write(cluster, tmp_path, config)), "--quiet"], tmp_path)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    assert f"gain 0 on {cluster.host('b')}" in out


def test_a_folder_transcode_runs_whole_files_per_replica_on_two_nodes(cluster, tmp_path):
    """The planner's whole-streams layout across hosts: each replica claims its next file
    through the coordinator (no shared directory), the bytes those of one machine."""
    from test_layout import natural, write_inputs
    from flowengine.config import resolve_run

    lengths = write_inputs(tmp_path / "in")
    local = resolve_run(natural(tmp_path, "local")).config
    Engine(build_plan(local)).run()
    config = local.model_dump(exclude_unset=True)
    spread = {"placement": {"resources": {"CPU": 1}, "spread": True}}
    for stage in config["stages"][1:]:
        stage.update(spread, params={**stage["params"], "path": stage["params"]["path"]
                                     .replace("local", "ray")} if "path" in stage["params"]
                     else stage["params"])
    plan = build_plan(on_cluster(cluster, config))
    assert [s.name for s in plan.stages] == ["sink"] and plan.stages[0].placement == \
        {"resources": {"CPU": 1.0}, "labels": {}, "spread": True}
    engine = Engine(plan)
    report = engine.run()
    assert len(set(hosts(report)["encode"])) == 2
    per_replica = [set(w.stream_counts) for w in report.stage("encode").workers]
    assert per_replica[0].isdisjoint(per_replica[1]) and per_replica[0] | per_replica[1] == \
        set(lengths)
    for file in sorted((tmp_path / "local").iterdir()):
        assert (tmp_path / "ray" / file.name).read_bytes() == file.read_bytes(), file.name


def test_the_docs_worked_example_runs_as_written(cluster, tmp_path):
    """docs/cluster.md's two-host YAML and its "Try it on one machine" commands, as written:
    the test cluster command in one process group, the flowengine commands in a shell."""
    text = (ROOT / "docs" / "cluster.md").read_text()
    (tmp_path / "two-hosts.yaml").write_text(
        text.split("# two-hosts.yaml\n", 1)[1].split("```", 1)[0])
    recipe = text.split("### Try it on one machine", 1)[1]
    start_cluster, commands = [block.split("```", 1)[0].strip()
                               for block in recipe.split("```bash\n")[1:3]]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT),
                                                        os.environ.get("PYTHONPATH", "")])}
    for name in ("RAY_ADDRESS", *LOOPBACK_ENV):
        env.pop(name, None)            # as in a fresh shell: what the page sets, nothing more
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    holder = subprocess.Popen(["bash", "-c", start_cluster], cwd=tmp_path, env=env,
                              stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        export = next(line for line in holder.stdout if "export RAY_ADDRESS=" in line)
        script = commands.replace(commands.splitlines()[0], export.split(":  ", 1)[1].strip())
        done = subprocess.run(["bash", "-ec", script], cwd=tmp_path, env=env, text=True,
                              capture_output=True, timeout=180)
        assert done.returncode == 0, done.stderr
        holder.send_signal(signal.SIGINT)
        assert holder.wait(timeout=60) == 0
    finally:
        if holder.poll() is None:
            os.killpg(holder.pid, signal.SIGKILL)
    assert "replicas ask Ray for: resources {CPU: 1, encoder: 1} per replica" in done.stdout
    hosts_of = dict(line.strip().rsplit(" on ", 1) for line in done.stdout.splitlines()
                    if " on 127.0.0.1/" in line and line.startswith("  "))
    assert hosts_of["tones 0"] == hosts_of["sink 0"] != hosts_of["encode 0"] == \
        hosts_of["encode 1"]
    assert "audit: 4 stream(s), all balanced" in done.stdout
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == \
        [f"show-{i}.mp3" for i in range(4)]


def test_no_cluster_at_the_address_fails_at_once_saying_so(cluster, tmp_path):
    with socket.socket() as probe:          # a port where nothing listens
        probe.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{probe.getsockname()[1]}"
    path = tmp_path / "run.yaml"
    path.write_text(json.dumps({**tone_run(tmp_path / "out.mp3"),
                                "security": {"keys": cluster.keys},
                                "cluster": {"engine": "ray", "address": address}}))
    process = _cli(["run", str(path)], tmp_path)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 1
    assert f"run failed: cluster.address '{address}': nothing answers at {address}" in err
