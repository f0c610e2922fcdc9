"""Operator registry: names, specs from signatures, validated creation, plugins."""

from __future__ import annotations

import sys
import textwrap

import numpy as np
import pytest

from flowengine.audio.buffers import AudioFrame
from flowengine.errors import ConfigError
from flowengine.audio.format import AudioFormat
from flowengine.ops.node import EOF, PACKET, PCM
from flowengine.ops import make_identity_node
from flowengine.ops.registry import FormatParam, Registry, registry

BUILTIN = {
    # name: (kind, inputs, outputs, stateful)
    "file_source": ("source", None, PCM, True), "tone": ("source", None, PCM, True),
    "mp3_decoder": ("decoder", PACKET, PCM, True), "aac_decoder": ("decoder", PACKET, PCM, True),
    "opus_decoder": ("decoder", PACKET, PCM, True), "flac_decoder": ("decoder", PACKET, PCM, True),
    "wav_decoder": ("decoder", PACKET, PCM, True), "decoder": ("decoder", PACKET, PCM, True),
    "mp3_encoder": ("encoder", PCM, PACKET, True), "aac_encoder": ("encoder", PCM, PACKET, True),
    "opus_encoder": ("encoder", PCM, PACKET, True), "flac_encoder": ("encoder", PCM, PACKET, True),
    "wav_encoder": ("encoder", PCM, PACKET, True), "encoder": ("encoder", PCM, PACKET, True),
    "identity": ("processor", PCM, PCM, False), "gain": ("processor", PCM, PCM, False),
    "channel_map": ("processor", PCM, PCM, False), "resample": ("processor", PCM, PCM, True),
    "delay": ("processor", PCM, PCM, True), "fir": ("processor", PCM, PCM, True),
    "iir": ("processor", PCM, PCM, True), "lowpass": ("processor", PCM, PCM, True),
    "highpass": ("processor", PCM, PCM, True), "compressor": ("processor", PCM, PCM, True),
    "loudness": ("processor", PCM, PCM, True),
    "file_sink": ("sink", "any", None, True), "null_sink": ("sink", "any", None, False),
    "memory_sink": ("sink", "any", None, False),
}
FMT = {"sample_rate": 48000, "channels": 2, "sample_type": "f32"}


def run_frames(node, frames):
    out = []
    for frame in frames:
        node.push(frame)
        while isinstance(item := node.pull(), AudioFrame):
            out.append(item)
    node.push(None)
    while (item := node.pull()) is not EOF:
        out.append(item)
    return out


def test_every_builtin_operator_is_registered_with_its_kinds():
    assert set(BUILTIN) <= set(registry.names())
    for name, (kind, inputs, outputs, stateful) in BUILTIN.items():
        spec = registry.get(name)
        assert (spec.kind, spec.inputs, spec.outputs, spec.stateful) == \
            (kind, inputs, outputs, stateful), name


def test_ops_listing_describes_every_parameter():
    for spec in registry.specs():
        text = spec.describe()
        assert text.startswith(f"{spec.name}  [{spec.kind}, ")
        for p in spec.params:
            assert f"    {p.name}: {p.type_name} (" in text
    assert registry.get("gain").describe().splitlines()[1] == \
        "    gain: float (default 1.0)  linear factor"
    assert "    taps: list[float] (required)  filter coefficients" in registry.get("fir").describe()


def test_specs_come_from_the_signature():
    spec = registry.get("mp3_encoder")
    assert [p.name for p in spec.params] == ["bitrate", "quality", "chunk_samples", "input_format",
                                             "backend"]
    bitrate = spec.param("bitrate")
    assert (bitrate.type, bitrate.default, bitrate.required) == (int, 128000, False)
    assert spec.param("backend").type_name == "'auto' | 'lame' | 'pyav'"
    assert spec.param("input_format").type_name == "format | None"
    assert registry.get("wav_decoder").param("output_format").required
    file_source = registry.get("file_source")
    assert file_source.io_kinds({"mode": "packet"}) == (None, PACKET)
    assert file_source.io_kinds({}) == (None, PCM)


def test_create_with_good_params_builds_working_nodes():
    x = np.random.default_rng(1).standard_normal((2, 3000)).astype(np.float32) * 0.1
    frames = [AudioFrame(x[:, i:i + 1000], AudioFormat(**FMT), pts=i) for i in range(0, 3000, 1000)]
    gain = registry.create("gain", gain_db=-6, format=FMT)          # int accepted for a float
    assert gain.input_format == AudioFormat(**FMT)
    out = np.concatenate([f.data for f in run_frames(gain, frames)], axis=1)
    np.testing.assert_allclose(out, x * 10 ** (-6 / 20), rtol=1e-6)
    fir = registry.create("fir", taps=np.array([1.0, -1.0]))        # numpy taps accepted
    out = np.concatenate([f.data for f in run_frames(fir, frames)], axis=1)
    np.testing.assert_allclose(out[:, 1:], np.diff(x, axis=1), atol=1e-6)
    mono = registry.create("channel_map", out_channels=1)
    assert run_frames(mono, frames)[0].format.channels == 1
    resample = registry.create("resample", sample_rate=16000)       # channels from the input
    assert sum(f.samples for f in run_frames(resample, frames)) == 1000
    enc = registry.create("encoder", codec="MP3", bitrate=64000)
    assert enc.encoder.config.bitrate == 64000 and enc.name == "mp3_encoder"


def test_unknown_operator_suggests_a_close_name():
    with pytest.raises(ConfigError, match=r"^unknown operator 'gian' \(did you mean 'gain'\?\); "
                                          r"known operators: aac_decoder, aac_encoder, "):
        registry.create("gian")


def test_unknown_parameter_lists_the_valid_ones():
    with pytest.raises(ConfigError, match=r"^operator 'gain': unknown parameter 'gian_db'; valid "
                                          r"parameters: gain, gain_db, format$"):
        registry.create("gain", gian_db=-6)


def test_missing_required_parameter():
    with pytest.raises(ConfigError, match=r"^operator 'lowpass': missing required parameter "
                                          r"'cutoff_hz' \(float\)$"):
        registry.create("lowpass")


@pytest.mark.parametrize("op, params, message", [
    ("gain", {"gain": "loud"}, "operator 'gain': parameter 'gain' expects float, got 'loud' (str): "
                               "Input should be a valid number"),
    ("delay", {"delay_ms": "10"}, "operator 'delay': parameter 'delay_ms' expects float, got '10' "
                                  "(str): Input should be a valid number"),
    ("lowpass", {"cutoff_hz": 1000, "order": 2.5}, "operator 'lowpass': parameter 'order' expects "
                                                   "int, got 2.5 (float): Input should be a valid "
                                                   "integer"),
    ("mp3_encoder", {"bitrate": True}, "operator 'mp3_encoder': parameter 'bitrate' expects int, "
                                       "got True (bool): Input should be a valid integer"),
    ("mp3_decoder", {"on_error": "ignore"}, "operator 'mp3_decoder': parameter 'on_error' expects "
                                            "'fail' | 'skip', got 'ignore' (str): Input should be "
                                            "'fail' or 'skip'"),
    ("gain", {"format": {"sample_rate": 0, "channels": 2}},
     "operator 'gain': parameter 'format' expects format | None, got {'sample_rate': 0, "
     "'channels': 2} (dict): sample_rate must be a positive integer, got 0"),
])
def test_wrong_type_says_expected_and_got(op, params, message):
    with pytest.raises(ConfigError) as caught:
        registry.create(op, **params)
    assert str(caught.value) == message


def test_values_the_operator_refuses_become_config_errors():
    with pytest.raises(ConfigError, match=r"^operator 'gain': gain: give gain or gain_db, not "
                                          r"both \(got gain=2.0, gain_db=3.0\)$"):
        registry.create("gain", gain=2, gain_db=3)
    with pytest.raises(ConfigError, match="operator 'encoder': unknown codec 'mp4'"):
        registry.create("encoder", codec="mp4")


def test_a_separate_registry_with_the_decorator():
    reg = Registry(builtins=None, group=None)

    @reg.operator("halve", kind="processor", inputs=PCM, outputs=PCM, stateful=False,
                  summary="Halve")
    def halve(factor: float = 0.5, format: FormatParam | None = None):
        """
        factor: what to multiply by
        """
        return make_identity_node()

    assert reg.names() == ["halve"]
    assert reg.get("halve").params[0].doc == "what to multiply by"
    assert reg.validate("halve", {"format": FMT})["format"] == AudioFormat(**FMT)

    def other(factor: float = 1.0):
        return make_identity_node()
    with pytest.raises(ConfigError, match="operator 'halve' is already registered"):
        reg.operator("halve", kind="processor", inputs=PCM, outputs=PCM, stateful=False,
                     summary="")(other)
    with pytest.raises(ConfigError, match="parameter 'rest' must be a plain keyword parameter"):
        reg.operator("bad", kind="processor", inputs=PCM, outputs=PCM, stateful=False,
                     summary="")(lambda **rest: None)
    with pytest.raises(ConfigError, match="kind must be one of source, processor, encoder, "
                                          "decoder, sink, got 'filter'"):
        reg.operator("bad", kind="filter", inputs=PCM, outputs=PCM, stateful=False, summary="")

    @reg.operator("not_a_node", kind="processor", inputs=PCM, outputs=PCM, stateful=False,
                  summary="")
    def not_a_node():
        return 42
    with pytest.raises(ConfigError, match="operator 'not_a_node': its factory returned int, not "
                                          "a Node"):
        reg.create("not_a_node")


def _install_plugin(tmp_path, monkeypatch, body: str) -> None:
    """A real distribution on sys.path with a flowengine.operators entry point."""
    (tmp_path / "fe_plugin_demo.py").write_text(textwrap.dedent(body))
    dist = tmp_path / "fe_plugin_demo-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fe-plugin-demo\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[flowengine.operators]\ndemo = fe_plugin_demo:register\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "fe_plugin_demo", raising=False)


def test_plugins_are_discovered_through_entry_points(tmp_path, monkeypatch):
    _install_plugin(tmp_path, monkeypatch, """
        from flowengine.ops.node import PCM
        from flowengine.ops import make_identity_node

        def register(registry):
            @registry.operator("plugin_passthrough", kind="processor", inputs=PCM, outputs=PCM,
                               stateful=False, summary="from a plugin")
            def plugin_passthrough(label: str = "x"):
                return make_identity_node()
        """)
    reg = Registry()
    assert "plugin_passthrough" in reg.names() and "gain" in reg.names()
    assert reg.create("plugin_passthrough", label="y").name == "identity"


def test_a_broken_plugin_is_a_config_error_naming_it(tmp_path, monkeypatch):
    _install_plugin(tmp_path, monkeypatch, """
        def register(registry):
            raise RuntimeError("boom")
        """)
    with pytest.raises(ConfigError, match=r"operator plugin 'demo' \(fe_plugin_demo:register\) of "
                                          r"group 'flowengine.operators' failed to load: "
                                          r"RuntimeError: boom"):
        Registry().names()


def test_plugins_load_only_when_a_name_is_no_built_in(tmp_path, monkeypatch):
    """A run of built-in operators does not read the plugins' entry points (each process's
    start); a name that is no built-in's, or the whole list, loads them."""
    _install_plugin(tmp_path, monkeypatch, """
        def register(registry):
            raise RuntimeError("boom")
        """)
    reg = Registry()
    assert reg.get("gain").name == "gain" and "mp3_encoder" in reg
    with pytest.raises(ConfigError, match="operator plugin 'demo'"):
        reg.get("plugin_passthrough")


def test_source_and_sink_operators_run_a_file_through(tmp_path):
    from flowengine.local.runner import Runner

    path = str(tmp_path / "tone.flac")
    Runner(registry.create("tone", frequency=440.0, seconds=0.25, sample_type="s16"), [],
           registry.create("file_sink", path=path)).run()
    sink = registry.create("memory_sink")
    stats = Runner(registry.create("file_source", path=path, mode="packet"),
                   [registry.create("flac_decoder")], sink).run()
    assert stats["file_source"].buffers_out > 0
    assert sink.sink.samples == stats["flac_decoder"].samples_out == 12000
    pcm = sink.sink.pcm()
    assert pcm.shape == (2, 12000)
    expected = np.round(0.5 * np.sin(2 * np.pi * 440 * np.arange(12000) / 48000) * 32767)
    np.testing.assert_allclose(pcm[0] * 32768, expected, atol=1.5)
    null = registry.create("null_sink")
    Runner(registry.create("file_source", path=path, chunk_samples=500), [], null).run()
    assert null.sink.samples == 12000 and null.sink.finalized


def test_every_builtin_operator_of_a_chain_has_a_measured_cost_hint():
    # a mixer is never in a group; the live operators wait on the network
    unmeasured = {"mix", "tcp_ingest", "tcp_push", "ws_broadcast"}
    missing = [spec.name for spec in registry.specs()
               if spec.cost is None and spec.name not in unmeasured]
    assert missing == []
    assert registry.get("mp3_encoder").cost == 1.0     # the unit
    assert registry.get("file_source").cost_for({"mode": "packet"}) < \
        registry.get("file_source").cost_for({"mode": "pcm"})
    assert registry.get("encoder").cost_for({"codec": "aac"}) == \
        registry.get("aac_encoder").cost


@pytest.mark.parametrize("cost", [0, -1.0, float("nan"), "cheap", True])
def test_a_cost_hint_is_a_positive_number(cost):
    with pytest.raises(ConfigError, match=r"operator 'x': cost must be a positive number"):
        Registry(builtins=None, group=None).operator(
            "x", kind="processor", inputs="pcm", outputs="pcm", summary="x", stateful=False,
            cost=cost)
