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
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

CHUNK_BATCHES = 4  # calibration batches held at once


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
    from onnxruntime.quantization.calibrate import HistogramCalibrater, MinMaxCalibrater

    originals = {cls: cls.collect_data for cls in (MinMaxCalibrater, HistogramCalibrater)}
    try:
        for cls, collect in originals.items():
            cls.collect_data = _in_chunks(collect, limit, mean)
        yield
    finally:
        for cls, collect in originals.items():
            cls.collect_data = collect
