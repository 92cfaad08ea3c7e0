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
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

CHUNK_BATCHES = 4  # calibration batches held at once


class _Chunk:
    """At most ``limit`` batches of ``reader``, starting with ``first`` (already read)."""

    def __init__(self, reader: Any, first: dict[str, Any], limit: int) -> None:
        self.reader, self.pending, self.left = reader, first, limit

    def get_next(self) -> dict[str, Any] | None:
        if self.left <= 0:
            return None
        self.left -= 1
        if self.pending is not None:
            batch, self.pending = self.pending, None
            return batch
        return self.reader.get_next()


def _in_chunks(collect: Callable[[Any, Any], None], limit: int) -> Callable[[Any, Any], None]:
    def collect_data(calibrator: Any, reader: Any) -> None:
        first = reader.get_next()
        if not first:
            return collect(calibrator, reader)  # ORT's own "No data is collected."
        while first:
            collect(calibrator, _Chunk(reader, first, limit))
            first = reader.get_next()
    return collect_data


@contextlib.contextmanager
def chunked_calibration(limit: int = CHUNK_BATCHES) -> Iterator[None]:
    """Within the block, ORT's MinMax and histogram calibrators reduce every ``limit`` batches."""
    from onnxruntime.quantization.calibrate import HistogramCalibrater, MinMaxCalibrater

    originals = {cls: cls.collect_data for cls in (MinMaxCalibrater, HistogramCalibrater)}
    try:
        for cls, collect in originals.items():
            cls.collect_data = _in_chunks(collect, limit)
        yield
    finally:
        for cls, collect in originals.items():
            cls.collect_data = collect
