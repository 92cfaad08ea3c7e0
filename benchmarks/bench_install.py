"""Install size: ``pip install edgekit`` (the light core) and each extra, each in a fresh venv.

The core must stay under 600 MB (the full stack is about 8 GB, 3.2 GB of it CUDA libraries): a
user who only quantizes an ONNX model with ONNX Runtime and benchmarks it on a board should not
download PyTorch or TensorFlow. Each venv is measured with ``du`` after ``pip install``, and the
core one is smoke-tested: ``edgekit quantize --backend ort``, ``bench`` and ``report`` on a tiny
ONNX model, and ``edgekit prune`` must name the missing extra in one line.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, log, markdown, save_summary

LIMIT_MB = 600


def venv_size_mb(folder: Path) -> float:
    total = 0
    for base, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(base, name)
            if not os.path.islink(path):
                total += os.path.getsize(path)
    return total / 1e6


def install(spec: str, where: Path) -> tuple[float, float]:
    """(seconds, MB) for a fresh venv with ``pip install spec``."""
    subprocess.run([sys.executable, "-m", "venv", str(where)], check=True)
    started = time.perf_counter()
    subprocess.run([str(where / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", spec], check=True)
    return time.perf_counter() - started, venv_size_mb(where)


def smoke_test(venv: Path, work: Path) -> None:
    """The core's own promises, in the venv that has only the core: quantize with ORT, bench, report;
    and a command that needs PyTorch names the extra."""
    run = work / "run"
    (run / "artifacts").mkdir(parents=True)
    model = run / "artifacts" / "tiny.onnx"
    make = ("import onnx, onnx.helper as h, numpy as np\n"
            "w = h.make_tensor('w', 1, [4, 3, 3, 3], np.random.default_rng(0).standard_normal(108).tolist())\n"
            "g = h.make_graph([h.make_node('Conv', ['x', 'w'], ['c']), h.make_node('Relu', ['c'], ['y'])], 'g',\n"
            "    [h.make_tensor_value_info('x', 1, [1, 3, 32, 32])], [h.make_tensor_value_info('y', 1, [1, 4, 30, 30])], [w])\n"
            f"onnx.save(h.make_model(g, opset_imports=[h.make_opsetid('', 17)], ir_version=9), {str(model)!r})\n")
    subprocess.run([str(venv / "bin" / "python"), "-c", make], check=True)
    edgekit = str(venv / "bin" / "edgekit")
    int8 = run / "artifacts" / "tiny.int8.onnx"
    for argv in (["quantize", str(model), "--backend", "ort", "--calib", "builtin:digits/train", "--recipe", "digits",
                  "--num-samples", "16", "-o", str(int8)],
                 ["bench", str(model), str(int8), "--runs", "5", "--out-dir", str(run / "bench")],
                 ["report", str(run)]):
        subprocess.run([edgekit, "-q", *argv], check=True, stdout=subprocess.DEVNULL)
    done = subprocess.run([edgekit, "prune", "torchvision:resnet18", "--ratio", "0.5", "--input-shape", "1,3,32,32",
                           "-o", str(work / "p.pt")], capture_output=True, text=True)
    if done.returncode != 2 or "edgekit[torch]" not in done.stderr:
        raise SystemExit(f"core venv: edgekit prune should name the torch extra, got {done.returncode}: {done.stderr}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--extras", default="", help="also measure these extras, e.g. openvino,tflite,torch,all")
    args = parser.parse_args()
    rows, summary = [], []
    with tempfile.TemporaryDirectory(prefix="edgekit-install-") as tmp:
        for extra in ["", *[e for e in args.extras.split(",") if e]]:
            spec = f"{ROOT}[{extra}]" if extra else str(ROOT)
            venv = Path(tmp) / (extra or "core")
            log(f"installing {spec} into a fresh venv ...")
            seconds, size = install(spec, venv)
            if not extra:
                smoke_test(venv, Path(tmp))
            name = f"edgekit[{extra}]" if extra else "edgekit (core)"
            rows.append([name, f"{size:.0f}", f"{seconds:.0f}"])
            summary.append({"comparison": f"install {name}", "metric": "venv MB", "value": round(size)})
            shutil.rmtree(venv)
    print(markdown(rows, ["install", "venv MB", "pip seconds"]))
    save_summary("install", summary)
    core = float(rows[0][1])
    if core > LIMIT_MB:
        raise SystemExit(f"the core install is {core:.0f} MB, over the {LIMIT_MB} MB limit")


if __name__ == "__main__":
    main()
