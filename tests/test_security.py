"""Security: CURVE keys and sockets, CURVE runs over tcp loopback, nothing injected into a
worker inbox without the run's keys, loopback binds, no pickle/eval on any data path."""

from __future__ import annotations

import ast
import contextlib
import json
import logging
import os
import stat
import time
from pathlib import Path

import msgpack
import pytest
import zmq
from zmq.utils.monitor import recv_monitor_message

from engine_ops import op
from flowengine.cli.main import main
from flowengine.config import load_source, resolve_source
from flowengine.config.model import RunConfig
from flowengine.engine import build_plan, run_plan
from flowengine.engine.control.rundirs import remove_run_dir
from flowengine.engine.control.channel import decode_control
from flowengine.engine.wire.codec import WIRE_VERSION
from flowengine.config.keys import CurveKeys, generate_keys, load_keys
from flowengine.engine.security import (curve_client, curve_server, describe_listener,
                                        start_authenticator)
from flowengine.errors import ConfigError, WireError, WorkerFailed

PACKAGE = Path(__file__).resolve().parent.parent / "flowengine"
SAMPLES = 12000
KEY_FILES = ["client.key", "client.key_secret", "server.key", "server.key_secret"]


@pytest.fixture(scope="module")
def keys_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("curve") / "keys"
    generate_keys(directory)
    return directory


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# ---- keys -------------------------------------------------------------------------------

def test_keys_command_into_a_directory_it_cannot_make_is_one_clear_error(tmp_path, capsys):
    # It was "flowengine: internal error (FileNotFoundError; ...)", exit 1.
    (tmp_path / "afile").write_text("x")
    assert main(["keys", str(tmp_path / "afile" / "keys")]) == 2
    assert capsys.readouterr().err == (
        f"flowengine: error: cannot write keys into {tmp_path / 'afile' / 'keys'}: "
        f"Not a directory\n")


def test_keys_command_writes_private_files_and_refuses_to_overwrite(tmp_path, capsys):
    directory = tmp_path / "run-keys"
    assert main(["keys", str(directory)]) == 0
    assert sorted(p.name for p in directory.iterdir()) == KEY_FILES
    assert _mode(directory) == 0o700
    assert {p.name: _mode(p) for p in directory.iterdir()} == dict.fromkeys(KEY_FILES, 0o600)
    first = load_keys(directory)
    assert len({first.server_public, first.server_secret, first.client_public,
                first.client_secret}) == 4
    assert all(len(key) == 40 for key in (first.server_public, first.client_secret))
    assert f"security: {{curve: true, keys: {directory}}}" in capsys.readouterr().out

    assert main(["keys", str(directory)]) == 2
    assert capsys.readouterr().err == (
        f"flowengine: error: {directory}: already holds keys (server.key, server.key_secret, "
        f"client.key, client.key_secret); remove them or pass --force to replace them\n")
    assert load_keys(directory) == first

    os.chmod(directory / "client.key", 0o644)          # --force also restores the modes
    assert main(["keys", str(directory), "--force"]) == 0
    second = load_keys(directory)
    assert second.server_public != first.server_public
    assert second.client_secret != first.client_secret
    assert {p.name: _mode(p) for p in directory.iterdir()} == dict.fromkeys(KEY_FILES, 0o600)


def test_load_keys_refuses_open_missing_and_mismatched_files(tmp_path):
    directory = tmp_path / "k"
    generate_keys(directory)
    os.chmod(directory / "server.key_secret", 0o644)
    with pytest.raises(ConfigError, match=r"server\.key_secret is readable by others "
                                          r"\(mode 0644, expected 0600\): chmod 600 "):
        load_keys(directory)
    os.chmod(directory / "server.key_secret", 0o600)

    other = tmp_path / "other"
    generate_keys(other)
    (directory / "client.key").write_bytes((other / "client.key").read_bytes())
    with pytest.raises(ConfigError, match=r"client\.key_secret is not the secret key of .*"
                                          r"client\.key \(regenerate both"):
        load_keys(directory)

    (directory / "client.key").unlink()
    with pytest.raises(ConfigError, match=r"client\.key is missing \(make the keys with "
                                          r"`flowengine keys "):
        load_keys(directory)
    with pytest.raises(ConfigError, match=r"directory '.*nowhere' does not exist"):
        load_keys(tmp_path / "nowhere")


# ---- config -----------------------------------------------------------------------------

_RUN = """\
name: t
transport: {transport}
security: {security}
stages:
  - op: tone
    params: {{seconds: 0.2}}
  - op: null_sink
"""


def _problems(transport: str, security: str) -> list[str]:
    source = load_source(_RUN.format(transport=transport, security=security), "run.yaml")
    with pytest.raises(ConfigError) as caught:
        resolve_source(source)
    return [str(p) for p in getattr(caught.value, "problems", [caught.value])]


def test_config_checks_transport_and_keys(tmp_path, keys_dir):
    assert _problems("ipc", f"{{curve: true, keys: {keys_dir}}}") == [
        "run.yaml:3: security.curve: CURVE protects tcp:// edges, but transport is 'ipc' "
        "(ipc:// sockets live in the run's private directory); set transport: tcp"]
    assert _problems("tcp", "{curve: true}") == [
        "run.yaml:3: security.curve: CURVE needs 'keys': a directory made by "
        "`flowengine keys DIR`"]
    missing = tmp_path / "none"
    assert _problems("tcp", f"{{curve: true, keys: {missing}}}") == [
        f"run.yaml:3: security.keys: CURVE keys: directory {str(missing)!r} does not exist "
        f"(make it with `flowengine keys {missing}`)"]
    assert _problems("tcp", "{cruve: true}") == [
        "invalid run config:\n  run.yaml:3: security.cruve: unknown key"]
    run = resolve_source(load_source(_RUN.format(transport="tcp",
                                                 security=f"{{curve: true, keys: {keys_dir}}}")))
    assert run.config.security.curve and run.config.security.keys == str(keys_dir)


# ---- sockets ----------------------------------------------------------------------------

def _handshake(sock: zmq.Socket, endpoint: str, timeout: float = 5.0) -> tuple[str, int]:
    """Connect `sock` and return its first handshake event (name, value), bounded."""
    monitor = sock.get_monitor_socket()
    try:
        sock.connect(endpoint)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if monitor.poll(100):
                event = recv_monitor_message(monitor)
                name = zmq.Event(event["event"]).name
                if name.startswith("HANDSHAKE"):
                    return name, int(event["value"])
        raise AssertionError(f"no handshake on {endpoint} within {timeout} s")
    finally:
        sock.disable_monitor()
        monitor.close(0)


def _try_send(sock: zmq.Socket, data: bytes) -> None:
    """Send without waiting: after a refused handshake the PUSH has no peer to queue for."""
    with contextlib.suppress(zmq.Again):
        sock.send(data, flags=zmq.NOBLOCK)


def _stranger(keys: CurveKeys) -> CurveKeys:
    """A client that knows the server's public key but has its own keypair."""
    public, secret = zmq.curve_keypair()
    return CurveKeys(keys.server_public, public.decode(), secret.decode())


# A plain socket fails on the mechanism mismatch; whether the client sees PROTOCOL or
# NO_DETAIL depends on which side closes first.
_REFUSED_PLAIN = ("HANDSHAKE_FAILED_PROTOCOL", "HANDSHAKE_FAILED_NO_DETAIL")


@pytest.mark.parametrize("client, events", [
    ("run", [("HANDSHAKE_SUCCEEDED", 0)]),
    ("stranger", [("HANDSHAKE_FAILED_AUTH", 400)]),          # ZAP status 400: unknown key
    ("plain", [(name, None) for name in _REFUSED_PLAIN]),
])
def test_curve_server_accepts_only_the_run_client_key(keys_dir, client, events, caplog):
    keys = load_keys(keys_dir)
    context = zmq.Context()
    auth = start_authenticator(context, keys)
    pull, push = context.socket(zmq.PULL), context.socket(zmq.PUSH)
    try:
        curve_server(pull, keys)
        port = pull.bind_to_random_port("tcp://127.0.0.1")
        if client != "plain":
            curve_client(push, keys if client == "run" else _stranger(keys))
        with caplog.at_level(logging.WARNING, logger="flowengine"):
            name, value = _handshake(push, f"tcp://127.0.0.1:{port}")
        assert (name, value) in events or (name, None) in events
        _try_send(push, b"hello")
        if client == "run":
            assert pull.poll(5000) and pull.recv() == b"hello"
        else:
            assert pull.poll(0) == 0        # the handshake failed: nothing can arrive
        refused = [r.getMessage() for r in caplog.records if "refused a CURVE" in r.getMessage()]
        assert len(refused) == (client == "stranger")
    finally:
        push.close(0)
        pull.close(0)
        auth.stop()
        context.term()


def test_a_bound_curve_socket_without_zap_handler_refuses_even_the_run_key(keys_dir):
    keys = load_keys(keys_dir)
    context = zmq.Context()
    pull, push = context.socket(zmq.PULL), context.socket(zmq.PUSH)
    try:
        curve_server(pull, keys)
        port = pull.bind_to_random_port("tcp://127.0.0.1")
        curve_client(push, keys)
        name, _ = _handshake(push, f"tcp://127.0.0.1:{port}")
        assert name.startswith("HANDSHAKE_FAILED")
    finally:
        push.close(0)
        pull.close(0)
        context.term()


# ---- engine runs over tcp loopback ------------------------------------------------------

def _config(out: Path, keys: Path | None, delay: float = 0.0,
            samples: int = SAMPLES) -> RunConfig:
    out.mkdir(exist_ok=True)
    run: dict = {"transport": "tcp", "stages": [
        {"name": "src", "op": op("RampSource"), "params": {"streams": 2, "samples": samples}},
        {"name": "mid", "op": op("PassThrough")},
        {"name": "sink", "op": op("CheckingSink"), "params": {"out_dir": str(out),
                                                             "delay": delay}}]}
    if keys is not None:
        run["security"] = {"curve": True, "keys": str(keys)}
    return RunConfig.model_validate(run)


def _received(out: Path) -> dict[str, int]:
    return {p.stem: json.loads(p.read_text())["samples"] for p in sorted(out.glob("*.json"))}


def test_curve_run_over_tcp_moves_every_sample_and_logs_its_listeners(tmp_path, keys_dir,
                                                                       caplog):
    plan = build_plan(_config(tmp_path / "out", keys_dir))
    keys = load_keys(keys_dir)
    assert plan.curve == keys
    source, mid, sink = (stage.workers[0] for stage in plan.stages)
    assert source.curve == keys.without_server_secret() and source.curve.server_secret is None
    assert mid.curve == sink.curve == keys
    with caplog.at_level(logging.INFO, logger="flowengine"):
        report = run_plan(plan)
    assert report.complete
    assert _received(tmp_path / "out") == {"s0": SAMPLES, "s1": SAMPLES}
    assert report.stage("sink").workers[0].samples_in == 2 * SAMPLES
    lines = [r.getMessage() for r in caplog.records if r.name == "flowengine"]
    assert lines == [f"control listening on {plan.control_endpoint} (loopback only, CURVE)"] + [
        f"stage {w.stage!r} replica 0 inbox listening on {w.inbox_endpoint} (loopback only, CURVE)"
        for w in (mid, sink)]


def _inject_during_run(plan, setup) -> tuple[object, list[tuple[str, int]]]:
    """Run `plan`; once it runs, a PUSH set up by `setup` connects to the sink's inbox and
    sends a bogus message. Returns (report or the WorkerFailed, handshake events)."""
    context = zmq.Context()
    intruder = context.socket(zmq.PUSH)
    setup(intruder)
    events: list[tuple[str, int]] = []

    def inject(report) -> None:
        if not events:
            events.append(_handshake(intruder, plan.stage("sink").workers[0].inbox_endpoint))
            _try_send(intruder, msgpack.packb({"v": WIRE_VERSION, "k": "eof", "src": "intruder:0"}))

    try:
        result = run_plan(plan, progress=inject, progress_interval=0.05)
    except WorkerFailed as exc:
        result = exc
    finally:
        intruder.close(0)
        context.term()
    return result, events


@pytest.mark.timeout(120)
def test_without_curve_an_injected_message_reaches_the_worker(tmp_path):
    """The control experiment: the same intrusion on a plain tcp run fails the sink. The run
    is far longer than the test (10**7 samples, 20 ms per message in the sink), so it cannot
    end before the injected message arrives, however late a loaded machine runs the
    progress callback that sends it; the injection ends it."""
    plan = build_plan(_config(tmp_path / "out", None, delay=0.02, samples=10**7))
    result, events = _inject_during_run(plan, lambda sock: None)
    assert events == [("HANDSHAKE_SUCCEEDED", 0)]
    assert isinstance(result, WorkerFailed)
    assert result.stage == "sink"
    assert "'intruder:0'" in str(result)


@pytest.mark.parametrize("who", ["plain", "stranger"])
def test_with_curve_an_intruder_gets_nothing_into_a_worker_inbox(tmp_path, keys_dir, who):
    plan = build_plan(_config(tmp_path / "out", keys_dir, delay=0.02))
    keys = load_keys(keys_dir)
    setup = (lambda sock: None) if who == "plain" else \
        (lambda sock: curve_client(sock, _stranger(keys)))
    result, events = _inject_during_run(plan, setup)
    expected = _REFUSED_PLAIN if who == "plain" else ("HANDSHAKE_FAILED_AUTH",)
    assert len(events) == 1 and events[0][0] in expected   # it tried while the run was going
    assert not isinstance(result, Exception), result
    assert result.complete
    assert _received(tmp_path / "out") == {"s0": SAMPLES, "s1": SAMPLES}
    mid, sink = result.stage("mid").workers[0], result.stage("sink").workers[0]
    assert sink.messages_in == mid.messages_out and sink.samples_in == 2 * SAMPLES


# ---- loopback binds ---------------------------------------------------------------------

def test_listeners_say_who_can_reach_them():
    assert describe_listener("tcp://127.0.0.1:5555") == \
        "listening on tcp://127.0.0.1:5555 (loopback only)"
    assert describe_listener("tcp://0.0.0.0:5555", curve=True) == \
        "listening on tcp://0.0.0.0:5555 (reachable from other hosts, CURVE)"
    assert describe_listener("ipc:///tmp/flowengine-x/s1r0") == \
        "listening on ipc:///tmp/flowengine-x/s1r0 (unix socket in the run's private directory)"


def test_tcp_plan_binds_loopback_only(tmp_path):
    plan = build_plan(_config(tmp_path / "out", None))
    try:
        endpoints = [plan.control_endpoint] + [w.inbox_endpoint for w in plan.workers
                                               if w.inbox_endpoint]
        assert len(endpoints) == 3
        assert all(e.startswith("tcp://127.0.0.1:") for e in endpoints)
    finally:
        remove_run_dir(plan.run_dir)     # empty but for its owner file (rundirs.py)


def _literal_hosts(tree: ast.AST) -> list[str]:
    return [node.value for node in ast.walk(tree) if isinstance(node, ast.Constant)
            and node.value in ("0.0.0.0", "::", "tcp://*", "tcp://0.0.0.0")]


def test_no_wildcard_address_anywhere_in_the_package():
    found = {str(path.relative_to(PACKAGE)): hosts for path in PACKAGE.rglob("*.py")
             if (hosts := _literal_hosts(ast.parse(path.read_text())))}
    assert found == {}


# ---- no pickle on the wire --------------------------------------------------------------

# Modules that turn bytes into arbitrary objects (or code): never imported by flowengine.
_UNSAFE_MODULES = {"pickle", "_pickle", "cPickle", "marshal", "shelve", "dill", "cloudpickle",
                   "jsonpickle", "joblib", "xmlrpc"}
# multiprocessing's Listener/Client pickle whatever crosses their socket (its `wait` is fine).
_UNSAFE_NAMES = {"multiprocessing.connection": {"Listener", "Client"}}
_UNSAFE_CALLS = {"eval", "exec", "compile", "__import__"}
# Legitimate loaders of code that are not data paths: the name comes from the run config or
# an installed plugin (trusted like a script), never from a message on a socket.
ALLOWED_IMPORT_MODULE = {
    "core/lookup.py": "`op: module:attribute` in a run config names a Python operator",
    "ops/registry.py": "built-in operator families and installed entry-point plugins",
    "ops/processors/_scipy.py": "scipy submodules imported on first use",
    "live/__init__.py": "lazy import of the live modules (aiohttp only when used)",
    "__init__.py": "the public names, each from its own module, imported when first used",
    "engine/__init__.py": "the engine's public names, imported when first used (not in workers)",
    "config/__init__.py": "the config's public names, imported when first used (not in workers)",
    "cli/bench.py": "`flowengine bench` runs the repository's own benchmarks/ scripts",
}


def _unsafe_uses(path: Path) -> list[str]:
    uses = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            uses += [f"import {a.name}" for a in node.names
                     if a.name in _UNSAFE_MODULES or a.name.split(".")[0] in _UNSAFE_MODULES]
        elif isinstance(node, ast.ImportFrom) and node.module and \
                (node.module in _UNSAFE_MODULES or node.module.split(".")[0] in _UNSAFE_MODULES):
            uses.append(f"from {node.module} import")
        elif isinstance(node, ast.ImportFrom) and \
                {a.name for a in node.names} & _UNSAFE_NAMES.get(node.module, set()):
            uses.append(f"from {node.module} import Listener/Client")
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else \
                func.attr if isinstance(func, ast.Attribute) else ""
            keywords = {k.arg for k in node.keywords}
            if isinstance(func, ast.Name) and name in _UNSAFE_CALLS:
                uses.append(f"{name}()")
            elif name in ("unpackb", "Unpacker") and "ext_hook" not in keywords:
                uses.append(f"msgpack {name}() without ext_hook")
            elif name in ("load", "unsafe_load", "full_load") and \
                    isinstance(func, ast.Attribute) and getattr(func.value, "id", "") == "yaml":
                uses.append(f"yaml.{name}()")
            elif "allow_pickle" in keywords:
                uses.append("allow_pickle=")
            elif name == "import_module":
                uses.append("import_module()")
    return uses


def test_no_pickle_marshal_or_eval_on_any_data_path():
    found = {str(path.relative_to(PACKAGE)): uses for path in sorted(PACKAGE.rglob("*.py"))
             if (uses := _unsafe_uses(path))}
    unexpected = {path: uses for path, uses in found.items()
                  if not (path in ALLOWED_IMPORT_MODULE and set(uses) == {"import_module()"})}
    assert unexpected == {}


def test_the_scanner_finds_what_it_forbids(tmp_path):
    sample = tmp_path / "bad.py"
    sample.write_text("import pickle\nfrom marshal import loads\nimport msgpack, yaml\n"
                      "eval('1')\nmsgpack.unpackb(b'')\nyaml.load('')\n"
                      "import numpy\nnumpy.load('x', allow_pickle=True)\n")
    assert _unsafe_uses(sample) == ["import pickle", "from marshal import", "eval()",
                                    "msgpack unpackb() without ext_hook", "yaml.load()",
                                    "allow_pickle="]


def test_control_decoding_refuses_msgpack_extension_types():
    # (The data-plane decoder's refusal is in test_wire.py.)
    frame = msgpack.packb({"t": "ready", "pid": msgpack.ExtType(7, b"\x80\x04N.")})
    with pytest.raises(WireError, match=r"^control message: msgpack extension type 7 is not "
                                        r"allowed$"):
        decode_control(frame, expect=("ready",))
    assert decode_control(msgpack.packb({"t": "ready", "pid": 7}), expect=("ready",)) == \
        {"t": "ready", "pid": 7}
