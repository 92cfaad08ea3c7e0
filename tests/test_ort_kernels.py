"""ONNX Runtime's fused INT8 kernels against the QDQ graph they implement (edgekit.quantize.ort.kernels).

The model is real: the first convolution of a ShuffleNet-V2-x0.5 trained on digits at 128 px
(benchmarks/data, its BatchNorm folded), on the zoo's images. Its fused QLinearConv lost fidelity
on an Intel Xeon with AVX-512 VNNI (cosine 0.81-0.86 fused, varying by session, 0.9999 unfused, ORT 1.23.0); other CPUs
may compute it right, so the test measures what this CPU does and asserts that edgekit says it."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
import bench_ort_fused_kernels as stem  # noqa: E402
import zoo  # noqa: E402

from edgekit.quantize.ort import quantize_ort_workflow  # noqa: E402
from edgekit.quantize.ort.kernels import GAP  # noqa: E402
from edgekit.tasks.base import output_cosine  # noqa: E402


def test_a_kernel_that_computes_less_than_its_qdq_graph_is_said_and_a_faithful_one_is_not(tmp_path: Path) -> None:
    calib, held_out = zoo.images(stem.SIZE)
    fp32, int8 = tmp_path / "stem.onnx", tmp_path / "stem.int8.onnx"
    stem.stem_model(fp32)
    result = quantize_ort_workflow(fp32, int8, calib[:24], holdout=held_out[:16], remedies=False, progress=False,
                                   log=lambda _: None)
    reference = stem.outputs(fp32, held_out[:16], "ORT_DISABLE_ALL")
    fused = output_cosine(stem.outputs(int8, held_out[:16], "ORT_ENABLE_ALL"), reference)
    unfused = output_cosine(stem.outputs(int8, held_out[:16], "ORT_DISABLE_ALL"), reference)
    said = [w for w in result.warnings if w.startswith("ONNX Runtime's fused INT8 kernels")]
    if unfused - fused < GAP:  # this CPU computes the stem right (raw ORT sessions): nothing to say
        assert not said and "fidelity_unfused" not in result.details, (said, fused, unfused)
    else:
        assert len(said) == 1, (result.warnings, fused, unfused)
        assert result.details["fidelity_unfused"]["cosine"] > result.fidelity.cosine + GAP
        assert f"{result.fidelity.cosine:.4f}, against {result.details['fidelity_unfused']['cosine']:.4f}" in said[0]


def test_the_layer_a_fused_kernel_miscomputes_is_found_and_kept_in_float(tmp_path: Path) -> None:
    """With remedies on, edgekit finds the convolution whose fused kernel departs from its QDQ graph (by
    bisecting cuts of the model) and quantizes again with it in float, measured with the default
    session; on a CPU whose kernel is right nothing is kept."""
    calib, held_out = zoo.images(stem.SIZE)
    fp32, int8 = tmp_path / "stem.onnx", tmp_path / "stem.int8.onnx"
    stem.stem_model(fp32)
    result = quantize_ort_workflow(fp32, int8, calib[:24], holdout=held_out[:16], progress=False, log=lambda _: None)
    fix = result.details.get("kernel_remedy")
    plain = quantize_ort_workflow(fp32, tmp_path / "plain.onnx", calib[:24], holdout=held_out[:16], remedies=False,
                                  progress=False, log=lambda _: None)
    unfused = stem.outputs(tmp_path / "plain.onnx", held_out[:16], "ORT_DISABLE_ALL")
    fused = stem.outputs(tmp_path / "plain.onnx", held_out[:16], "ORT_ENABLE_ALL")
    if output_cosine(fused, unfused) >= 1 - GAP:  # this CPU computes the stem's fused kernel right
        assert fix is None, fix
        return
    assert fix is not None and fix["kept_in_float"] == ["Conv_0"], (fix, plain.fidelity)  # named by edgekit
    assert "Conv_0" in result.nodes_excluded
    assert result.fidelity.cosine > fix["fused_before"]["cosine"] + GAP
    assert result.fidelity.cosine >= fix["unfused_before"]["cosine"] - GAP  # as faithful as the graph said
    said = [w for w in result.warnings if "miscompute Conv_0 " in w]
    assert len(said) == 1 and f"cosine {result.fidelity.cosine:.4f}" in said[0], result.warnings


def _elementwise_model(path: Path, gain: float) -> None:
    """y = sin(gain * x) on a 1x3x8x8 input: with a large gain, float32-rounding-sized input noise
    changes every output (a chaotic net's behaviour in one op); with gain 1 it changes nothing."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("Mul", ["input", "gain"], ["scaled"]), helper.make_node("Sin", ["scaled"], ["output"])],
        "elementwise", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3, 8, 8])],
        [numpy_helper.from_array(np.array(gain, dtype=np.float32), "gain")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))


def test_fused_and_unfused_are_compared_only_where_float_noise_cannot_explain_a_gap(tmp_path: Path) -> None:
    from edgekit.quantize.fidelity import Check
    from edgekit.quantize.ort.kernels import kernels_can_be_judged

    samples = np.random.default_rng(0).uniform(0.5, 1.0, (8, 3, 8, 8)).astype(np.float32)
    for gain, judged in ((1.0, True), (1e7, False)):
        _elementwise_model(tmp_path / f"g{gain:g}.onnx", gain)
        assert kernels_can_be_judged(Check(tmp_path / f"g{gain:g}.onnx", samples, "held-out")) is judged, gain
