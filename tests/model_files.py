"""Real model files for the bad-input tests: a tiny ONNX graph, a tiny TFLite flatbuffer, damaged copies.

The ONNX model is built with onnx.helper (no torch export: milliseconds); the TFLite one with the
TensorFlow converter (a few seconds), as users' files are.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
NOISE = ("WARNING: All log messages before absl", "INFO: Created TensorFlow Lite")


def tiny_onnx(path: Path) -> Path:
    """Conv(3->4, 3x3) + global average pool + flatten on a 1x3x8x8 float input; valid and checked."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["input", "w"], ["c"]), helper.make_node("GlobalAveragePool", ["c"], ["p"]),
         helper.make_node("Flatten", ["p"], ["output"])],
        "tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 4])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def tiny_tflite(path: Path, channels: int = 32) -> Path:
    """Two convolutions and a dense layer (~80 KB with 32 channels): large enough that a truncated
    copy crashes an interpreter that trusts it."""
    code = (
        "import sys, tensorflow as tf\n"
        "tf.keras.utils.set_random_seed(0)\n"
        "c = int(sys.argv[2])\n"
        "m = tf.keras.Sequential([tf.keras.Input((32, 32, 3)), tf.keras.layers.Conv2D(c, 3),"
        " tf.keras.layers.Conv2D(2 * c, 3), tf.keras.layers.GlobalAveragePooling2D(), tf.keras.layers.Dense(10)])\n"
        "open(sys.argv[1], 'wb').write(tf.lite.TFLiteConverter.from_keras_model(m).convert())\n"
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    subprocess.run([sys.executable, "-c", code, str(path), str(channels)], check=True, capture_output=True, env=env)
    return path


def truncated(source: Path, path: Path, fraction: float = 0.37) -> Path:
    data = source.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


def run_cli(args: list[str], cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``python -m edgekit ARGS`` in a child: a crash there is a return code, not a dead test run."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run([sys.executable, "-m", "edgekit", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=timeout, stdin=subprocess.DEVNULL)


def error_lines(stderr: str) -> list[str]:
    """stderr without the runtimes' own log chatter (TensorFlow, absl, ONNX Runtime)."""
    lines = []
    for line in stderr.splitlines():
        if not line.strip() or line.startswith(NOISE) or _is_library_log(line):
            continue
        lines.append(line)
    return lines


_LIBRARY_LOG = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWEF] |[IWEF]\d{4} |\x1b\[)")


def _is_library_log(line: str) -> bool:
    return bool(_LIBRARY_LOG.match(line))


def assert_one_line_error(returncode: int, stderr: str, *needles: str) -> str:
    """Exit code 2, exactly one ``edgekit: error:`` line naming what was wrong, no traceback."""
    lines = error_lines(stderr)
    assert returncode == 2, (returncode, stderr[-2000:])
    assert "Traceback" not in stderr and "internal error" not in stderr, stderr[-2000:]
    errors = [line for line in lines if line.startswith("edgekit: error: ")]
    assert len(errors) == 1 and len(lines) == 1, lines
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    return errors[0]
