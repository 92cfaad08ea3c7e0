"""What the modes without calibration (``dynamic``, ``fp16``) share across backends: the images their
fidelity to FP32 is measured on, and the result's checks (fidelity, speed) as warnings said at quantize time.

They need no calibration data, so images are optional: given (``--calib``/``--eval``, the pipeline's
``data.calib``) fidelity is measured on them; not given, on seeded random inputs of the model's
shape (cosine is still meaningful there; top-1 agreement less so, and the manifest says which).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.quantize import fidelity as fidelity_mod
from edgekit.quantize.ort.quantizer import calibration_feed

RANDOM_SAMPLES = 32


def fidelity_samples(model: Any, samples: np.ndarray | None, label: str | Path,
                     source: str = "held-out") -> tuple[np.ndarray, str]:
    """(float NCHW tensors to compare against FP32 on, their source): ``samples`` (checked against the
    model's input, at most ``fidelity.HOLDOUT``), else seeded random inputs (source ``random``)."""
    if samples is not None and len(samples):
        calibration_feed(model, samples, label)
        return np.ascontiguousarray(samples[: fidelity_mod.HOLDOUT], dtype=np.float32), source
    initializers = {i.name for i in model.graph.initializer}
    graph_input = next(i for i in model.graph.input if i.name not in initializers)
    dims = [d.dim_value if d.HasField("dim_value") else None for d in graph_input.type.tensor_type.shape.dim]
    if any(d is None for d in dims[1:]):
        raise EdgekitError(f"{label}: input {graph_input.name!r} has dynamic dimensions {dims}; give --calib and "
                           "--recipe for images to check the model on")
    batch = dims[0] if isinstance(dims[0], int) and dims[0] > 0 else 1
    shape = [RANDOM_SAMPLES - RANDOM_SAMPLES % batch or batch, *dims[1:]]
    random = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    calibration_feed(model, random, label)
    return random, "random"


def check(fp32: str | Path, quantized: str | Path, samples: np.ndarray, source: str,
          what: str) -> tuple[fidelity_mod.Fidelity | None, str | None]:
    """(fidelity of ``quantized`` to ``fp32`` on ``samples``, or None and why it was not measured)."""
    from edgekit.errors import first_line

    try:
        return fidelity_mod.measure(fp32, quantized, samples, source), None
    except Exception as exc:  # noqa: BLE001 - a diagnosis must not cost a conversion that succeeded
        return None, f"{what}: fidelity not measured ({type(exc).__name__}: {first_line(exc)})"


def warnings(what: str, faithful: fidelity_mod.Fidelity | None, note: str | None, advice: str) -> list[str]:
    """The lines a user must hear before shipping: not faithful, or not measured (slower than FP32 here
    is ``speed.warning``, printed apart: its figures are timings)."""
    return [w for w in (note, faithful and faithful.warning(advice, what)) if w]
