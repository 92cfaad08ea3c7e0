"""Runtimes: one interface over ONNX Runtime, the TFLite interpreter and OpenVINO.

The implementation lives in :mod:`edgekit.runtime.device_runner`, a self-contained folder that is
also pushed to devices for benchmarking over SSH; its ``registry`` is the one table of runtimes.
"""
from edgekit.runtime.device_runner import Runner, TensorInfo, open_runner, time_loop

__all__ = ["Runner", "TensorInfo", "open_runner", "time_loop"]
