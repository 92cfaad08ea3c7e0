"""Runtimes: one interface over ONNX Runtime and the TFLite interpreter.

The implementation lives in :mod:`edgekit.runtime.device_runner`, a self-contained file that is
also pushed to devices for benchmarking over SSH.
"""
from edgekit.runtime.device_runner import Runner, TensorInfo, open_runner, time_loop

__all__ = ["Runner", "TensorInfo", "open_runner", "time_loop"]
