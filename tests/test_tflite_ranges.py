"""TFLite's range remedy: mean min/max activation ranges when the converter's absolute ones lose fidelity.

Real conversions and TFLite interpreters: the trained digits CNN calibrated on digits images of which
a few carry a 40x-bright patch (a rare outlier the absolute min/max takes as every tensor's range),
measured on clean digits images.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgekit.manifest import read_manifest
from edgekit.quantize import fidelity

pytest.importorskip("tensorflow")


@pytest.fixture(scope="module")
def outlier_calib(digits_calib: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(calibration tensors, 2 of them with a 40x-bright patch; clean held-out tensors)."""
    calib, clean = digits_calib[:64].copy(), digits_calib[64:88]
    calib[[7, 47], :, 8:16, 8:16] *= 40.0
    return calib, clean


def _stage(path: Path) -> dict:
    return next(s for s in read_manifest(path)["stages"] if s["stage"] == "quantize")


def test_mean_ranges_are_chosen_when_an_outlier_sets_the_absolute_ones(
        digits_fp32_onnx: Path, outlier_calib: tuple[np.ndarray, np.ndarray], tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    from edgekit.inspect import inspect_tflite
    from edgekit.quantize.tflite import quantize_tflite

    calib, clean = outlier_calib
    out = tmp_path / "d.int8.tflite"
    with caplog.at_level("INFO", logger="edgekit"):
        result = quantize_tflite(digits_fp32_onnx, out, calib, holdout=clean, progress=False, write_fp32=False)
    record = result.details["remedies"]
    before, chosen = record["tried"][0], record["chosen"]
    assert before["ranges"] == "minmax" and before["cosine"] < fidelity.MIN_COSINE
    assert [t["ranges"] for t in record["tried"]] == ["minmax", "mean"]  # no normalization: no third candidate
    assert chosen["ranges"] == "mean" and chosen["cosine"] > before["cosine"] + 0.01
    assert result.settings["ranges"] == "mean" and result.label.endswith("(mean min/max ranges)")
    assert result.fidelity.cosine == pytest.approx(chosen["cosine"], abs=1e-6)
    stage = _stage(out)
    assert stage["remedies"]["chosen"] == chosen and stage["label"] == result.label
    assert any(r.getMessage().startswith("remedy: chose mean min/max ranges (cosine ") for r in caplog.records)
    # the written model is what was measured, and its input range is the mean of each image's min and max
    assert fidelity.measure(digits_fp32_onnx, out, clean).cosine == pytest.approx(chosen["cosine"], abs=1e-6)
    scale = inspect_tflite(out)["inputs"][0]["quantization"]["scale"]
    nhwc = calib.transpose(0, 2, 3, 1).reshape(len(calib), -1)
    low, high = min(nhwc.min(axis=1).mean(), 0.0), max(nhwc.max(axis=1).mean(), 0.0)
    assert scale == pytest.approx((high - low) / 255.0, rel=0.01)
    assert scale < (nhwc.max() - min(nhwc.min(), 0.0)) / 255.0 / 4  # the absolute range would be > 4x coarser


def test_no_remedies_keeps_the_absolute_ranges(digits_fp32_onnx: Path, outlier_calib: tuple[np.ndarray, np.ndarray],
                                               tmp_path: Path) -> None:
    from edgekit.quantize.tflite import quantize_tflite

    calib, clean = outlier_calib
    out = tmp_path / "d.int8.tflite"
    result = quantize_tflite(digits_fp32_onnx, out, calib, holdout=clean, progress=False, write_fp32=False,
                             remedies=False)
    assert result.settings["ranges"] == "minmax" and "remedies" not in result.details
    assert result.fidelity.cosine < fidelity.MIN_COSINE and result.label == "TFLite full-integer INT8"
    assert any("not faithful" in w for w in result.warnings)


def _fid(cosine: float, agreement: float, samples: int = 32) -> fidelity.Fidelity:
    return fidelity.Fidelity(cosine, agreement, samples, "held-out")


def test_agreement_within_its_noise_leaves_the_ranking_to_the_cosine() -> None:
    # 2 images in 32 fewer agreeing: within the noise of 32 samples, and the cosine is far better
    assert _fid(0.916, 6.25).improves_on(_fid(0.696, 18.75))
    assert not _fid(0.696, 18.75).improves_on(_fid(0.916, 6.25))
    # the same drop on 640 samples is real: the agreement shortfall ranks
    assert not _fid(0.916, 6.25, 640).improves_on(_fid(0.696, 18.75, 640))
    # 100% -> 50% of 32 is beyond noise, whatever the cosine
    assert not _fid(0.999, 50.0).improves_on(_fid(0.98, 100.0))
    # a gain below the margin is not a change
    assert not _fid(0.9801, 100.0).improves_on(_fid(0.98, 100.0))
    assert fidelity.agreement_noise(_fid(0.9, 100.0), _fid(0.9, 100.0)) == 0.0
    # a detector's agreement (mAP vs FP32's) is no proportion of samples: its shortfall ranks as it is
    detection = [fidelity.Fidelity(c, a, 32, "held-out", "detection") for c, a in ((0.916, 6.25), (0.696, 18.75))]
    assert not detection[0].improves_on(detection[1])


class _LayerNormTokens:
    """Tokens -> LayerNorm (its mean, squared deviations, their mean, + eps, rsqrt) -> a projection, as
    a constant-weight TensorFlow function; one token per sample is spread wider, by a factor that
    varies across samples."""

    def __init__(self) -> None:
        from types import SimpleNamespace

        import tensorflow as tf

        rng = np.random.default_rng(0)
        self.w1, self.w2 = (tf.constant(rng.standard_normal((8, 8)).astype(np.float32)) for _ in range(2))
        self.weights, self.inputs = [], [SimpleNamespace(shape=(1, 4, 4, 8), dtype=tf.float32, name="x:0")]

    def __call__(self, x):
        import tensorflow as tf

        tokens = tf.reshape(x, (1, 16, 8)) @ self.w1
        mean = tf.reduce_mean(tokens, -1, keepdims=True)
        variance = tf.reduce_mean(tf.math.squared_difference(tokens, mean), -1, keepdims=True)
        return ((tokens - mean) * tf.math.rsqrt(variance + 1e-5)) @ self.w2

    @staticmethod
    def samples(count: int) -> np.ndarray:
        rng = np.random.default_rng(1)
        x = rng.standard_normal((count, 4, 4, 8)).astype(np.float32)
        x[:, 0, 0, :] *= rng.lognormal(1.5, 0.5, (count, 1)).astype(np.float32)
        return x


def _output_scales(flatbuffer: bytes) -> dict[str, float]:
    """Each op's output scale by op name (the first op of a name where it repeats: LayerNorm's first MEAN)."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    names = {code: name for name, code in vars(schema.BuiltinOperator).items() if not name.startswith("_")}
    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(flatbuffer))
    graph, scales = model.subgraphs[0], {}
    for op in graph.operators:
        entry = model.operatorCodes[op.opcodeIndex]
        scales.setdefault(names[max(entry.builtinCode, entry.deprecatedBuiltinCode)],
                          float(graph.tensors[op.outputs[0]].quantization.scale[0]))
    return scales


def test_quantizing_one_calibration_writes_the_converters_own_bytes(digits_fp32_onnx: Path, digits_calib: np.ndarray,
                                                                   tmp_path: Path) -> None:
    """Every INT8 candidate (other ranges, ops kept in float) is one quantization of a model converted
    and calibrated once (:func:`calibrate`), not a conversion and a calibration again. With the converter's
    ranges, that is byte for byte what TensorFlow's one-call conversion writes: int8 or float I/O,
    per-channel or per-tensor."""
    import tensorflow as tf

    from edgekit.quantize.tflite.convert import _concrete_function, calibrate, quantize_calibrated
    from edgekit.quantize.tflite.keras_build import build_keras

    calib = np.ascontiguousarray(digits_calib[:16].transpose(0, 2, 3, 1))
    model = build_keras(digits_fp32_onnx, tmp_path / "keras", calib, integer=True)
    calibrated = calibrate(model, calib, progress=False)
    for float_io, per_channel in ((False, True), (True, False)):
        function, holder = _concrete_function(model)
        converter = tf.lite.TFLiteConverter.from_concrete_functions([function], holder)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([sample[None]] for sample in calib)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter._experimental_disable_per_channel = not per_channel
        if not float_io:
            converter.inference_input_type = converter.inference_output_type = tf.int8
        ours = quantize_calibrated(calibrated, float_io=float_io, per_channel=per_channel)
        assert ours == converter.convert(), (float_io, per_channel)
    assert quantize_calibrated(calibrated, float_io=True, per_channel=False, ranges="mean") != ours  # ranges only


def test_float_conversions_write_the_converters_own_bytes() -> None:
    """FP32, dynamic-range and float16 conversions deduplicate and add their metadata after the converter
    returns (so that its frozen graph is freed first): byte for byte what TensorFlow's one-call
    conversion writes, with a convolution's and a dense layer's equal bytes (all ones) in one buffer,
    which only the deduplication shares (their shapes differ)."""
    import tensorflow as tf
    import tf_keras
    from tensorflow.lite.tools import flatbuffer_utils

    from edgekit.quantize.tflite.convert import _concrete_function, to_tflite

    x = tf_keras.Input((4, 4, 8), batch_size=1)
    conv = tf_keras.layers.Conv2D(8, 1, kernel_initializer="ones", bias_initializer="zeros")
    dense = tf_keras.layers.Dense(8, kernel_initializer="ones", bias_initializer="zeros")
    model = tf_keras.Model(x, dense(tf_keras.layers.ReLU()(conv(x))))
    for weights in (None, "dynamic", "fp16"):
        function, holder = _concrete_function(model)
        converter = tf.lite.TFLiteConverter.from_concrete_functions([function], holder)
        if weights is not None:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_types = [tf.float16] if weights == "fp16" else []
        ours = to_tflite(model, None, weights=weights, progress=False)
        assert ours == converter.convert(), weights
    graph = flatbuffer_utils.convert_bytearray_to_object(bytearray(to_tflite(model, None, progress=False))).subgraphs[0]
    weighted = [op for op in graph.operators if len(op.inputs) == 3]  # CONV_2D, FULLY_CONNECTED
    assert len(weighted) == 2 and len({graph.tensors[op.inputs[1]].buffer for op in weighted}) == 1


def test_the_variance_candidate_keeps_only_the_variance_chain_absolute() -> None:
    """Mean ranges narrow every activation; the third candidate keeps the squared deviations, their mean
    and the epsilon's Add at the converter's absolute ranges, and narrows the rest as the second does."""
    from edgekit.quantize.tflite.convert import to_tflite
    from edgekit.quantize.tflite.ranges import has_normalization_variance

    model, calib = _LayerNormTokens(), _LayerNormTokens.samples(32)
    absolute, mean, variance_kept = (_output_scales(to_tflite(model, calib, ranges=kind, progress=False))
                                     for kind in ("minmax", "mean", "mean-absolute-variance"))
    for op in ("SQUARED_DIFFERENCE", "ADD"):
        assert mean[op] < 0.9 * absolute[op], (op, mean[op], absolute[op])
        assert variance_kept[op] == pytest.approx(absolute[op], rel=1e-6), op
    assert variance_kept["MEAN"] == pytest.approx(mean["MEAN"], rel=1e-6)  # the token mean: narrowed
    assert mean["MEAN"] < 0.9 * absolute["MEAN"]
    assert variance_kept["RSQRT"] != pytest.approx(absolute["RSQRT"], rel=0.05)  # outside the chain: narrowed
    assert has_normalization_variance(to_tflite(model, calib, progress=False))


def test_a_layernorm_model_measures_the_variance_candidate_and_keeps_the_best(tmp_path: Path) -> None:
    """A LayerNorm model below the threshold tries the three range kinds on held-out images and keeps
    the one that improves most (ViT-B/32 at 128 px chose the third: cosine 0.8825 -> 0.9317, where
    mean ranges everywhere reached 0.9325 but lost top-1 agreement beyond noise, 46.9% -> 21.9%)."""
    import torch

    from edgekit.export import export_onnx
    from edgekit.quantize.tflite import quantize_tflite

    class Tokens(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem, self.norm = torch.nn.Conv2d(3, 16, 4, stride=4), torch.nn.LayerNorm(16)
            self.head = torch.nn.Linear(16, 10)

        def forward(self, x):
            tokens = self.stem(x).flatten(2).transpose(1, 2)
            tokens = torch.cat([tokens[:, :1] * 8.0, tokens[:, 1:]], 1)  # one wide token, as ViT's class token
            return self.head(self.norm(tokens)[:, 0])

    torch.manual_seed(0)
    export_onnx(Tokens().eval(), torch.zeros(1, 3, 32, 32), tmp_path / "t.onnx")
    rng = np.random.default_rng(0)
    images = rng.random((48, 3, 32, 32), dtype=np.float32) * rng.lognormal(0.0, 0.7, (48, 1, 1, 1)).astype(np.float32)
    result = quantize_tflite(tmp_path / "t.onnx", tmp_path / "t.int8.tflite", images[:32], holdout=images[32:],
                             progress=False, write_fp32=False)
    record = result.details["remedies"]
    tried = {t["ranges"]: t for t in record["tried"]}
    assert list(tried) == ["minmax", "mean", "mean-absolute-variance"], record
    best = record["chosen"]
    for other in tried.values():
        assert other is best or not fidelity.Fidelity(other["cosine"], other["agreement"], other["samples"],
                                                      "held-out").improves_on(_fid(best["cosine"], best["agreement"],
                                                                                   best["samples"]))
    assert result.settings["ranges"] == best["ranges"]
