"""A runtime in a child process, behind the same Runner interface (see ``device_runner/serve.py``).

Used for the runtimes the registry marks ``in_child``: their crash becomes one line naming the
file and the signal, and their thread pools and JIT kernels stay out of edgekit's process (where
PyTorch, TensorFlow and ONNX Runtime already live). Conversions (layout, quantization) stay on this
side, in :class:`Runner`; only ``run`` crosses, with native tensors.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import EdgekitError, first_line
from edgekit.runtime.device_runner import Runner, TensorInfo
from edgekit.runtime.device_runner.serve import pack_arrays, read_frame, unpack_arrays, write_frame

RUNNER_PARENT = Path(__file__).resolve().parent  # holds the device_runner package


class ChildRunnerError(EdgekitError):
    """The child runtime failed: an exception it reported, or its death (a signal), one line."""


class ChildRunner(Runner):
    def __init__(self, path: str, threads: int | None, runtime: str) -> None:
        command = [sys.executable, "-m", "device_runner", "--serve", "--runtime", runtime,
                   *(["--threads", str(threads)] if threads else []), "--", path]
        self._stderr = tempfile.TemporaryFile()
        self._proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
                                      cwd=RUNNER_PARENT)
        described = self._reply(path)
        if "error" in described:
            self.close()
            raise ChildRunnerError(f"{path}: cannot be loaded by {runtime} ({first_line(described['error'])})")
        super().__init__(path, [_tensor(t) for t in described["inputs"]], [_tensor(t) for t in described["outputs"]])
        self.layout = described["layout"]
        self.backend = described["backend"]
        self.package, self.version = described["package"], described["version"]
        self.details = described

    def run(self, feeds: list[np.ndarray]) -> list[np.ndarray]:
        if self._proc.stdin is None or self._proc.poll() is not None:
            raise ChildRunnerError(f"{self.path}: the {self.backend} process has ended")
        try:
            write_frame(self._proc.stdin, b"N", pack_arrays(list(feeds)))
        except BrokenPipeError:
            pass  # it died: _reply says how
        reply = self._reply(self.path)
        if isinstance(reply, dict):
            raise ChildRunnerError(f"{self.path}: {self.backend} failed ({first_line(reply['error'])})")
        return reply

    def describe(self) -> dict[str, Any]:
        return {k: v for k, v in self.details.items() if k not in ("package", "version")}

    def _reply(self, path: str) -> Any:
        frame = read_frame(self._proc.stdout) if self._proc.stdout is not None else None
        if frame is None:
            raise ChildRunnerError(self._death(path))
        kind, payload = frame
        return json.loads(payload) if kind == b"J" else unpack_arrays(payload)

    def _death(self, path: str) -> str:
        from edgekit.runtime.verify import signal_name

        code = self._proc.wait()
        self._stderr.seek(0)
        lines = [line for line in self._stderr.read().decode(errors="replace").splitlines() if line.strip()]
        how = f"crashed with {signal_name(-code)}" if code < 0 else f"exited ({code})"
        return f"{path}: the runtime {how}" + (f": {lines[-1][-200:]}" if lines else "")

    def close(self) -> None:
        """End the child (end of input), waiting briefly; then kill it."""
        proc = self._proc
        if proc.poll() is None:
            try:
                if proc.stdin is not None and not proc.stdin.closed:
                    proc.stdin.close()
                proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                proc.kill()
                proc.wait()
        for stream in (proc.stdin, proc.stdout):
            if stream is not None and not stream.closed:
                stream.close()
        self._stderr.close()

    def __del__(self) -> None:
        if hasattr(self, "_proc"):
            try:
                self.close()
            except Exception:  # noqa: BLE001 - at interpreter exit the modules close() needs may be gone
                pass


def _tensor(info: dict[str, Any]) -> TensorInfo:
    quant = info.get("quantization") or {}
    return TensorInfo(info["name"], info["shape"], info["dtype"], quant.get("scale", 0.0), quant.get("zero_point", 0))
