"""Is an INT8 model slower than its FP32 model here: measured at quantize time, for every backend.

An INT8 model that runs slower than FP32 on the machine it was made for is a result the user must
hear before shipping it: ConvNeXt-Tiny's ORT INT8 ran at 0.69x FP32, its TFLite full-integer model
at 0.32x (LayerNorm, GELU and Softmax as integer kernels or float islands cost more than the int8
convolutions save). Each backend supplies the reason where it knows one (``ort/speed.py``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

Stats = dict[str, Any]  # edgekit.bench.stats.summarize's p50 and p50_ci95
Timer = Callable[[Path], Stats]
Reason = Callable[[float], "str | None"]  # FP32 p50 (ms) -> why INT8 is slower, where known

SMALL_MS = 1.0
_TIMING_RUNS = 30
_TIMING_SECONDS = 1.5  # per model: the check must stay a couple of seconds


def latency_stats(path: str | Path, threads: int | None, runs: int = 40,
                  time_budget: float | None = None, shape: Sequence[int] | None = None) -> dict[str, Any]:
    """p50 with its bootstrap CI, so near-ties are called ties rather than ranked by noise;
    ``time_budget`` (s) stops a slow model early (at least 5 runs); ``shape``: the input size where
    the model's is dynamic (the calibration images', not a 1x1 stand-in)."""
    from edgekit.bench.stats import summarize
    from edgekit.runtime import open_runner, time_loop

    runner = open_runner(str(path), threads)
    feeds = runner.example_feeds(shape=shape)
    return summarize(time_loop(lambda: runner.run(feeds), warmup=5, runs=runs, time_budget=time_budget))


class Here:
    """Latencies of model files measured in this process, with ``threads``: ``auto``'s default when no
    ``edgekit.bench.measure.Measurer`` (here or on a device, through bench's runner) is given."""

    on_device = False
    where = "this machine (in-process)"

    def __init__(self, threads: int | None = None, shape: Sequence[int] | None = None) -> None:
        self.threads, self.shape = threads, shape

    def __call__(self, paths: list[Path]) -> list[Stats]:
        return [latency_stats(path, self.threads, shape=self.shape) for path in paths]

    def scope_note(self) -> str:
        return f"measured on {self.where}: the choice holds for this machine only"


def default_timer(threads: int | None, shape: Sequence[int] | None = None) -> Timer:
    """``latency_stats`` with a small run count and a time cap."""
    return lambda path: latency_stats(path, threads, runs=_TIMING_RUNS, time_budget=_TIMING_SECONDS, shape=shape)


def small_model_reason(fp32_p50_ms: float) -> str | None:
    """A model so small that converting to and from int8 costs more than the arithmetic saves."""
    if fp32_p50_ms < SMALL_MS:
        return (f"the model runs in {fp32_p50_ms:.3f} ms: quantizing and dequantizing its tensors costs more than "
                "the int8 arithmetic saves; FP32 is the faster choice on this CPU")
    return None


def int8_vs_fp32(fp32: str | Path, int8: str | Path, timer: Timer, why: Reason = small_model_reason) -> dict[str, Any]:
    """The manifest's ``int8_vs_fp32_speed``: p50s, ratio (FP32 p50 / INT8 p50, >1 is faster), verdict
    (``bench.stats.compare``: CIs that overlap are no measurable difference) and, when slower, the reason."""
    fp32_stats, int8_stats = timer(Path(fp32)), timer(Path(int8))
    from edgekit.bench.stats import compare  # here: edgekit.bench's package imports targets, which import us

    verdict = compare(int8_stats, fp32_stats)
    record = {"fp32_p50_ms": round(fp32_stats["p50"], 4), "int8_p50_ms": round(int8_stats["p50"], 4),
              "ratio": round(fp32_stats["p50"] / int8_stats["p50"], 3), "verdict": verdict}
    if verdict == "slower":
        record["reason"] = why(fp32_stats["p50"])
    return record


def checked(fp32: str | Path, int8: str | Path, timer: Timer, why: Reason, timings: dict[str, float]) -> dict[str, Any]:
    """``int8_vs_fp32``, timed into ``timings["speed_check_s"]``; a diagnosis, so a failure to measure
    is recorded, never raised."""
    import time

    from edgekit.errors import first_line

    t0 = time.perf_counter()
    try:
        return int8_vs_fp32(fp32, int8, timer, why)
    except Exception as exc:  # noqa: BLE001 - a runtime that cannot time a model must not cost the quantization
        return {"verdict": None, "error": f"{type(exc).__name__}: {first_line(exc)}"}
    finally:
        timings["speed_check_s"] = time.perf_counter() - t0


def warning(record: dict[str, Any], what: str = "INT8") -> str | None:
    """``what``: the quantized model's kind (``int8_p50_ms`` is its p50 in every mode)."""
    if record.get("verdict") != "slower":
        return None
    why = f": {record['reason']}" if record.get("reason") else ""
    return (f"{what} runs at {record['ratio']:.2f}x FP32 speed on this machine (p50 {record['int8_p50_ms']:.3f} ms "
            f"vs {record['fp32_p50_ms']:.3f} ms){why}")
