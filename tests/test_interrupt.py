"""Issue 10: a conversion killed with SIGKILL leaves scratch files only until the next command
writes there; a live process's scratch is never touched; nothing goes to /tmp."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from edgekit.atomic import sweep

ROOT = Path(__file__).resolve().parent.parent


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_sigkill_mid_tflite_conversion_is_cleaned_by_the_next_command(tmp_path: Path) -> None:
    from edgekit.export import export_onnx
    from edgekit.zoo import digits_cnn

    model = tmp_path / "m.onnx"
    export_onnx(digits_cnn(width=8).eval(), torch.zeros(1, 3, 32, 32), model)
    out = tmp_path / "out" / "q.int8.tflite"
    out.parent.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "edgekit", "quantize", str(model), "--backend", "tflite", "--calib",
               "builtin:digits/train", "--recipe", "digits", "--num-samples", "40", "-o", str(out)]
    tmp_before = set(Path("/tmp").glob("edgekit-tflite-*"))

    victim = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    scratch: list[Path] = []
    while time.monotonic() < deadline and victim.poll() is None:
        scratch = [p for p in out.parent.glob(".q.int8.tflite.*.tmp") if any(p.rglob("*.onnx"))]
        if scratch:
            break
        time.sleep(0.05)
    assert scratch and victim.poll() is None, victim.communicate()
    assert sweep(out.parent) == [] and scratch[0].exists()  # a live writer's scratch is never removed
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=60)
    assert victim.returncode == -signal.SIGKILL
    left = _hidden(out.parent)
    assert any(name.endswith(".tmp") for name in left), left  # the kill really left scratch behind
    assert not out.exists()

    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    assert _hidden(out.parent) == []
    assert sorted(p.name for p in out.parent.iterdir()) == [
        "q.fp32.tflite", "q.fp32.tflite.json", "q.int8.tflite", "q.int8.tflite.json"]
    assert set(Path("/tmp").glob("edgekit-tflite-*")) <= tmp_before  # nothing new outside the output folder
