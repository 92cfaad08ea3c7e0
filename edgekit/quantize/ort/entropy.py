"""ONNX Runtime's Entropy calibration threshold, computed in numpy instead of Python loops, on at most 2048 bins.

``HistogramCollector.get_entropy_threshold`` (ORT 1.23) tries every symmetric window of the histogram
and, per window, merges and expands the bins with Python loops and the builtin ``sum`` over numpy
slices: quadratic in the bin count with a large constant, and the count grows as chunked calibration
widens the histograms (:mod:`edgekit.quantize.ort.calibration_memory`). Measured here: EfficientNet-B0
at 128 px spent over 7 minutes in it for one Entropy candidate of the remedies search, so that the
zoo's EfficientNet-B1 and -B2 ran past 10 minutes in ORT quantization. The per-window arithmetic
below is ORT's, vectorised over the merged bins (integer sums are exact in either order, the
expanded bins truncate toward zero as ORT's assignment into an int64 array does); the window loop,
``smooth_distribution`` and ``entropy`` are ORT's own.

Above ``SEARCH_BINS`` bins the histogram is first merged, k adjacent bins at a time outward from
zero, to at most that many (TensorRT's KL calibration, where this search comes from, uses 2048).
Chunked calibration keeps the bin width of a tensor's first chunk while its range grows, so the
bin count is an accident of which images came first: on EfficientNet-B1 one tensor reached
237,496 bins, a search of 118,000 windows over up to 237,000 bins each (the zoo's ORT stage ran past
18 minutes in it). The thresholds are then the search's on the merged histogram, which may differ
from a full-resolution search where the divergence is flat (measured on 89,000 bins of a Student-t
sample: 196 instead of 123; a ReLU of it: 77.5 instead of 78.5), in 0.26 s instead of 52 s a tensor.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

import numpy as np

SEARCH_BINS = 2048


def entropy_threshold(histogram: tuple, num_quantized_bins: int) -> tuple[Any, Any]:
    """What ``HistogramCollector.get_entropy_threshold(histogram, num_quantized_bins)`` returns."""
    from onnxruntime.quantization.calibrate import entropy, smooth_distribution

    hist, edges = merged_bins(histogram[0], histogram[1], SEARCH_BINS)
    num_bins = hist.size
    zero_bin = num_bins // 2
    half = num_quantized_bins // 2
    dtype = edges.dtype
    below = np.concatenate(([0], np.cumsum(hist)))  # below[k] = sum(hist[:k])
    windows = range(half, zero_bin + 1)
    divergences = np.zeros(len(windows))
    thresholds = []
    for n, i in enumerate(windows):
        start, end = zero_bin - i, min(zero_bin + i + 1, num_bins)
        thresholds.append((edges[start], edges[end]))
        sliced = hist[start:end]
        p = sliced.copy()
        p[0] += below[start]
        p[-1] += below[-1] - below[end]
        merged = sliced.size // num_quantized_bins
        whole = num_quantized_bins * merged
        quantized = sliced[:whole].reshape(num_quantized_bins, merged).sum(axis=1).astype(np.int64)
        quantized[-1] += sliced[whole:].sum()
        norm = (p[:whole] != 0).reshape(num_quantized_bins, merged).sum(axis=1)
        q = np.zeros(p.size, dtype=np.int64)
        q[:whole] = np.repeat(np.where(norm != 0, quantized / np.where(norm != 0, norm, 1), 0).astype(np.int64), merged)
        p, q = smooth_distribution(p), smooth_distribution(q)
        divergences[n] = np.inf if p is None or q is None else np.array(entropy(p, q), dtype=dtype)
    threshold = thresholds[int(np.argmin(divergences))]
    min_value, max_value = histogram[2], histogram[3]
    if threshold[0] < min_value:
        threshold = (min_value, threshold[1])
    if threshold[1] > max_value:
        threshold = (threshold[0], max_value)
    return threshold


def merged_bins(hist: np.ndarray, edges: np.ndarray, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """``hist`` with k adjacent bins summed (the smallest k leaving at most ``limit``), grouped outward
    from the zero bin ORT's windows are centred on, the outermost groups padded with empty bins."""
    if hist.size <= limit:
        return hist, edges
    zero_bin = hist.size // 2
    k = -(-hist.size // (limit - 1))  # one spare bin: an odd count's extra bin may need a group of its own
    left, right = -(-zero_bin // k), -(-(hist.size - zero_bin) // k)
    padded = np.concatenate((np.zeros(left * k - zero_bin, hist.dtype), hist,
                             np.zeros(right * k - (hist.size - zero_bin), hist.dtype)))
    stride = (np.float64(edges[-1]) - np.float64(edges[0])) / hist.size
    centre = np.float64(edges[zero_bin])
    coarse_edges = centre + np.arange(-left, right + 1) * (k * stride)
    return padded.reshape(-1, k).sum(axis=1), coarse_edges.astype(edges.dtype)


@contextlib.contextmanager
def fast_entropy_thresholds() -> Iterator[None]:
    """Within the block, ORT's Entropy calibration finds its thresholds with :func:`entropy_threshold`."""
    from onnxruntime.quantization.calibrate import HistogramCollector

    original = HistogramCollector.get_entropy_threshold
    HistogramCollector.get_entropy_threshold = lambda self, histogram, bins: entropy_threshold(histogram, bins)
    try:
        yield
    finally:
        HistogramCollector.get_entropy_threshold = original
