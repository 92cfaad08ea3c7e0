"""Quantizer maths: simulate what INT8 (or any bit width) does to a tensor, without a runtime.

Uniform affine and symmetric quantizers (per-tensor or per-channel), and two non-uniform ones:
power-of-two (logarithmic) levels and a k-means codebook. Each returns the integer codes, the
de-quantized tensor and its error, so the per-layer weight-quantization error can sit next to the
activation sensitivity in the report.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Iterable

import numpy as np


@dataclasses.dataclass
class Quantized:
    codes: np.ndarray          # integer codes (or codebook indices)
    dequantized: np.ndarray    # back to float
    scale: np.ndarray | None = None
    zero_point: np.ndarray | None = None
    levels: np.ndarray | None = None  # codebook / level values for non-uniform quantizers

    def mse(self, original: np.ndarray) -> float:
        return float(np.mean((np.asarray(original, np.float64) - self.dequantized) ** 2))

    def sqnr_db(self, original: np.ndarray) -> float:
        return sqnr_db(original, self.dequantized)


def sqnr_db(reference: Any, approximation: Any) -> float:
    """Signal-to-quantization-noise ratio in dB (higher is better; inf when identical). Both sides may
    be arrays or equal-length sequences of arrays (one per sample), compared as one signal."""
    ref = np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in _as_list(reference)])
    approx = np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in _as_list(approximation)])
    if ref.shape != approx.shape:
        raise ValueError(f"cannot compare {ref.size} values with {approx.size}")
    return sqnr_from_powers(float(np.sum(ref ** 2)), float(np.sum((ref - approx) ** 2)))


def sqnr_from_powers(signal: float, noise: float) -> float:
    """SQNR in dB from summed signal and noise powers over the same values (summed as they stream in)."""
    return float("inf") if noise == 0 else 10.0 * np.log10(signal / noise) if signal > 0 else float("-inf")


def _as_list(x: Any) -> list[Any]:
    return [x] if isinstance(x, np.ndarray) else list(x)


def _reduce_axes(x: np.ndarray, axis: int | None) -> tuple[int, ...] | None:
    return None if axis is None else tuple(i for i in range(x.ndim) if i != axis % x.ndim)


def uniform(x: np.ndarray, bits: int = 8, *, symmetric: bool = False, axis: int | None = None) -> Quantized:
    """Affine (asymmetric, codes 0..2^b-1) or symmetric (codes -(2^(b-1)-1)..2^(b-1)-1) quantizer;
    ``axis`` gives one scale per channel along it. The range always contains 0, as runtimes require."""
    if bits < 2:
        raise ValueError("bits must be at least 2")
    x = np.asarray(x, np.float64)
    axes = _reduce_axes(x, axis)
    if symmetric:
        qmax = 2 ** (bits - 1) - 1
        bound = np.max(np.abs(x), axis=axes, keepdims=True)
        scale = np.where(bound > 0, bound / qmax, 1.0)
        zero = np.zeros_like(scale)
        codes = np.clip(np.round(x / scale), -qmax, qmax)
    else:
        qmax = 2 ** bits - 1
        low = np.minimum(np.min(x, axis=axes, keepdims=True), 0.0)
        high = np.maximum(np.max(x, axis=axes, keepdims=True), 0.0)
        scale = np.where(high > low, (high - low) / qmax, 1.0)
        zero = np.clip(np.round(-low / scale), 0, qmax)
        codes = np.clip(np.round(x / scale) + zero, 0, qmax)
    return Quantized(codes.astype(np.int64), (codes - zero) * scale, scale, zero)


def power_of_two(x: np.ndarray, bits: int = 4) -> Quantized:
    """Logarithmic levels ±max·2^-k (k = 0..2^(b-1)-2) and 0: fine resolution near zero, where weights are."""
    x = np.asarray(x, np.float64)
    bound = float(np.max(np.abs(x))) or 1.0
    count = 2 ** (bits - 1) - 1
    magnitudes = bound * 2.0 ** -np.arange(count)
    levels = np.concatenate([-magnitudes, [0.0], magnitudes[::-1]])
    return _nearest(x, np.sort(levels))


def kmeans(x: np.ndarray, bits: int = 4, iterations: int = 25) -> Quantized:
    """A 2^b-entry codebook fitted by Lloyd's algorithm, started from the uniform affine grid, so
    it never does worse than uniform b-bit quantization in mean squared error."""
    x = np.asarray(x, np.float64)
    start = uniform(x, bits)
    grid = (np.arange(2 ** bits) - start.zero_point.ravel()[0]) * start.scale.ravel()[0]
    levels = np.unique(grid)
    flat = x.ravel()
    for _ in range(iterations):
        assignment = _assign(flat, levels)
        updated = levels.copy()
        for k in range(len(levels)):
            members = flat[assignment == k]
            if members.size:
                updated[k] = members.mean()
        updated = np.sort(updated)
        if np.allclose(updated, levels):
            break
        levels = updated
    return _nearest(x, levels)


def _assign(flat: np.ndarray, levels: np.ndarray) -> np.ndarray:
    edges = (levels[1:] + levels[:-1]) / 2.0
    return np.searchsorted(edges, flat)


def _nearest(x: np.ndarray, levels: np.ndarray) -> Quantized:
    index = _assign(x.ravel(), levels).reshape(x.shape)
    return Quantized(index.astype(np.int64), levels[index], levels=levels)


def weight_errors(weights: Iterable[tuple[str, np.ndarray, int]], bits: int = 8,
                  per_channel: bool = True) -> list[dict[str, Any]]:
    """SQNR (dB) and MSE of symmetric ``bits``-bit quantization of named weights, each given with its
    output-channel axis, worst first: the weight side of the sensitivity report, for any framework."""
    rows = []
    for name, weight, axis in weights:
        weight = np.asarray(weight, np.float64)
        q = uniform(weight, bits, symmetric=True, axis=axis if per_channel else None)
        rows.append({"layer": name, "sqnr_db": round(q.sqnr_db(weight), 2), "mse": q.mse(weight)})
    return sorted(rows, key=lambda r: r["sqnr_db"])


def weight_quantization_error(model: Any, bits: int = 8, per_channel: bool = True) -> list[dict[str, Any]]:
    """``weight_errors`` for every conv/linear layer of a torch module."""
    import torch

    return weight_errors(((name, module.weight.detach().cpu().numpy(), 0) for name, module in model.named_modules()
                          if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear))), bits, per_channel)
