"""The cluster section and placement keys, checked before anything starts (no Ray needed)."""

from __future__ import annotations

import logging
import sys

import pytest

from flowengine.config import load_source, resolve_source
from flowengine.engine import build_plan
from flowengine.config.keys import generate_keys
from flowengine.errors import ConfigError

HEAD = """\
name: c
stages:
  - op: tone
    params: {seconds: 0.1}
  - op: gain
    params: {gain_db: -3}
    placement: {resources: {transcoder: 1}, spread: true}
  - op: null_sink
"""


def resolve(text: str):
    return resolve_source(load_source(text, "run.yaml"))


def test_engine_ray_implies_tcp_and_curve_and_needs_keys():
    with pytest.raises(ConfigError) as info:
        resolve(HEAD + "cluster: {engine: ray}\n")
    assert "run.yaml:9: security.curve: CURVE needs 'keys': a directory made by `flowengine keys DIR` " \
           "(cluster.engine: ray turns CURVE on; on a trusted network only, security.curve: " \
           "false turns it off)" in str(info.value)


def test_engine_ray_refuses_ipc_naming_the_line(tmp_path):
    generate_keys(tmp_path / "keys")
    with pytest.raises(ConfigError) as info:
        resolve(HEAD + f"transport: ipc\nsecurity: {{keys: {tmp_path / 'keys'}}}\n"
                       f"cluster: {{engine: ray}}\n")
    assert "run.yaml:9: transport: cluster.engine: ray runs workers on other hosts, which " \
           "ipc:// sockets cannot reach: remove 'transport: ipc'" in str(info.value)


def test_engine_ray_without_ray_installed_says_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)      # import ray fails, find_spec says None
    generate_keys(tmp_path / "keys")
    with pytest.raises(ConfigError) as info:
        resolve(HEAD + f"security: {{keys: {tmp_path / 'keys'}}}\ncluster:\n  engine: ray\n")
    assert "run.yaml:11: cluster.engine: engine: ray needs the Ray package, which is not " \
           "installed: pip install 'flowengine[ray]'" in str(info.value)


def test_curve_off_on_a_cluster_is_allowed_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="flowengine"):
        run = resolve(HEAD + "security: {curve: false}\ncluster: {engine: ray}\n")
    assert run.config.transport == "tcp" and not run.config.security.curve
    assert "run.yaml:9: security.curve: false with cluster.engine: ray: every tcp:// socket " \
           "between hosts is plain text" in caplog.text


def test_placement_and_cluster_keys_are_checked_with_their_line():
    with pytest.raises(ConfigError) as info:
        resolve(HEAD.replace("transcoder: 1}", "transcoder: -1}, hosts: 2")
                + "cluster: {engine: ray, address: 'head', placement_timeout_s: 0}\n")
    message = str(info.value)
    assert "run.yaml:7: stage 'gain': placement.resources: resource amounts must be 0 or " \
           "more, got transcoder: -1" in message
    assert "run.yaml:7: stage 'gain': placement.hosts: unknown key" in message
    assert "cluster.address: expected 'auto' or HOST:PORT" in message
    assert "cluster.placement_timeout_s: Input should be greater than 0" in message


def test_the_plan_carries_the_cluster_and_each_stage_placement(tmp_path):
    generate_keys(tmp_path / "keys")
    run = resolve(HEAD + f"security: {{keys: {tmp_path / 'keys'}}}\n"
                         f"cluster: {{engine: ray, address: '10.0.0.5:6379'}}\n")
    plan = build_plan(run.config)
    assert plan.cluster == {"engine": "ray", "address": "10.0.0.5:6379",
                            "placement_timeout_s": 30.0, "keys": str(tmp_path / "keys")}
    assert [s.placement for s in plan.stages] == [
        None, {"resources": {"transcoder": 1.0}, "labels": {}, "spread": True}, None]
    assert all(w.inbox_endpoint.startswith("tcp://") for w in plan.workers if w.inbox_endpoint)
    local = build_plan(resolve(HEAD).config)
    assert local.cluster is None and all(s.placement is None for s in local.stages)
