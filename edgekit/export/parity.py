"""The parity proof: an exported model must compute what the PyTorch model computes.

Elementwise relative error is meaningless near zero (logits cross zero all the time), so the
tolerance is on the max-abs error *relative to the output's largest magnitude*; the report also
gives the cosine similarity, which catches a wrong sign or permutation that a small max-abs can hide.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import numpy as np

DEFAULT_TOLERANCE = 1e-4


@dataclasses.dataclass
class ParityReport:
    num_inputs: int
    max_abs_error: float
    reference_max_abs: float
    relative_error: float  # max_abs_error / reference_max_abs
    min_cosine: float
    tolerance: float
    passed: bool
    real_samples: int = 0

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def summary(self) -> str:
        verdict = "PASS" if self.passed else "FAIL"
        return (
            f"parity {verdict} on {self.num_inputs} inputs ({self.real_samples} real): max-abs "
            f"{self.max_abs_error:.3g} = {self.relative_error:.3g} of max|output| {self.reference_max_abs:.3g} "
            f"(tolerance {self.tolerance:g}), min cosine {self.min_cosine:.6f}"
        )


def parity_inputs(shape: Sequence[int], count: int, seed: int = 0, samples: np.ndarray | None = None) -> list[np.ndarray]:
    """``count`` seeded standard-normal inputs, preceded by real samples (one per input) when given."""
    inputs: list[np.ndarray] = []
    if samples is not None:
        inputs.extend(np.asarray(s, dtype=np.float32)[None] for s in samples)
    rng = np.random.default_rng(seed)
    inputs.extend(rng.standard_normal(tuple(shape)).astype(np.float32) for _ in range(count))
    return inputs


def compare(
    reference: Callable[[np.ndarray], np.ndarray],
    candidate: Callable[[np.ndarray], np.ndarray],
    inputs: Sequence[np.ndarray],
    tolerance: float = DEFAULT_TOLERANCE,
    real_samples: int = 0,
) -> ParityReport:
    """Run both functions on every input and summarise their disagreement."""
    max_abs = 0.0
    ref_max = 0.0
    min_cos = 1.0
    for x in inputs:
        ref = np.asarray(reference(x), dtype=np.float64).ravel()
        got = np.asarray(candidate(x), dtype=np.float64).ravel()
        if ref.shape != got.shape:
            raise ValueError(f"output shapes differ: {ref.shape} vs {got.shape}")
        max_abs = max(max_abs, float(np.max(np.abs(ref - got))) if ref.size else 0.0)
        ref_max = max(ref_max, float(np.max(np.abs(ref))) if ref.size else 0.0)
        denom = float(np.linalg.norm(ref) * np.linalg.norm(got))
        min_cos = min(min_cos, float(ref @ got) / denom if denom > 0 else 1.0)
    relative = max_abs / ref_max if ref_max > 0 else max_abs
    return ParityReport(
        num_inputs=len(inputs), max_abs_error=max_abs, reference_max_abs=ref_max, relative_error=relative,
        min_cosine=min_cos, tolerance=tolerance, passed=relative <= tolerance, real_samples=real_samples,
    )
