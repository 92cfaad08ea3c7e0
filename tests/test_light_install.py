"""The light install: without PyTorch and TensorFlow the core commands work end to end, and a
command that needs an extra says which, in one line.

The commands run in a child Python whose import system refuses the optional packages exactly as a
venv without them would (``ModuleNotFoundError`` with the module's name, ``find_spec`` None), so
an ``import torch`` that crept into a core path fails here. ``benchmarks/bench_install.py``
installs the real thing into a fresh venv and measures it.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ABSENT = ("torch", "torchvision", "torch_pruning", "onnxscript", "tensorflow", "onnx2tf", "tf_keras", "keras",
          "onnxsim", "onnx_graphsurgeon", "sng4onnx", "sklearn", "scipy", "openvino")

BLOCKER = f"""
import importlib.machinery, sys
ABSENT = {ABSENT!r}
class WithoutOptional(importlib.machinery.PathFinder):
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name.split(".")[0] in ABSENT:
            return None  # as in a venv without them: find_spec None, import ModuleNotFoundError
        return super().find_spec(name, path, target)
sys.meta_path[:] = [WithoutOptional if f is importlib.machinery.PathFinder else f for f in sys.meta_path]
from edgekit.cli import main
code = main(sys.argv[1:])
leaked = sorted(m for m in sys.modules if m.split(".")[0] in ABSENT)
if leaked:
    print("LEAKED", leaked, file=sys.stderr)
    code = 99
sys.exit(code)
"""


def edgekit_light(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", BLOCKER, *args], capture_output=True, text=True, cwd=cwd,
                          timeout=600)


@pytest.fixture(scope="module")
def light_run(tmp_path_factory: pytest.TempPathFactory, digits_fp32_onnx: Path) -> Path:
    """A run folder made by the core commands only: quantize (ORT), eval, bench."""
    run = tmp_path_factory.mktemp("light")
    (run / "artifacts").mkdir()
    fp32 = run / "artifacts" / "fp32.onnx"
    fp32.write_bytes(digits_fp32_onnx.read_bytes())
    int8 = run / "artifacts" / "int8.onnx"
    done = edgekit_light("quantize", str(fp32), "--backend", "ort", "--calib", "builtin:digits/train",
                         "--recipe", "digits", "--num-samples", "32", "-o", str(int8), cwd=run)
    assert done.returncode == 0, done.stderr
    assert int8.is_file() and json.loads((run / "artifacts" / "int8.onnx.json").read_text())["stages"]
    for artifact in (fp32, int8):
        done = edgekit_light("eval", str(artifact), "--data", "builtin:digits/test", "--recipe", "digits",
                             "--reference", str(fp32), "--json", str(run / "eval" / f"{artifact.name}.json"), cwd=run)
        assert done.returncode == 0, done.stderr
    done = edgekit_light("bench", str(fp32), str(int8), "--runs", "5", "--warmup", "1", "--out-dir",
                         str(run / "bench"), cwd=run)
    assert done.returncode == 0, done.stderr
    return run


def test_core_commands_run_without_torch_or_tensorflow(light_run: Path) -> None:
    evals = {p.name: json.loads(p.read_text()) for p in (light_run / "eval").glob("*.json")}
    assert evals["int8.onnx.json"]["top1"] > 80 and evals["fp32.onnx.json"]["agreement"] == 100
    done = edgekit_light("report", str(light_run), cwd=light_run)
    assert done.returncode == 0, done.stderr
    assert (light_run / "report.html").is_file() or list(light_run.glob("report*"))
    done = edgekit_light("inspect", str(light_run / "artifacts" / "int8.onnx"), cwd=light_run)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("argv, extra", [
    (["prune", "torchvision:resnet18", "--ratio", "0.5", "--input-shape", "1,3,32,32", "-o", "p.pt"],
     "torch"),
    (["export", "torchvision:resnet18", "--input-shape", "1,3,32,32", "-o", "m.onnx"], "torch"),
    (["demo", "--output", "demo-run"], "torch"),
])
def test_a_command_that_needs_an_extra_names_it(tmp_path: Path, argv: list[str], extra: str) -> None:
    done = edgekit_light(*argv, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and f"pip install 'edgekit[{extra}]'" in lines[0], done.stderr
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_tflite_quantization_without_tensorflow_names_the_extra(tmp_path: Path, digits_fp32_onnx: Path) -> None:
    done = edgekit_light("quantize", str(digits_fp32_onnx), "--backend", "tflite", "--calib", "builtin:digits/train",
                         "--recipe", "digits", "-o", str(tmp_path / "m.int8.tflite"), cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "pip install 'edgekit[tflite]'" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []
