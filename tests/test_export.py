"""Issue 3: model sources, ONNX export with a parity proof, manifests and failure modes."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from edgekit.cli import main
from edgekit.export import export_onnx
from edgekit.manifest import manifest_path, read_manifest, sha256_file

TORCHVISION_MODELS = [
    "resnet18", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0", "shufflenet_v2_x1_0",
    "regnet_y_400mf", "squeezenet1_1", "mnasnet0_5",
]


def leftovers(folder: Path) -> list[str]:
    """Temporary files an aborted write would leave behind."""
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".part"))


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.slow
@pytest.mark.parametrize("name", TORCHVISION_MODELS)
def test_torchvision_models_export_with_parity(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / f"{name}.onnx"
    code, stdout, stderr = run_cli(["export", f"torchvision:{name}", "--input-shape", "1,3,224,224", "-o", out], capsys)
    assert code == 0, stderr
    assert "parity PASS on 8 inputs" in stdout
    manifest = read_manifest(out)
    assert manifest is not None and manifest["sha256"] == sha256_file(out)
    parity = manifest["stages"][0]["parity"]
    assert parity["num_inputs"] == 8 and parity["rule"] == "float32-noise" and parity["passed"]
    assert parity["noise_ratio"] <= parity["noise_factor"] and parity["min_cosine"] > 0.9999
    # independent check with a fresh session: the file on disk is the model that was proven
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == [1, 3, 224, 224]
    assert session.run(None, {"input": np.zeros((1, 3, 224, 224), np.float32)})[0].shape == (1, 1000)


def test_export_api_writes_manifest_with_history(tmp_path: Path) -> None:
    from edgekit.zoo import digits_cnn

    model = digits_cnn(width=8).eval()
    samples = np.random.default_rng(1).standard_normal((3, 3, 32, 32)).astype(np.float32)
    result = export_onnx(model, torch.randn(1, 3, 32, 32), tmp_path / "d.onnx", samples=samples, dynamic_batch=True)
    assert result.parity.passed and result.parity.num_inputs == 11 and result.parity.real_samples == 3
    manifest = json.loads(manifest_path(tmp_path / "d.onnx").read_text())
    assert manifest["schema"] == "edgekit.manifest/1"
    assert manifest["input"] == {
        "name": "input", "shape": [1, 3, 32, 32], "dtype": "float32", "layout": "NCHW", "dynamic_batch": True,
        "preprocessing": None,
    }
    stage = manifest["stages"][0]
    assert stage["stage"] == "export" and stage["exporter"] == "torchscript" and stage["opset"] == 17
    assert stage["params"] == sum(p.numel() for p in model.parameters())
    assert stage["macs"] > 1_000_000
    # the dynamic batch axis really is dynamic
    session = ort.InferenceSession(str(tmp_path / "d.onnx"), providers=["CPUExecutionProvider"])
    batch = np.random.default_rng(0).standard_normal((5, 3, 32, 32)).astype(np.float32)
    expected = model(torch.from_numpy(batch)).detach().numpy()
    np.testing.assert_allclose(session.run(None, {"input": batch})[0], expected, atol=1e-4)


def test_factory_sources_with_kwargs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    factory_file = tmp_path / "netdef.py"
    factory_file.write_text(textwrap.dedent("""
        import torch
        def build_net(width=4):
            return torch.nn.Sequential(torch.nn.Conv2d(3, width, 3), torch.nn.ReLU(),
                                       torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(width, 2))
    """))
    out = tmp_path / "net.onnx"
    code, _, err = run_cli(
        ["export", f"{factory_file}:build_net", "--kwargs", '{"width": 6}', "--input-shape", "1,3,16,16", "-o", out], capsys
    )
    assert code == 0, err
    weights = {i.name: list(i.dims) for i in onnx.load(str(out)).graph.initializer}
    assert [6, 3, 3, 3] in weights.values()
    out2 = tmp_path / "zoo.onnx"
    code, _, err = run_cli(["export", "edgekit.zoo:digits_cnn", "--kwargs", '{"width": 8, "num_classes": 4}',
                            "--input-shape", "1,3,32,32", "-o", out2], capsys)
    assert code == 0, err
    assert ort.InferenceSession(str(out2)).get_outputs()[0].shape == [1, 4]


def test_whole_model_state_dict_and_pt2_sources(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from edgekit.zoo import digits_cnn

    model = digits_cnn(width=8).eval()
    torch.save(model, tmp_path / "whole.pt")
    torch.save(model.state_dict(), tmp_path / "state.pth")
    program = torch.export.export(model, (torch.randn(1, 3, 32, 32),))
    torch.export.save(program, str(tmp_path / "prog.pt2"))
    x = np.random.default_rng(3).standard_normal((1, 3, 32, 32)).astype(np.float32)
    expected = model(torch.from_numpy(x)).detach().numpy()
    for name, extra in [("whole.pt", []), ("state.pth", ["--arch", "edgekit.zoo:digits_cnn", "--kwargs", '{"width": 8}']),
                        ("prog.pt2", [])]:
        out = tmp_path / f"{name}.onnx"
        code, _, err = run_cli(["export", tmp_path / name, *extra, "--input-shape", "1,3,32,32", "-o", out], capsys)
        assert code == 0, f"{name}: {err}"
        got = ort.InferenceSession(str(out)).run(None, {"input": x})[0]
        np.testing.assert_allclose(got, expected, atol=1e-4, err_msg=name)
    assert read_manifest(tmp_path / "prog.pt2.onnx")["stages"][0]["exporter"] == "dynamo"
    # --weights loads a state dict into a named architecture
    code, _, err = run_cli(["export", "edgekit.zoo:digits_cnn", "--kwargs", '{"width": 8}', "--weights",
                            tmp_path / "state.pth", "--input-shape", "1,3,32,32", "-o", tmp_path / "w.onnx"], capsys)
    assert code == 0, err
    np.testing.assert_allclose(ort.InferenceSession(str(tmp_path / "w.onnx")).run(None, {"input": x})[0], expected, atol=1e-4)


class _CountingModel(torch.nn.Module):
    """Eager output changes on every call; a traced graph freezes one call: parity must fail."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return x * float(self.calls)


def _write_factory(tmp_path: Path) -> Path:
    source = tmp_path / "bad_models.py"
    source.write_text(textwrap.dedent("""
        import torch
        def raising():
            raise RuntimeError("boom in factory")
        def not_a_module():
            return 42
        class Counting(torch.nn.Module):
            def __init__(self):
                super().__init__(); self.calls = 0
            def forward(self, x):
                self.calls += 1
                return x * float(self.calls)
        def counting():
            return Counting()
    """))
    return source


@pytest.mark.parametrize(
    ("model_args", "message"),
    [
        (["torchvision:resnet_nope"], "torchvision:resnet_nope: no such torchvision classification model"),
        (["{factory}:raising"], "factory raised RuntimeError: boom in factory"),
        (["{factory}:not_a_module"], "factory returned int, not a torch.nn.Module"),
        (["{factory}:missing"], "has no callable named 'missing'"),
        (["no_such_module_xyz:build"], "cannot import module 'no_such_module_xyz'"),
        (["{tmp}/garbage.pt"], "garbage.pt: not a torch.save file"),
        (["{tmp}/state.pth"], "state.pth: holds a state dict, not a model; name its architecture with --arch"),
        (["{tmp}/state.pth", "--arch", "edgekit.zoo:digits_cnn", "--kwargs", '{"width": 16}'],
         "state.pth: state dict does not fit the architecture"),
        (["{tmp}/partial.pth", "--arch", "edgekit.zoo:digits_cnn", "--kwargs", '{"width": 8}'],
         "partial.pth: state dict does not fit the architecture: missing keys classifier.weight, classifier.bias"),
        (["{tmp}/missing.pt"], "missing.pt: model file not found"),
        (["edgekit.zoo:digits_cnn", "--kwargs", "{not json"], "--kwargs: not valid JSON"),
        (["torchvision:resnet18", "--kwargs", '{"weights": "DEFAULT"}'], "pretrained weights are never downloaded"),
        (["edgekit.zoo:digits_cnn", "--input-shape", "1,1,32,32"], "input shape [1, 1, 32, 32]: the model cannot run on it"),
        (["{factory}:counting", "--input-shape", "1,3,4,4"], "ONNX output differs from PyTorch: parity FAIL"),
        (["models.txt"], "models.txt: unknown model source"),
    ],
)
def test_export_failures_are_one_line_exit_2_and_leave_nothing(
    model_args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from edgekit.zoo import digits_cnn

    factory = _write_factory(tmp_path)
    (tmp_path / "garbage.pt").write_bytes(b"this is not a pickle")
    state = digits_cnn(width=8).state_dict()
    torch.save(state, tmp_path / "state.pth")
    torch.save({k: v for k, v in state.items() if not k.startswith("classifier")}, tmp_path / "partial.pth")
    args = [a.replace("{factory}", str(factory)).replace("{tmp}", str(tmp_path)) for a in model_args]
    if "--input-shape" not in args:
        args += ["--input-shape", "1,3,32,32"]
    out = tmp_path / "out" / "model.onnx"
    code, stdout, stderr = run_cli(["export", *args, "-o", out], capsys)
    assert code == 2
    assert message in stderr
    assert stderr.startswith("edgekit: error: ") and stderr.count("\n") == 1
    assert not out.exists() and not manifest_path(out).exists()
    if out.parent.exists():
        assert leftovers(out.parent) == []


def test_existing_output_needs_force(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "m.onnx"
    out.write_bytes(b"keep me")
    args = ["export", "edgekit.zoo:digits_cnn", "--kwargs", '{"width": 8}', "--input-shape", "1,3,32,32", "-o", out]
    code, _, stderr = run_cli(args, capsys)
    assert code == 2 and f"{out}: already exists (use --force to overwrite)" in stderr
    assert out.read_bytes() == b"keep me"
    code, _, stderr = run_cli([*args, "--force"], capsys)
    assert code == 0, stderr
    onnx.checker.check_model(onnx.load(str(out)))


def test_bad_input_shape_is_a_usage_error(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "edgekit", "export", "edgekit.zoo:digits_cnn", "--input-shape", "1,3,a,32",
         "-o", str(tmp_path / "x.onnx")], capture_output=True, text=True,
    )
    assert proc.returncode == 2 and "'1,3,a,32' is not a comma-separated list of integers" in proc.stderr
    assert not (tmp_path / "x.onnx").exists()
