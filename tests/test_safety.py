"""Issue 10: nothing that executes code is loaded unless the user chose a whole-model pickle as the
source; edgekit's own model files round-trip exactly; outputs never overwrite inputs; target
profiles resolve one way and refuse implausible values."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from edgekit.cli import main
from edgekit.errors import EdgekitError
from edgekit.sources import MODEL_FORMAT, load_model, save_module

ROOT = Path(__file__).resolve().parent.parent


class _Marker:
    """A crafted pickle: unpickling it creates ``path`` (the proof that code ran)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def _crafted(tmp_path: Path) -> tuple[Path, Path]:
    marker = tmp_path / "MARKER"
    evil = tmp_path / "evil.pt"
    torch.save({"features.0.0.weight": _Marker(marker)}, evil)
    return evil, marker


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err


@pytest.mark.parametrize("how", ["weights", "state dict with --arch"])
def test_crafted_pickle_never_runs(how: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    evil, marker = _crafted(tmp_path)
    source = ["edgekit.zoo:digits_cnn", "--weights", str(evil)] if how == "weights" else \
        [str(evil), "--arch", "edgekit.zoo:digits_cnn"]
    out = tmp_path / "m.onnx"
    assert main(["export", *source, "--input-shape", "1,3,32,32", "-o", str(out)]) == 2
    assert "holds pickled Python objects" in _one_line_error(capsys)
    assert not marker.exists() and not out.exists()


def test_crafted_pickle_as_a_pipeline_model_file_never_runs(tmp_path: Path) -> None:
    from edgekit.pipeline.config import PipelineConfig
    from edgekit.pipeline.steps import _load

    evil, marker = _crafted(tmp_path)
    config = PipelineConfig.model_validate({"model": {"source": "edgekit.zoo:digits_cnn", "input_shape": [1, 3, 32, 32]},
                                            "data": {"recipe": "digits", "calib": "builtin:digits/train",
                                                     "eval": "builtin:digits/test"}})
    with pytest.raises(EdgekitError, match="holds pickled Python objects"):
        _load(evil, config)
    assert not marker.exists()


def test_model_file_never_names_code_to_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A weights-only file whose recorded architecture is ``os:system`` is refused, not built."""
    marker = tmp_path / "MARKER"
    forged = tmp_path / "forged.pt"
    torch.save({"format": MODEL_FORMAT, "source": {"spec": "os:system", "kwargs": {"command": f"touch {marker}"}},
                "structure": {}, "state_dict": {}}, forged)
    assert main(["export", str(forged), "--input-shape", "1,3,32,32", "-o", str(tmp_path / "f.onnx")]) == 2
    assert "name it yourself: --arch os:system" in _one_line_error(capsys)
    assert not marker.exists()


def test_whole_model_pickle_as_source_still_works(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from edgekit.zoo import digits_cnn

    model = digits_cnn(width=8).eval()
    torch.save(model, tmp_path / "whole.pt")
    loaded = load_model(str(tmp_path / "whole.pt"))
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(loaded.module(x), model(x))
    assert "whole-model pickle" in caplog.text
    # what edgekit writes from it is no pickle; the pickle is named again as the architecture
    save_module(loaded.module, tmp_path / "copy.pt", None)
    assert torch.load(tmp_path / "copy.pt", weights_only=True)["format"] == MODEL_FORMAT
    with pytest.raises(EdgekitError, match="--arch"):
        load_model(str(tmp_path / "copy.pt"))
    again = load_model(str(tmp_path / "copy.pt"), arch=str(tmp_path / "whole.pt")).module
    assert torch.equal(again(x), model(x))


@pytest.mark.parametrize(("spec", "kwargs", "shape"), [
    ("edgekit.zoo:resnet18_small", {}, (2, 3, 32, 32)),  # the demo's model, pruned at 0.6
    ("torchvision:shufflenet_v2_x0_5", {"num_classes": 10}, (2, 3, 64, 64)),  # prune/shuffle.py's special case
])
def test_pruned_model_round_trips_exactly(spec: str, kwargs: dict, shape: tuple, tmp_path: Path) -> None:
    from edgekit.prune import prune

    model = load_model(spec, kwargs).module
    prune(model, torch.zeros(1, *shape[1:]), ratio=0.6)
    model.eval()
    path = save_module(model, tmp_path / "pruned.pt", torch.zeros(1, *shape[1:]))
    document = torch.load(path, weights_only=True)  # no pickled classes inside
    assert document["format"] == MODEL_FORMAT and document["source"] == {"spec": spec, "kwargs": kwargs}
    back = load_model(str(path)).module
    x = torch.randn(*shape)
    assert torch.equal(back(x), model(x))


def test_untrusted_factory_needs_arch(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    factory = tmp_path / "net.py"
    factory.write_text("from edgekit.zoo import digits_cnn\n\ndef build(width=8):\n    return digits_cnn(width=width)\n")
    spec = f"{factory}:build"
    out = tmp_path / "s.pt"
    assert main(["sparsify", spec, "--sparsity", "0.5", "-o", str(out)]) == 0
    capsys.readouterr()
    assert main(["export", str(out), "--input-shape", "1,3,32,32", "-o", str(tmp_path / "a.onnx")]) == 2
    assert f"--arch {spec}" in _one_line_error(capsys)
    model = load_model(str(out), arch=spec).module
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 10)


def test_the_keyword_arguments_a_file_gives_a_named_architecture_are_said(tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """The user names the factory; the arguments it is built with (a path, a flag) come from the file: said."""
    factory = tmp_path / "net.py"
    factory.write_text("from edgekit.zoo import digits_cnn\n\ndef build(width=8):\n    return digits_cnn(width=width)\n")
    spec = f"{factory}:build"
    out = tmp_path / "s.pt"
    assert main(["sparsify", spec, "--kwargs", '{"width": 12}', "--sparsity", "0.5", "-o", str(out)]) == 0
    capsys.readouterr()
    assert main(["export", str(out), "--arch", spec, "--input-shape", "1,3,32,32", "-o", str(tmp_path / "a.onnx")]) == 0
    assert f'{out}: building --arch {spec} with the keyword arguments the file records: {{"width": 12}}' in \
        capsys.readouterr().err
    assert main(["export", str(out), "--arch", spec, "--kwargs", '{"width": 12}', "--input-shape", "1,3,32,32",
                 "-o", str(tmp_path / "b.onnx")]) == 0
    assert "keyword arguments the file records" not in capsys.readouterr().err


ENUM_NET = """
import enum

import torch


class Format(str, enum.Enum):  # timm's layers.format.Format, kept by its ViTs as output_fmt
    NCHW = "NCHW"


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 16, 3, padding=1)
        self.stem.output_fmt = Format.NCHW
        self.fc = torch.nn.Linear(16, 10)

    def forward(self, x):
        return self.fc(torch.relu(self.stem(x)).mean((2, 3)))


def build():
    return Net()
"""


def test_a_pruned_model_with_an_enum_attribute_saves_as_tensors_and_loads_back(tmp_path: Path) -> None:
    from edgekit.prune import prune

    (tmp_path / "enum_net.py").write_text(ENUM_NET)
    spec = f"{tmp_path / 'enum_net.py'}:build"
    model = load_model(spec).module.eval()
    prune(model, torch.zeros(1, 3, 8, 8), ratio=0.5, round_to=None, progress=None)
    path = save_module(model, tmp_path / "pruned.pt", torch.zeros(1, 3, 8, 8))
    torch.load(path, weights_only=True)  # no pickled class inside: the enum is not part of the structure
    back = load_model(str(path), arch=spec).module.eval()
    x = torch.randn(2, 3, 8, 8)
    assert back.stem.out_channels == 8 and torch.equal(back(x), model(x))


def _same_file_cases(tmp_path: Path) -> list[list[str]]:
    from edgekit.export import export_onnx
    from edgekit.zoo import digits_cnn

    model = digits_cnn(width=8).eval()
    save_module(load_model("edgekit.zoo:digits_cnn", {"width": 8}).module, tmp_path / "m.pt", None)
    export_onnx(model, torch.zeros(1, 3, 32, 32), tmp_path / "m.onnx")
    (tmp_path / "link.pt").symlink_to(tmp_path / "m.pt")
    (tmp_path / "link.onnx").symlink_to(tmp_path / "m.onnx")
    (tmp_path / "q.fp32.tflite").symlink_to(tmp_path / "m.onnx")  # quantize's FP32 reference would land on it
    t = str(tmp_path)
    return [
        ["export", "edgekit.zoo:digits_cnn", "--weights", f"{t}/m.onnx", "--input-shape", "1,3,32,32", "-o", f"{t}/link.onnx"],
        ["prune", f"{t}/m.pt", "--ratio", "0.5", "--input-shape", "1,3,32,32", "-o", f"{t}/link.pt"],
        ["sparsify", f"{t}/link.pt", "--sparsity", "0.5", "-o", f"{t}/m.pt"],
        ["quantize", f"{t}/m.onnx", "--backend", "ort", "--calib", "builtin:digits/train", "--recipe", "digits",
         "-o", f"{t}/link.onnx"],
        ["quantize", f"{t}/m.onnx", "--backend", "tflite", "--calib", "builtin:digits/train", "--recipe", "digits",
         "-o", f"{t}/q.int8.tflite"],
        ["eval", f"{t}/m.onnx", "--data", "builtin:digits/test", "--recipe", "digits", "--json", f"{t}/link.onnx"],
        ["bench", f"{t}/link.onnx", "--runs", "1", "--json", f"{t}/m.onnx"],
    ]


def test_output_equal_to_an_input_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cases = _same_file_cases(tmp_path)
    before = {p: p.read_bytes() for p in (tmp_path / "m.pt", tmp_path / "m.onnx")}
    for args in cases:
        assert main([*args, "--force"]) == 2, args
        assert "; write the output to another path" in _one_line_error(capsys), args
    assert {p: p.read_bytes() for p in before} == before


def test_two_writers_to_one_new_path(tmp_path: Path) -> None:
    """Two real processes: the second is refused while the first holds the output's lock."""
    out = tmp_path / "p.pt"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "edgekit", "prune", "torchvision:resnet18", "--ratio", "0.5",
               "--input-shape", "1,3,224,224", "-o", str(out)]
    first = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lock = tmp_path / ".p.pt.lock"
    deadline = time.monotonic() + 120
    while not lock.exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert lock.exists(), first.communicate()
    second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    first_out, first_err = first.communicate(timeout=600)
    assert first.returncode == 0, first_err
    assert second.returncode == 2 and "being written by another edgekit process" in second.stderr, second.stderr
    assert load_model(str(out)).module(torch.zeros(1, 3, 224, 224)).shape == (1, 1000)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.pt", "p.pt.json"]


def _profile(**changes: object) -> str:
    base = {"name": "mine", "description": "x", "arch": "aarch64", "cores": 4, "threads": 4, "runtimes": ["tflite"]}
    import yaml

    data = {**base, **changes}
    return yaml.safe_dump({k: v for k, v in data.items() if v is not None})


def test_user_profile_shadows_shipped_everywhere(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from edgekit.targets import load_target

    (tmp_path / "my-pi.yaml").write_text(_profile(name="rpi4", description="my own pi", threads=2,
                                                  pruning={"channel_multiple": 32}))
    assert main(["targets", "list", "--targets-dir", str(tmp_path)]) == 0
    assert "my own pi" in capsys.readouterr().out
    assert main(["targets", "show", "rpi4", "--targets-dir", str(tmp_path)]) == 0
    assert "my own pi" in capsys.readouterr().out
    assert load_target("rpi4", tmp_path).pruning.channel_multiple == 32


@pytest.mark.parametrize(("changes", "key"), [
    ({"ssh": {"port": 99999}}, "ssh.port"),
    ({"ssh": {"port": 0}}, "ssh.port"),
    ({"ssh": {"host": "-oProxyCommand=touch x"}}, "ssh.host"),
    ({"ssh": {"user": "pi root"}}, "ssh.user"),
    ({"cores": 0}, "cores"),
    ({"cores": 5000, "threads": 4}, "cores"),
    ({"threads": 8}, "threads"),
    ({"tflite": {"threads": 16}}, "tflite"),
    ({"pruning": {"channel_multiple": 1000}}, "pruning.channel_multiple"),
    ({"name": "../evil"}, "name"),
])
def test_implausible_profile_values_are_refused(changes: dict, key: str, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text(_profile(**changes))
    assert main(["targets", "show", str(path)]) == 2
    assert f"{path}: key '{key}':" in _one_line_error(capsys)

