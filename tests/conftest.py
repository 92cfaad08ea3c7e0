"""Shared fixtures: a digits CNN trained once per session, its FP32 ONNX, calibration tensors, and for
the SSH tests a real OpenSSH server on 127.0.0.1 with a board-like device Python."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Calibration caches go to a per-session folder, never to the user's ~/.cache."""
    os.environ["EDGEKIT_CACHE_DIR"] = str(tmp_path_factory.mktemp("edgekit-cache"))


@pytest.fixture(autouse=True)
def _edgekit_lines_reach_caplog() -> None:
    """A command run in-process (edgekit.log.configure) stops edgekit's records at its own handler;
    a test that calls the library directly reads them with caplog, through the root logger."""
    logging.getLogger("edgekit").propagate = True


@pytest.fixture(scope="session")
def digits_cnn_model():
    """``edgekit.zoo.digits_cnn(width=32)`` trained on builtin:digits/train (~15 s on 2 cores)."""
    import torch

    from edgekit.distill import train
    from edgekit.zoo import digits_cnn

    torch.manual_seed(0)
    model = digits_cnn(width=32)
    train(model, "builtin:digits/train", "digits", val_source="builtin:digits/val", epochs=6, lr=3e-3,
          progress=False, log=lambda _: None)
    return model.eval()


@pytest.fixture(scope="session")
def digits_fp32_onnx(digits_cnn_model, tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    from edgekit.export import export_onnx

    path = tmp_path_factory.mktemp("digits") / "digits.onnx"
    export_onnx(digits_cnn_model, torch.zeros(1, 3, 32, 32), path)
    return path


@pytest.fixture(scope="session")
def digits_calib() -> np.ndarray:
    from edgekit.data import calibration_tensors

    return calibration_tensors("builtin:digits/train", "digits", 200, seed=0, progress=False)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    """A real OpenSSH server on 127.0.0.1 (tests/sshd_server.py), one per test module."""
    import sshd_server

    sshd = sshd_server.find_sshd()
    if sshd is None:
        pytest.skip("OpenSSH server not installed (apt-get install openssh-server; .ci/run does)")
    ssh = sshd_server.SshServer(tmp_path_factory.mktemp("sshd")).start(sshd)
    yield ssh
    ssh.stop()


@pytest.fixture(scope="module")
def device_python() -> str:
    """A board-like Python: numpy, onnxruntime and tflite-runtime, nothing of edgekit (tests/device_env.py)."""
    import device_env

    return str(device_env.ensure(".venv-device"))
