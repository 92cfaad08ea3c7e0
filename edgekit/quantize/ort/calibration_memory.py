"""Calibration in bounded memory: ONNX Runtime's calibrators hold every calibration batch's outputs
until the reader is exhausted before reducing them, and the histogram methods (Entropy, Percentile)
capture every activation tensor: about 200 MB a 224x224 sample for a ConvNeXt-Tiny, over 10 GB for
the 64 samples a remedy calibrates on.

Both reductions merge across calls to ``collect_data`` (``MinMaxCalibrater.merge_range``;
``HistogramCollector`` widens and adds its histograms), so handing ORT's own ``collect_data`` the
reader a few batches at a time gives the same ranges (MinMax: exactly; histograms: re-binned as
they widen) with memory bounded by the chunk. ORT's option for this, ``CalibMaxIntermediateOutputs``,
drops the outputs it collected without reducing them in 1.23 (``MinMaxCalibrater.collect_data``
clears them), so it cannot be used.

With averaged ranges (``CalibMovingAverage``) ORT takes the mean of per-batch min/max within a call
and an exponential moving average (constant 0.01) across calls, which would leave the ranges at the
first chunk's; ``mean=True`` sets the constant per chunk to its share of the batches seen, so the
merged range is the plain mean over every batch, as in one call.

A histogram widens at its first chunk's bin width: a later chunk whose values reach 1000x further
adds 1000x the bins, for every tensor. Random-weight EfficientNet-B5 at 128 px did (its activations'
extremes vary by orders of magnitude between images) and ORT's Percentile calibration grew past 12 GB
in two minutes. Before a chunk would widen a histogram past ``MAX_BINS_FACTOR`` times the larger of
the calibrator's bin count and the bins the Entropy search runs on (``entropy.SEARCH_BINS``; 8192 in
all), its bins are merged f at a time (outward from zero for the symmetric ones), which moves no count
across any edge that stays; its width is then still at most half of what one call over all samples
would use (its range over ``num_bins``), so the thresholds are as fine as ORT's own, and the Entropy
search still gets more bins than it searches.
"""
from __future__ import annotations

import contextlib
import math
from typing import Any, Callable, Iterator

import numpy as np

from edgekit.quantize.ort.entropy import SEARCH_BINS

CHUNK_BATCHES = 4  # calibration batches held at once
MAX_BINS_FACTOR = 4  # a merged histogram holds at most this many times num_bins or SEARCH_BINS


class _Chunk:
    """At most ``limit`` batches of ``reader``, starting with ``first`` (already read); ``on_end``
    gets the count when ORT reads the end, i.e. before it reduces the chunk."""

    def __init__(self, reader: Any, first: dict[str, Any], limit: int,
                 on_end: Callable[[int], None] | None = None) -> None:
        self.reader, self.pending, self.left, self.on_end = reader, first, limit, on_end
        self.taken = 0

    def get_next(self) -> dict[str, Any] | None:
        batch = None
        if self.left > 0:
            self.left -= 1
            batch, self.pending = (self.pending, None) if self.pending is not None else (self.reader.get_next(), None)
        if batch is None:
            if self.on_end:
                self.on_end(self.taken)
            return None
        self.taken += 1
        return batch


def _in_chunks(collect: Callable[[Any, Any], None], limit: int, mean: bool) -> Callable[[Any, Any], None]:
    def collect_data(calibrator: Any, reader: Any) -> None:
        first = reader.get_next()
        if not first:
            return collect(calibrator, reader)  # ORT's own "No data is collected."
        seen = 0

        def weigh(taken: int) -> None:  # this chunk's share of the batches seen: a running mean
            calibrator.averaging_constant = taken / max(1, seen + taken)

        while first:
            chunk = _Chunk(reader, first, limit, weigh if mean else None)
            collect(calibrator, chunk)
            seen += chunk.taken
            first = reader.get_next()
    return collect_data


@contextlib.contextmanager
def chunked_calibration(limit: int = CHUNK_BATCHES, mean: bool = False) -> Iterator[None]:
    """Within the block, ORT's MinMax and histogram calibrators reduce every ``limit`` batches;
    ``mean``: averaged ranges are the mean over all batches (see the module's docstring)."""
    from onnxruntime.quantization.calibrate import HistogramCalibrater, HistogramCollector, MinMaxCalibrater

    originals = {cls: cls.collect_data for cls in (MinMaxCalibrater, HistogramCalibrater)}
    histogram_collect = HistogramCollector.collect
    try:
        for cls, collect in originals.items():
            cls.collect_data = _in_chunks(collect, limit, mean)
        HistogramCollector.collect = _bounded(histogram_collect)
        yield
    finally:
        for cls, collect in originals.items():
            cls.collect_data = collect
        HistogramCollector.collect = histogram_collect


def _bounded(collect: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    """ORT's ``HistogramCollector.collect``, after merging the bins of every stored histogram this
    chunk would widen past the cap (see the module's docstring)."""
    def collect_bounded(collector: Any, name_to_arr: dict[str, Any]) -> Any:
        cap = MAX_BINS_FACTOR * max(collector.num_bins, SEARCH_BINS)
        for tensor, data in name_to_arr.items():
            stored = collector.histogram_dict.get(tensor)
            arrays = [np.asarray(a) for a in (data if isinstance(data, list) else [data])]
            if stored is None or not any(a.size for a in arrays):
                continue
            reach = max(max(abs(float(np.nanmin(a))), abs(float(np.nanmax(a)))) for a in arrays if a.size)
            merge = _merged_absolute if len(stored) == 4 else _merged_symmetric
            collector.histogram_dict[tensor] = merge(stored, reach, cap)
        return collect(collector, name_to_arr)
    return collect_bounded


def _grouped(hist: np.ndarray, factor: int) -> np.ndarray:
    """Sums of ``factor`` adjacent bins from the first on, the last group padded with empty bins."""
    padded = np.concatenate([hist, np.zeros(-len(hist) % factor, dtype=hist.dtype)])
    return padded.reshape(-1, factor).sum(axis=1)


def _merged_absolute(stored: tuple, reach: float, cap: int) -> tuple:
    """A |x| histogram (Percentile, symmetric): bins from its first edge at one width, widened by ORT
    up to ``reach`` at that width."""
    hist, edges, low, high = stored
    width = float(edges[1] - edges[0])
    if width <= 0 or reach <= edges[-1] or (reach - edges[0]) / width < cap:
        return stored
    factor = math.ceil((reach - float(edges[0])) / (width * (cap - 2)))
    merged = _grouped(hist, factor)
    new_edges = (float(edges[0]) + np.arange(len(merged) + 1) * (width * factor)).astype(edges.dtype)
    return merged, new_edges, low, high


def _merged_symmetric(stored: tuple, reach: float, cap: int) -> tuple:
    """A histogram over [-threshold, threshold] (Entropy, Distribution, asymmetric Percentile), which
    ORT widens by whole bins on both sides: merged outward from zero, so zero stays an edge."""
    hist, edges, low, high, threshold = stored
    bins = len(hist)
    if threshold <= 0 or bins % 2 or reach <= threshold:
        return stored
    stride = 2.0 * float(threshold) / bins
    half = bins // 2
    if 2 * (half + reach / stride + 1) <= cap:
        return stored
    factor = math.ceil((half + reach / stride) / (cap / 2 - 2))
    right = _grouped(hist[half:], factor)
    left = _grouped(hist[:half][::-1], factor)[::-1]
    new_threshold = np.array(len(right) * factor * stride, dtype=np.asarray(threshold).dtype)
    new_edges = np.linspace(-float(new_threshold), float(new_threshold), 2 * len(right) + 1).astype(edges.dtype)
    return np.concatenate([left, right]), new_edges, low, high, new_threshold
