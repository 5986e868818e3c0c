"""ONNX deployment: exports that ONNX Runtime runs as PyTorch does, QDQ for quantized layers, the ONNX Runtime latency
target, and `autocomp export --format onnx`."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

import autocomp
from autocomp.cost.latency import LatencyTarget, measure_latency_ms
from autocomp.errors import ConfigError

pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from autocomp import deploy  # noqa: E402  (needs onnx and onnxruntime)
from autocomp.deploy.ort import FLOAT_TOLERANCE, QDQ_TOLERANCE  # noqa: E402
from autocomp.deploy.qdq import weight_scales  # noqa: E402

EXAMPLE = torch.randn(1, 1, 16, 16)


def resnet20() -> torch.nn.Module:
    torch.manual_seed(0)
    return autocomp.zoo.create("resnet20", num_classes=10, in_channels=1).eval()


def batch(size: int = 32) -> torch.Tensor:
    return torch.randn(size, *EXAMPLE.shape[1:], generator=torch.Generator().manual_seed(1))


def pruned() -> torch.nn.Module:
    model = resnet20()
    return autocomp.compress(model, autocomp.Policy.uniform(autocomp.prunable_layers(model, EXAMPLE), 0.5), EXAMPLE)


def low_rank() -> torch.nn.Module:
    model = resnet20()
    layers = [layer.name for layer in autocomp.model_layers(model, EXAMPLE) if layer.kind == "conv"][1:]
    return autocomp.compress(
        model, autocomp.Policy({name: autocomp.LayerDecision(rank=0.5) for name in layers}), EXAMPLE
    )


def quantized(bits: int = 8) -> torch.nn.Module:
    model = resnet20()
    policy = autocomp.Policy.uniform(autocomp.model_layers(model, EXAMPLE), weight_bits=bits, act_bits=bits)
    return autocomp.compress(model, policy, EXAMPLE, data=[(batch(64), torch.zeros(64))]).eval()


@pytest.mark.parametrize("build", [pruned, low_rank, quantized], ids=["pruned", "low-rank", "quantized"])
def test_an_export_computes_in_onnx_runtime_what_the_model_computes(build):
    model = build()
    model_bytes, agreement = deploy.checked_onnx(model, EXAMPLE, batch())
    got = deploy.run(deploy.session(model_bytes, threads=1), batch(5))  # a batch size the export never saw
    with torch.no_grad():
        expected = model(batch(5))
    tolerance = QDQ_TOLERANCE if build is quantized else FLOAT_TOLERANCE
    assert agreement.ok and agreement.max_difference <= tolerance * max(1.0, float(expected.abs().max()))
    assert (got - expected).abs().max() <= tolerance * max(1.0, float(expected.abs().max()))
    if build is not quantized:  # floating point: the same numbers up to float rounding, the same classes
        assert agreement.top1 == 1.0 and agreement.max_difference < 1e-4


def test_a_quantized_export_is_qdq_with_our_per_channel_weight_scales_and_learned_input_steps():
    model = quantized(4)
    graph = onnx.load_from_string(deploy.to_onnx(model, EXAMPLE)).graph
    kinds = [node.op_type for node in graph.node]
    layers = [name for name, module in model.named_modules() if hasattr(module, "onnx_form")]
    assert kinds.count("QuantizeLinear") == len(layers) and kinds.count("DequantizeLinear") == 2 * len(layers)
    assert "BatchNormalization" not in kinds  # folded into the convolutions' scales
    scales = weight_scales(onnx.load_from_string(deploy.to_onnx(model, EXAMPLE)).SerializeToString())
    integers, ours = model.fc.integer_weights()
    torch.testing.assert_close(torch.tensor(scales["fc.weight"]), ours, rtol=0, atol=0)  # no BatchNorm after fc
    conv, norm = model.layer1[0].conv1, model.layer1[0].bn1  # BatchNorm folded: our scale x |gamma| / sqrt(var + eps)
    factor = (norm.weight / (norm.running_var + norm.eps).sqrt()).detach().abs()
    torch.testing.assert_close(torch.tensor(scales["layer1.0.conv1.weight"]), conv.integer_weights()[1] * factor)
    values = {init.name: onnx.numpy_helper.to_array(init) for init in graph.initializer}
    assert values["fc.weight.int8"].dtype.name == "int8" and (torch.tensor(values["fc.weight.int8"]) == integers).all()
    assert float(values["fc.input.scale"]) == pytest.approx(float(model.fc.inputs.step.detach()))
    assert values["layer1.0.conv1.input.zero_point"].dtype.name == "uint8"  # after a ReLU: unsigned


def test_onnx_runtime_sessions_run_on_the_requested_threads():
    session = deploy.session(deploy.to_onnx(pruned(), EXAMPLE), threads=3)
    options = session.get_session_options()
    assert options.intra_op_num_threads == 3 and options.inter_op_num_threads == 1
    assert session.get_providers() == ["CPUExecutionProvider"]


def test_the_onnxruntime_latency_target_measures_through_onnx_runtime(monkeypatch, tmp_path):
    from autocomp.cost import latency

    opened = []

    def spy(model_bytes, threads):
        opened.append((onnx.load_from_string(model_bytes).graph.input[0].name, threads))
        return deploy.session(model_bytes, threads)

    monkeypatch.setattr(latency, "session", spy)
    target = LatencyTarget(threads=2, runtime="onnxruntime", warmup=1, repeats=3)
    assert measure_latency_ms(pruned(), EXAMPLE, target) > 0
    assert opened == [("input", 2)]
    assert measure_latency_ms(pruned(), EXAMPLE, LatencyTarget(threads=2, warmup=1, repeats=3)) > 0
    assert len(opened) == 1  # the torch runtime opens no session

    eager = LatencyTarget(threads=2)
    assert target.key() != eager.key() and "onnxruntime" in target.describe()
    from autocomp.graph import ModelGraph
    from autocomp.latency_table import LatencyTable

    graph = ModelGraph(resnet20(), EXAMPLE)
    assert LatencyTable(graph, target, tmp_path).path != LatencyTable(graph, eager, tmp_path).path


def test_an_onnxruntime_latency_target_is_refused_on_another_device_in_one_sentence():
    with pytest.raises(ConfigError, match=r"onnxruntime.*device 'cpu'"):
        LatencyTarget(device="cuda", runtime="onnxruntime")
    with pytest.raises(ConfigError, match="runtime 'tensorrt' is not allowed; allowed: torch, onnxruntime"):
        LatencyTarget(runtime="tensorrt")


@pytest.fixture
def run_folder(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    autocomp.save(quantized(), run / "model.pt", EXAMPLE)
    return run


def test_export_format_onnx_writes_a_checked_qdq_model_that_onnx_runtime_runs(run_folder, tmp_path):
    from autocomp.app.cli import app

    result = CliRunner().invoke(app, ["export", str(run_folder), "--format", "onnx", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "same top-1 on" in result.output
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["model.onnx", "model.pt"]
    model = autocomp.load(tmp_path / "out" / "model.pt")
    model_bytes = (tmp_path / "out" / "model.onnx").read_bytes()
    assert "QuantizeLinear" in {node.op_type for node in onnx.load_from_string(model_bytes).graph.node}
    got = deploy.run(deploy.session(model_bytes, threads=1), batch(3))
    with torch.no_grad():
        expected = model(batch(3))
    assert (got - expected).abs().max() <= QDQ_TOLERANCE * max(1.0, float(expected.abs().max()))


def test_a_bad_export_format_is_refused_with_exit_2_and_nothing_written(run_folder, tmp_path):
    from autocomp.app.cli import app

    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["export", str(run_folder), "--format", "tflite", "--out", str(out)])
    assert result.exit_code == 2
    assert "export format 'tflite' is not allowed; allowed: torch, onnx." in " ".join(result.output.split())
    assert not out.exists()


def test_an_export_that_disagrees_is_refused_and_nothing_is_written(run_folder, tmp_path, monkeypatch):
    from autocomp.app.cli import app
    from autocomp.deploy import ort

    monkeypatch.setattr(ort, "QDQ_TOLERANCE", 1e-9)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["export", str(run_folder), "--format", "onnx", "--out", str(out)])
    assert result.exit_code == 2 and "disagrees with the PyTorch model" in result.output
    assert not (out / "model.onnx").exists() and not (out / "model.pt").exists()


def test_the_fast_int8_form_keeps_the_learned_steps_and_quantizes_between_the_layers_too():
    from autocomp.deploy.qdq import fold_batchnorms

    model = quantized()
    model_bytes = deploy.int8_onnx(model, EXAMPLE, batch(64).split(32))
    graph = onnx.load_from_string(model_bytes).graph
    kinds = [node.op_type for node in graph.node]
    layers = [name for name, module in model.named_modules() if hasattr(module, "onnx_form")]
    assert "BatchNormalization" not in kinds and kinds.count("QuantizeLinear") > len(layers)  # the adds' outputs too
    values = {init.name: onnx.numpy_helper.to_array(init) for init in graph.initializer}
    _, inputs = fold_batchnorms(deploy.to_onnx(resnet20(), EXAMPLE))
    (quantize,) = [n for n in graph.node if n.op_type == "QuantizeLinear" and n.input[0] == inputs["layer1.0.conv1"]]
    assert float(values[quantize.input[1]]) == pytest.approx(float(model.layer1[0].conv1.inputs.step.detach()))
    assert int(values[quantize.input[2]]) == 0  # after a ReLU: unsigned, zero point 0
    got = deploy.run(deploy.session(model_bytes, threads=1), batch())
    with torch.no_grad():
        expected = model(batch())
    assert (got - expected).abs().max() <= QDQ_TOLERANCE * max(1.0, float(expected.abs().max()))


def test_export_int8_writes_the_fast_form_calibrated_on_the_runs_data_and_needs_format_onnx(tmp_path):
    from autocomp.app.cli import app
    from autocomp.app.config import load_config
    from autocomp.data.batching import iterate_batches

    run, example = tmp_path / "run", torch.randn(1, 1, 8, 8)
    run.mkdir()
    (run / "config.yaml").write_text("model: {name: resnet20}\ndata: {name: digits, val_size: 300}\n")
    images = next(iter(iterate_batches(load_config(run / "config.yaml").data.load().train, 64)))[0]
    model = resnet20()
    policy = autocomp.Policy.uniform(autocomp.model_layers(model, example), weight_bits=8, act_bits=8)
    autocomp.save(
        autocomp.compress(model, policy, example, data=[(images, torch.zeros(64))]), run / "model.pt", example
    )

    refused = CliRunner().invoke(app, ["export", str(run), "--int8", "--out", str(tmp_path / "torch")])
    assert refused.exit_code == 2 and "export int8 needs format 'onnx'" in " ".join(refused.output.split())
    assert not (tmp_path / "torch").exists()
    result = CliRunner().invoke(app, ["export", str(run), "--format", "onnx", "--int8", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    kinds = [node.op_type for node in onnx.load((tmp_path / "out" / "model.onnx").as_posix()).graph.node]
    assert "BatchNormalization" not in kinds and kinds.count("QuantizeLinear") > 22  # 22 layers, and the adds


def test_a_model_onnx_cannot_express_is_refused_in_one_sentence():
    model = resnet20()
    resized = autocomp.compress(model, autocomp.Policy(resolution=0.75), EXAMPLE)  # antialiased resize: not in ONNX
    with pytest.raises(ConfigError, match=r"cannot be exported to ONNX: .*upsample_bilinear2d_aa"):
        deploy.to_onnx(resized, EXAMPLE)
