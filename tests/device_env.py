"""Minimal "device" Pythons for the SSH tests: what a board has, and nothing of edgekit.

``.venv-device`` holds only numpy, onnxruntime and tflite-runtime 2.14 (the package boards use);
``.venv-device-bare`` holds numpy alone, to prove the "no runtime" message. Both are created once
(``make device-env`` or the first test that needs them) and reused.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENVS = {
    ".venv-device": ["numpy<2", "onnxruntime==1.23.0", "tflite-runtime==2.14.0"],
    ".venv-device-bare": ["numpy<2"],
}


def ensure(name: str = ".venv-device") -> Path:
    """The env's python, creating the env if it is missing or incomplete."""
    folder = ROOT / name
    python = folder / "bin" / "python"
    stamp = folder / ".complete"
    if not stamp.exists():
        subprocess.run(["python3.11", "-m", "venv", "--clear", str(folder)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", *ENVS[name]], check=True)
        stamp.write_text("ok\n")
    return python


if __name__ == "__main__":
    for env in (sys.argv[1:] or list(ENVS)):
        print(ensure(env))
