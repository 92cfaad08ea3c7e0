"""ORT calibration and the sensitivity ranking in bounded memory: the same result, a fraction of the peak.

Real ONNX Runtime calibration throughout; memory is numpy's, traced by tracemalloc (ORT returns
its outputs as numpy arrays, which is what its calibrators held by the thousand)."""
from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from edgekit.quantize.ort import quantizer
from edgekit.quantize.ort.sensitivity import layer_sensitivity
from edgekit.quantize.ort.settings import OrtQuantSettings
from edgekit.quantize.ort.workflow import quantize_ort


@pytest.fixture(scope="module")
def wide_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Large activations (4 x 64 channels at 64x64, 1 MB a tensor a sample) next to small weights."""
    import torch

    from edgekit.export import export_onnx

    torch.manual_seed(0)
    layers: list[torch.nn.Module] = [torch.nn.Conv2d(3, 64, 3, padding=1), torch.nn.ReLU()]
    for _ in range(3):
        layers += [torch.nn.Conv2d(64, 64, 3, padding=1), torch.nn.ReLU()]
    net = torch.nn.Sequential(*layers, torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(64, 10))
    path = tmp_path_factory.mktemp("wide") / "wide.onnx"
    export_onnx(net.eval(), torch.zeros(1, 3, 64, 64), path)
    return path


def _calib(n: int) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((n, 3, 64, 64)).astype(np.float32)


def _scales(path: Path) -> dict[str, np.ndarray]:
    model = onnx.load(str(path))
    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer if "scale" in i.name or "zero_point" in i.name}


def _quantize(src: Path, out: Path, calib: np.ndarray, held: int, method: str,
              monkeypatch: pytest.MonkeyPatch, **settings: object) -> int:
    """Quantize holding ``held`` samples' activations at once; numpy's peak traced bytes."""
    monkeypatch.setattr(quantizer, "CALIBRATION_SAMPLES_HELD", held)
    tracemalloc.start()
    try:
        quantize_ort(src, out, calib, OrtQuantSettings(calibrate_method=method, **settings), progress=False)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_minmax_in_chunks_gives_the_very_same_ranges(wide_onnx: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    calib = _calib(24)
    _quantize(wide_onnx, tmp_path / "all.onnx", calib, 10**6, "MinMax", monkeypatch)
    _quantize(wide_onnx, tmp_path / "chunked.onnx", calib, 1, "MinMax", monkeypatch)
    whole, chunked = _scales(tmp_path / "all.onnx"), _scales(tmp_path / "chunked.onnx")
    assert whole.keys() == chunked.keys() and len(whole) > 8
    for name in whole:
        np.testing.assert_array_equal(whole[name], chunked[name], err_msg=name)


def test_mean_ranges_in_chunks_are_the_mean_over_every_sample(wide_onnx: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """NNCF's mean min/max estimator through ORT's CalibMovingAverage: in chunks of 3 samples (the
    last one short) the ranges are those of one call over all 20, and narrower than the extremes."""
    calib = _calib(20) * np.linspace(0.2, 3.0, 20, dtype=np.float32)[:, None, None, None]  # one wide sample
    _quantize(wide_onnx, tmp_path / "all.onnx", calib, 10**6, "MinMax", monkeypatch, average_ranges=True)
    _quantize(wide_onnx, tmp_path / "chunked.onnx", calib, 3, "MinMax", monkeypatch, average_ranges=True)
    _quantize(wide_onnx, tmp_path / "extremes.onnx", calib, 3, "MinMax", monkeypatch)
    whole, chunked = _scales(tmp_path / "all.onnx"), _scales(tmp_path / "chunked.onnx")
    extremes = _scales(tmp_path / "extremes.onnx")
    scales = [n for n in whole if n.endswith("_scale") and whole[n].ndim == 0 and "input" in n]
    assert scales, sorted(whole)
    for name in scales:
        np.testing.assert_allclose(whole[name], chunked[name], rtol=1e-5, err_msg=name)
        assert chunked[name] < 0.8 * extremes[name], (name, chunked[name], extremes[name])


def _activation_q_off_compute(path: Path) -> list[str]:
    """Activations quantized where neither their producer nor any consumer is Conv/MatMul/Gemm."""
    graph = onnx.load(str(path)).graph
    compute = {"Conv", "Gemm", "MatMul"}
    producers = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    off = []
    for q in (n for n in graph.node if n.op_type == "QuantizeLinear"):
        users = [u for dq in consumers.get(q.output[0], []) for u in consumers.get(dq.output[0], [])]
        producer = producers.get(q.input[0])
        if not (producer is not None and producer.op_type in compute) and not any(u.op_type in compute for u in users):
            off.append(q.input[0])
    return off


def test_compute_only_leaves_every_other_operator_in_float(wide_onnx: Path, tmp_path: Path) -> None:
    """quantize_ops="compute": Q/DQ only at Conv/Gemm inputs and outputs; with "all", the pooling's
    output (between two float-capable operators) is quantized too."""
    quantize_ort(wide_onnx, tmp_path / "all.onnx", _calib(8), OrtQuantSettings(), progress=False)
    quantize_ort(wide_onnx, tmp_path / "compute.onnx", _calib(8), OrtQuantSettings(quantize_ops="compute"),
                 progress=False)
    assert _activation_q_off_compute(tmp_path / "all.onnx")
    assert _activation_q_off_compute(tmp_path / "compute.onnx") == []


def test_histogram_calibration_memory_is_bounded_by_the_chunk(wide_onnx: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    calib = _calib(48)
    whole_peak = _quantize(wide_onnx, tmp_path / "all.onnx", calib, 10**6, "Percentile", monkeypatch)
    chunked_peak = _quantize(wide_onnx, tmp_path / "chunked.onnx", calib, 4, "Percentile", monkeypatch)
    assert whole_peak > 48 * 2**20, whole_peak  # ORT held 1 MB activations of every sample at once
    assert chunked_peak < 0.25 * whole_peak, (chunked_peak, whole_peak)
    whole, chunked = _scales(tmp_path / "all.onnx"), _scales(tmp_path / "chunked.onnx")
    for name in whole:  # histograms re-binned as they widen: close, not equal
        np.testing.assert_allclose(whole[name], chunked[name], rtol=0.1, err_msg=name)


def test_sensitivity_holds_one_sample_and_ranks_as_before(wide_onnx: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from edgekit.quantize import simulate

    calib = _calib(16)
    qdq = tmp_path / "q.onnx"
    _quantize(wide_onnx, qdq, calib, 8, "MinMax", monkeypatch)
    model = onnx.load(str(wide_onnx))
    tracemalloc.start()
    try:
        ranked = layer_sensitivity(model, wide_onnx, qdq, calib[:8])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2 * 4 * 2**20, peak  # less than all eight samples' activations of both models
    assert [r["op"] for r in ranked].count("Relu") == 4  # Conv+Relu quantize as one: Relu's output is compared
    # the streamed SQNR equals the one computed over all samples at once
    from onnxruntime.quantization.qdq_loss_debug import (collect_activations, create_activation_matching,
                                                         modify_model_output_intermediate_tensors)

    name = model.graph.input[0].name

    def reader() -> list[dict[str, np.ndarray]]:
        return [{name: x[None]} for x in calib[:8]]

    modify_model_output_intermediate_tensors(str(wide_onnx), str(tmp_path / "f.aug.onnx"))
    modify_model_output_intermediate_tensors(str(qdq), str(tmp_path / "q.aug.onnx"))
    matching = create_activation_matching(collect_activations(str(tmp_path / "q.aug.onnx"), reader()),
                                          collect_activations(str(tmp_path / "f.aug.onnx"), reader()))
    for row in ranked:
        match = matching[row["tensor"]]
        assert row["sqnr_db"] == pytest.approx(simulate.sqnr_db(match["float"], match["post_qdq"]), abs=0.011)


def test_entropy_thresholds_are_onnxruntimes_own_in_a_fraction_of_the_time() -> None:
    """edgekit's form of ORT's Entropy threshold search (every window screened at once from prefix
    sums, the near-best ones re-run in ORT's float32 arithmetic) gives the very same thresholds: on
    histograms ORT's own collector widened batch by batch as chunked calibration does, on 2048-bin
    ones of the shapes activations take, and on degenerate ones (one bin, mass only at the edges,
    sparse spikes, an odd bin count), in under a tenth of the time (measured 135x on 1742 bins)."""
    import time

    from onnxruntime.quantization.calibrate import HistogramCollector

    from edgekit.quantize.ort.entropy import entropy_threshold

    rng = np.random.default_rng(0)
    collector = HistogramCollector("entropy", False, 128, 128, None, None)
    for scale in (1.0, 2.0, 8.0):  # each batch wider than the last: the histograms grow their bin count
        batch = rng.normal(size=50_000) * scale
        collector.collect({"normal": [batch], "relu": [np.maximum(batch, 0)],
                           "sparse": [batch * (rng.random(50_000) < 0.05)]})
    histograms = dict(collector.histogram_dict)

    def fixed(counts: np.ndarray) -> tuple:
        edges = np.linspace(-3, 3, counts.size + 1).astype(np.float32)
        return counts, edges, edges[0], edges[-1]

    shapes = {"wide": rng.normal(size=200_000), "heavy": rng.standard_t(3, size=100_000),
              "gelu-like": np.maximum(rng.normal(size=100_000), -0.17), "shifted": rng.laplace(size=100_000) + 0.5}
    for name, values in shapes.items():
        histograms[name] = fixed(np.histogram(values.clip(-3, 3), bins=2048, range=(-3, 3))[0])
    degenerate = {name: np.zeros(2048, np.int64) for name in ("one bin", "edges only", "two spikes")}
    degenerate["one bin"][1024] = 500
    degenerate["edges only"][[0, 2047]] = [7, 9]
    degenerate["two spikes"][[100, 1500]] = [1000, 3]
    degenerate["sparse"] = (rng.random(2048) < 0.01) * rng.integers(1, 5, 2048)
    degenerate["odd count"] = np.histogram(rng.normal(size=10_000), bins=1999)[0]
    histograms.update({name: fixed(counts) for name, counts in degenerate.items()})
    assert max(h[0].size for h in histograms.values()) == 2048
    ours_s = theirs_s = 0.0
    for name, histogram in histograms.items():
        started = time.perf_counter()
        theirs = collector.get_entropy_threshold(histogram, 128)
        theirs_s += time.perf_counter() - started
        started = time.perf_counter()
        ours = entropy_threshold(histogram, 128)
        ours_s += time.perf_counter() - started
        assert (ours[0], ours[1]) == (theirs[0], theirs[1]) and ours[0].dtype == theirs[0].dtype, name
    assert ours_s < 0.1 * theirs_s, (ours_s, theirs_s)


def test_the_screen_is_within_its_slack_of_onnxruntimes_float32_divergence_in_every_window() -> None:
    """What makes the screen safe: its float64 divergence of every window is within a tenth of
    the slack of ORT's own float32 one (measured: 1.4e-6 at most), so the window ORT picks is always among those re-run."""
    from edgekit.quantize.ort.entropy import SCREEN_SLACK, _divergence, _screen

    rng = np.random.default_rng(1)
    for values in (rng.standard_t(3, size=100_000), np.maximum(rng.normal(size=100_000), 0) * (rng.random(100_000) < 0.3)):
        hist = np.histogram(values, bins=2048, range=(-values.max(), values.max()))[0]
        below = np.concatenate(([0], np.cumsum(hist)))
        windows = np.arange(64, 1025)
        screened, error = _screen(hist, below, windows, 128)
        exact = np.array([_divergence(hist, below, int(i), 128, np.float32) for i in windows])
        assert np.array_equal(np.isfinite(screened), np.isfinite(exact))
        finite = np.isfinite(exact)
        assert np.max(np.abs(screened - exact)[finite] - error[finite]) < SCREEN_SLACK / 10


def test_a_histogram_grown_past_2048_bins_is_searched_merged_in_seconds() -> None:
    """A tensor whose first chunk was narrow keeps that chunk's bin width as its range grows (ORT's
    merge_histogram): 0.01 then 100 grows 128 bins to over a million, a search that would run for
    hours. edgekit merges adjacent bins outward from zero to at most 2048 and runs ORT's own search on
    that: same mass, the zero edge kept where ORT's windows are centred, ORT's threshold for it."""
    import time

    from onnxruntime.quantization.calibrate import HistogramCollector

    from edgekit.quantize.ort.entropy import SEARCH_BINS, entropy_threshold, merged_bins

    rng = np.random.default_rng(0)
    collector = HistogramCollector("entropy", False, 128, 128, None, None)
    for scale in (0.01, 1.0, 100.0):
        collector.collect({"t": [rng.standard_t(3, size=50_000) * scale]})
    hist, edges, low, high, _ = collector.histogram_dict["t"]
    assert hist.size > 500_000
    merged, merged_edges = merged_bins(hist, edges, SEARCH_BINS)
    assert merged.size <= SEARCH_BINS and merged.sum() == hist.sum() and merged_edges.size == merged.size + 1
    assert merged_edges[merged.size // 2] == edges[hist.size // 2]  # the zero edge stays the windows' centre
    assert np.allclose(np.diff(merged_edges.astype(np.float64)), merged_edges[1] - merged_edges[0], rtol=1e-3)
    started = time.perf_counter()
    ours = entropy_threshold((hist, edges, low, high), 128)
    assert time.perf_counter() - started < 10
    theirs = collector.get_entropy_threshold((merged, merged_edges, low, high), 128)
    assert (ours[0], ours[1]) == (theirs[0], theirs[1])
    assert low <= ours[0] < 0 < ours[1] <= high


@pytest.mark.parametrize("method", ["Percentile", "Entropy"])
def test_a_histogram_widened_by_a_later_chunk_stays_bounded(wide_onnx: Path, tmp_path: Path, method: str,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Later chunks' values 1000x larger than the first's: ORT would widen each histogram at the
    first chunk's bin width, about 1000x the bins for every tensor (random-weight EfficientNet-B5: past
    12 GB). Merged instead, the histograms stay within 4x 2048 bins, and Percentile's ranges stay
    close to those of one call over every sample. Entropy's KL search on a mix of two scales 1000x
    apart depends on the binning itself (ORT's own unbounded merge in chunks moved the output scale
    from 0.208 to 0.096): bounded is all it is held to."""
    from onnxruntime.quantization.calibrate import HistogramCollector

    from edgekit.quantize.ort.calibration_memory import MAX_BINS_FACTOR, SEARCH_BINS

    calib = _calib(24)
    calib[12:] *= 1e3  # the first chunk (4 of the first 12: a quarter at most are held out) is not
    largest: list[int] = []
    collect = HistogramCollector.collect

    def watched(self: HistogramCollector, name_to_arr: dict) -> None:
        collect(self, name_to_arr)
        largest.append(max(len(h[0]) for h in self.histogram_dict.values()) / max(self.num_bins, SEARCH_BINS))

    monkeypatch.setattr(HistogramCollector, "collect", watched)
    _quantize(wide_onnx, tmp_path / "all.onnx", calib, 10**6, method, monkeypatch)
    peak = _quantize(wide_onnx, tmp_path / "chunked.onnx", calib, 4, method, monkeypatch)
    assert largest[0] <= 1 and 2 < max(largest[1:]) <= MAX_BINS_FACTOR, largest  # widened, within bounds
    assert peak < 64 * 2**20, peak
    whole, chunked = _scales(tmp_path / "all.onnx"), _scales(tmp_path / "chunked.onnx")
    for name in whole if method == "Percentile" else ():
        np.testing.assert_allclose(whole[name], chunked[name], rtol=0.1, err_msg=name)
