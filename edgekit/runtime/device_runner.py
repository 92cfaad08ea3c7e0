#!/usr/bin/env python3
"""Self-contained model runner: ONNX Runtime or a TFLite interpreter behind one interface.

This file is pushed as-is to devices, so it imports nothing from edgekit and needs only numpy
plus one of ``onnxruntime``, ``ai_edge_litert`` or ``tflite_runtime`` (``tensorflow`` also
works). edgekit uses the very same code locally, so a measurement here and one on a board differ
by the board, not by the harness.

Conventions: callers hand ``predict`` float32 tensors in NCHW (PyTorch's layout, what the
calibration recipes produce). The runner transposes to NHWC for models whose input is NHWC
(onnx2tf output) and quantizes/dequantizes integer inputs and outputs with the model's own
scale and zero point.

Run as a script it benchmarks models and prints one JSON document on stdout::

    python3 device_runner.py --runs 200 --warmup 10 --threads 4 -- model.tflite [model2.onnx ...]

(``--`` keeps an artifact named like an option, ``-h.onnx``, a file name.) Under edgekit it runs
with ``--watch-stdin``: it exits within a second once its stdin closes (the SSH channel or the
local parent is gone) or its parent dies, and with ``--cleanup`` it removes its own
``edgekit.XXXXXX`` directory on the way out, so a killed client leaves nothing behind on a board.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import select
import shutil
import signal
import sys
import threading
import time
from typing import Any, Callable, Sequence

import numpy as np

RUNNER_VERSION = 1
_NP_DTYPES = {
    "tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(uint8)": np.uint8,
    "tensor(int8)": np.int8, "tensor(int32)": np.int32, "tensor(int64)": np.int64,
}


class TensorInfo:
    """Name, shape, dtype and (for integer tensors) the affine quantization of one model tensor."""

    def __init__(self, name: str, shape: Sequence[Any], dtype: Any, scale: float = 0.0, zero_point: int = 0):
        self.name = name
        self.shape = [d if isinstance(d, int) and d > 0 else None for d in shape]
        self.dtype = np.dtype(dtype)
        self.scale = float(scale)
        self.zero_point = int(zero_point)

    @property
    def quantized(self) -> bool:
        return self.dtype.kind in "iu" and self.scale > 0

    def as_dict(self) -> dict[str, Any]:
        info: dict[str, Any] = {"name": self.name, "shape": self.shape, "dtype": self.dtype.name}
        if self.quantized:
            info["quantization"] = {"scale": self.scale, "zero_point": self.zero_point}
        return info


class Runner:
    """One loaded model. ``run`` takes native tensors; ``predict`` takes float NCHW batches."""

    backend = "base"

    def __init__(self, path: str, inputs: list[TensorInfo], outputs: list[TensorInfo]):
        self.path = path
        self.inputs = inputs
        self.outputs = outputs
        self.layout = "NCHW"

    def run(self, feeds: list[np.ndarray]) -> list[np.ndarray]:  # pragma: no cover - abstract
        raise NotImplementedError

    # -- conversions -------------------------------------------------------------------------
    def to_native(self, x: np.ndarray, info: TensorInfo) -> np.ndarray:
        """Float NCHW -> the model's layout and dtype."""
        x = np.asarray(x, dtype=np.float32)
        if self.layout == "NHWC" and x.ndim == 4:
            x = x.transpose(0, 2, 3, 1)
        if info.quantized:
            limits = np.iinfo(info.dtype)
            q = np.round(x / info.scale) + info.zero_point
            return np.clip(q, limits.min, limits.max).astype(info.dtype)
        return np.ascontiguousarray(x.astype(info.dtype))

    @staticmethod
    def to_float(y: np.ndarray, info: TensorInfo) -> np.ndarray:
        if info.quantized:
            return (y.astype(np.float32) - info.zero_point) * info.scale
        return y.astype(np.float32)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Float NCHW batch -> float first output, one row per sample (loops batch-1 models)."""
        info = self.inputs[0]
        fixed_batch = info.shape[0] if info.shape else None
        if fixed_batch is None or fixed_batch == len(x):
            return self.to_float(self.run([self.to_native(x, info)])[0], self.outputs[0])
        rows = [self.to_float(self.run([self.to_native(x[i:i + 1], info)])[0], self.outputs[0]) for i in range(len(x))]
        return np.concatenate(rows, axis=0)

    def example_feeds(self, seed: int = 0) -> list[np.ndarray]:
        """Random native inputs of the model's own shape (dynamic dims taken as 1)."""
        rng = np.random.default_rng(seed)
        feeds = []
        for info in self.inputs:
            shape = [d or 1 for d in info.shape]
            if info.dtype.kind in "iu":
                limits = np.iinfo(info.dtype)
                feeds.append(rng.integers(limits.min, limits.max + 1, size=shape, dtype=info.dtype))
            else:
                feeds.append(rng.standard_normal(shape).astype(info.dtype))
        return feeds

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.backend, "layout": self.layout,
            "inputs": [i.as_dict() for i in self.inputs], "outputs": [o.as_dict() for o in self.outputs],
        }


class OrtRunner(Runner):
    backend = "onnxruntime"

    def __init__(self, path: str, threads: int | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        inputs = [TensorInfo(i.name, i.shape, _NP_DTYPES.get(i.type, np.float32)) for i in self.session.get_inputs()]
        outputs = [TensorInfo(o.name, o.shape, _NP_DTYPES.get(o.type, np.float32)) for o in self.session.get_outputs()]
        super().__init__(path, inputs, outputs)
        self._names = [i.name for i in inputs]
        self.version = ort.__version__

    def run(self, feeds: list[np.ndarray]) -> list[np.ndarray]:
        return self.session.run(None, dict(zip(self._names, feeds)))


def load_tflite_interpreter_class() -> tuple[Any, str, str]:
    """The first TFLite interpreter available: ai_edge_litert, tflite_runtime, then tensorflow."""
    try:
        from ai_edge_litert.interpreter import Interpreter  # type: ignore
        import ai_edge_litert  # type: ignore

        return Interpreter, "ai_edge_litert", getattr(ai_edge_litert, "__version__", "?")
    except ImportError:
        pass
    try:
        from tflite_runtime.interpreter import Interpreter  # type: ignore
        import tflite_runtime  # type: ignore

        return Interpreter, "tflite_runtime", getattr(tflite_runtime, "__version__", "?")
    except ImportError:
        pass
    try:
        import tensorflow as tf  # type: ignore

        return tf.lite.Interpreter, "tensorflow", tf.__version__
    except ImportError:
        raise ImportError(
            "no TFLite interpreter: pip install ai-edge-litert (or tflite-runtime) on this machine"
        ) from None


class TfliteRunner(Runner):
    backend = "tflite"

    def __init__(self, path: str, threads: int | None = None, layout: str | None = None):
        interpreter_class, self.package, self.version = load_tflite_interpreter_class()
        self.interpreter = interpreter_class(model_path=path, num_threads=threads or None)
        self.interpreter.allocate_tensors()
        self._in = self.interpreter.get_input_details()
        self._out = self.interpreter.get_output_details()
        inputs = [_tflite_info(d) for d in self._in]
        outputs = [_tflite_info(d) for d in self._out]
        super().__init__(path, inputs, outputs)
        self.layout = layout or _guess_layout(inputs[0].shape)

    def run(self, feeds: list[np.ndarray]) -> list[np.ndarray]:
        for detail, value in zip(self._in, feeds):
            if list(value.shape) != list(detail["shape"]):
                self.interpreter.resize_tensor_input(detail["index"], list(value.shape))
                self.interpreter.allocate_tensors()
            self.interpreter.set_tensor(detail["index"], value)
        self.interpreter.invoke()
        return [self.interpreter.get_tensor(d["index"]) for d in self._out]


def _tflite_info(detail: dict[str, Any]) -> TensorInfo:
    scale, zero_point = detail.get("quantization", (0.0, 0))
    return TensorInfo(detail["name"], [int(d) for d in detail["shape"]], detail["dtype"], scale, zero_point)


def _guess_layout(shape: Sequence[Any]) -> str:
    """onnx2tf turns NCHW image inputs into NHWC; a 4-D input with 1 or 3 channels last is NHWC."""
    if len(shape) == 4 and shape[3] in (1, 3, 4) and shape[1] not in (1, 3, 4):
        return "NHWC"
    return "NCHW"


def open_runner(path: str, threads: int | None = None, runtime: str | None = None, layout: str | None = None) -> Runner:
    """Open ``path`` with the runtime its extension implies (or ``runtime`` when given)."""
    kind = runtime or ("onnxruntime" if path.lower().endswith(".onnx") else "tflite")
    if kind in ("onnxruntime", "ort", "onnx"):
        return OrtRunner(path, threads)
    if kind in ("tflite", "ai_edge_litert", "tflite_runtime", "tensorflow"):
        return TfliteRunner(path, threads, layout)
    raise ValueError(f"unknown runtime {kind!r}")


def time_loop(run: Callable[[], Any], warmup: int, runs: int, time_budget: float | None = None) -> list[float]:
    """Latencies in seconds of ``runs`` calls after ``warmup`` calls; stops early past ``time_budget``."""
    for _ in range(warmup):
        run()
    latencies: list[float] = []
    clock = time.perf_counter
    deadline = clock() + time_budget if time_budget else None
    for _ in range(runs):
        start = clock()
        run()
        latencies.append(clock() - start)
        if deadline is not None and clock() > deadline and len(latencies) >= 5:
            break
    return latencies


def peak_rss_bytes() -> int | None:
    """This process's own peak RSS. VmHWM belongs to the address space made by exec; ru_maxrss
    would inherit the peak of the process that forked us (a 3 GB edgekit with TensorFlow loaded)."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        import resource

        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(kib) * (1 if sys.platform == "darwin" else 1024)
    except Exception:
        return None


ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "fma", "asimd", "asimddp", "i8mm", "neon", "sve")


def isa_flags() -> list[str]:
    """The CPU features that decide INT8 kernels (VNNI, dot product), from /proc/cpuinfo."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key.strip().lower() in ("flags", "features"):
                    return sorted(set(value.split()) & set(ISA_FLAGS))
    except OSError:
        pass
    return []


def system_info() -> dict[str, Any]:
    """What a reader needs to trust a number: CPU, ISA flags, governor, temperature, load."""
    info: dict[str, Any] = {
        "hostname": platform.node(), "machine": platform.machine(), "system": platform.system(),
        "python": platform.python_version(), "cpu_count": os.cpu_count(), "numpy": np.__version__,
    }
    try:
        with open("/proc/cpuinfo") as handle:
            text = handle.read()
        for line in text.splitlines():
            key, _, value = line.partition(":")
            key = key.strip().lower()
            if key in ("model name", "hardware", "cpu part") and "cpu_model" not in info:
                info["cpu_model"] = value.strip()
    except OSError:
        pass
    info["isa_flags"] = isa_flags()
    info["cpu_governor"] = _read_first("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")
    freq = _read_first("/sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq")
    info["cpu_freq_mhz"] = int(freq) / 1000 if freq and freq.isdigit() else None
    info["temperature_c"] = read_temperature()
    try:
        info["loadavg"] = list(os.getloadavg())
    except OSError:
        info["loadavg"] = None
    versions: dict[str, str] = {}
    for module in ("onnxruntime", "ai_edge_litert", "tflite_runtime"):
        try:
            versions[module] = getattr(__import__(module), "__version__", "?")
        except Exception:
            continue
    try:  # a full TensorFlow also runs .tflite; look for it without paying for its import
        import importlib.util

        if importlib.util.find_spec("tensorflow") is not None:
            versions["tensorflow"] = "installed"
    except (ImportError, ValueError):
        pass
    info["runtimes"] = versions
    try:
        info["affinity"] = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        info["affinity"] = None
    return info


def cpu_busy_fraction(window: float = 0.3) -> float | None:
    """Share of all CPUs busy over a short window (from /proc/stat): other work competing right now.
    Unlike the load average it does not remember what this very process did a minute ago."""
    def sample() -> tuple[int, int] | None:
        try:
            with open("/proc/stat") as handle:
                values = [int(v) for v in handle.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        idle = values[3] + (values[4] if len(values) > 4 else 0)
        return sum(values), idle

    first = sample()
    time.sleep(window)
    second = sample()
    if not first or not second or second[0] == first[0]:
        return None
    return 1.0 - (second[1] - first[1]) / (second[0] - first[0])


def read_temperature() -> float | None:
    """Highest thermal-zone temperature in degrees C, where the OS shows one."""
    temps = []
    base = "/sys/class/thermal"
    try:
        zones = [z for z in os.listdir(base) if z.startswith("thermal_zone")]
    except OSError:
        return None
    for zone in zones:
        value = _read_first(os.path.join(base, zone, "temp"))
        if value and value.lstrip("-").isdigit():
            temps.append(int(value) / 1000.0)
    return max(temps) if temps else None


def _read_first(path: str) -> str | None:
    try:
        with open(path) as handle:
            return handle.read().strip()
    except OSError:
        return None


def benchmark(path: str, runs: int, warmup: int, threads: int | None, runtime: str | None,
              time_budget: float | None, layout: str | None = None) -> dict[str, Any]:
    """Load, time the first inference, then time ``runs`` inferences on fixed random inputs."""
    start = time.perf_counter()
    runner = open_runner(path, threads, runtime, layout)
    load_s = time.perf_counter() - start
    feeds = runner.example_feeds()
    start = time.perf_counter()
    runner.run(feeds)
    first_s = time.perf_counter() - start
    temp_before = read_temperature()
    busy_before = cpu_busy_fraction()
    latencies = time_loop(lambda: runner.run(feeds), warmup, runs, time_budget)
    return {
        "artifact": os.path.basename(path),
        "size_bytes": os.path.getsize(path),
        "runtime": runner.backend,
        "runtime_package": getattr(runner, "package", "onnxruntime"),
        "runtime_version": getattr(runner, "version", "?"),
        "threads": threads,
        "model": runner.describe(),
        "load_s": load_s,
        "first_inference_s": first_s,
        "warmup": warmup,
        "latencies_s": latencies,
        "cpu_busy_before": busy_before,
        "temperature_before_c": temp_before,
        "temperature_after_c": read_temperature(),
        "peak_rss_bytes": peak_rss_bytes(),
    }


def own_dir() -> str | None:
    """The runner's own temporary directory on a device; None when it runs from a checkout."""
    folder = os.path.dirname(os.path.abspath(__file__))
    return folder if os.path.basename(folder).startswith("edgekit.") else None


def remove_own_dir() -> None:
    folder = own_dir()
    if folder:
        shutil.rmtree(folder, ignore_errors=True)


def abort(code: int, cleanup: bool) -> None:
    """Leave now, from any thread: the client is gone, nobody will read a result."""
    if cleanup:
        remove_own_dir()
    os._exit(code)


def stdin_closed(fd: int, wait: float) -> bool:
    """True once ``fd`` reads end-of-file (any data is discarded)."""
    try:
        ready, _, _ = select.select([fd], [], [], wait)
        return bool(ready) and not os.read(fd, 65536)
    except (OSError, ValueError):  # no usable stdin: rely on the parent check alone
        time.sleep(wait)
        return False


def start_watchdog(cleanup: bool) -> None:
    """Exit within a second of losing the client (stdin EOF, or our parent replaced by init) and on
    SIGTERM/SIGHUP/SIGINT: without this a dropped SSH session leaves the runner busy until timeout."""
    parent = os.getppid()
    fd = sys.stdin.fileno() if sys.stdin is not None else -1

    def watch() -> None:
        while not (fd >= 0 and stdin_closed(fd, 1.0)) and os.getppid() == parent:
            if fd < 0:
                time.sleep(1.0)
        abort(3, cleanup)

    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(signum, lambda number, _frame: abort(128 + number, cleanup))
    threading.Thread(target=watch, name="edgekit-watchdog", daemon=True).start()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Benchmark ONNX/TFLite models; prints JSON.")
    parser.add_argument("models", nargs="*")
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--runtime", default=None, help="onnxruntime or tflite (default: by extension)")
    parser.add_argument("--time-budget", type=float, default=None, help="seconds per model at most")
    parser.add_argument("--cpus", help="pin to these CPUs, e.g. 0,1 (Linux)")
    parser.add_argument("--probe", action="store_true", help="only report system and runtimes")
    parser.add_argument("--watch-stdin", action="store_true",
                        help="exit as soon as stdin closes or the parent dies (the client is gone)")
    parser.add_argument("--cleanup", choices=("abort", "always"),
                        help="remove this runner's own edgekit.* directory when aborted, or also at the end")
    args = parser.parse_args(argv)
    if args.watch_stdin:
        start_watchdog(cleanup=args.cleanup is not None)
    if args.cpus and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {int(c) for c in args.cpus.split(",")})
    document: dict[str, Any] = {"runner_version": RUNNER_VERSION, "system": system_info(), "results": []}
    if not args.probe:
        for model in args.models:
            try:
                document["results"].append(
                    benchmark(model, args.runs, args.warmup, args.threads, args.runtime, args.time_budget)
                )
            except Exception as exc:  # reported per model, the others still run
                document["results"].append({"artifact": os.path.basename(model), "error": f"{type(exc).__name__}: {exc}"})
    json.dump(document, sys.stdout)
    sys.stdout.write("\n")
    sys.stdout.flush()
    if args.cleanup == "always":
        remove_own_dir()
    return 0 if all("error" not in r for r in document["results"]) else 1


if __name__ == "__main__":
    sys.exit(main())
