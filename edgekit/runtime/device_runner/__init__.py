"""The self-contained code that runs models, here and on devices (uploaded as this folder).

Only numpy and the model's runtime are needed: nothing here imports edgekit. A runtime is one
module with a :class:`~.base.Runner` subclass plus one entry in :mod:`.registry`.
"""
from .base import Runner, TensorInfo
from .registry import RUNTIMES, RuntimeMissing, RuntimeSpec
from .runner import open_runner, time_loop
from .system import isa_flags, system_info
from .tflite_runner import load_tflite_interpreter_class

__all__ = ["RUNTIMES", "Runner", "RuntimeMissing", "RuntimeSpec", "TensorInfo", "isa_flags",
           "load_tflite_interpreter_class", "open_runner", "system_info", "time_loop"]
