"""Full-integer TFLite for transformer-era blocks, and ``--float-fallback`` where no integer form exists.

Real onnx2tf, TFLite converter and interpreter. The block is ConvNeXt's (depthwise 7x7, LayerNorm,
Linear-GELU-Linear, residual): torch exports its GELU as Div(x, 1.4142135) -> Erf -> Add -> Mul ->
Mul, which onnx2tf failed to translate and TFLite has no Erf kernel for."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from edgekit.cli import main
from edgekit.manifest import read_manifest


def _export(module, name: str, directory: Path) -> Path:
    import torch

    from edgekit.export import export_onnx

    path = directory / f"{name}.onnx"
    export_onnx(module.eval(), torch.zeros(1, 3, 32, 32), path)
    return path


@pytest.fixture(scope="module")
def convnext_block_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    class Block(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = torch.nn.Conv2d(3, 16, 4, stride=4)
            self.dw = torch.nn.Conv2d(16, 16, 7, padding=3, groups=16)
            self.norm = torch.nn.LayerNorm(16)
            self.fc1, self.act, self.fc2 = torch.nn.Linear(16, 64), torch.nn.GELU(), torch.nn.Linear(64, 16)
            self.head = torch.nn.Linear(16, 10)

        def forward(self, x):
            x = self.stem(x)
            y = self.norm(self.dw(x).permute(0, 2, 3, 1))
            return self.head((x + self.fc2(self.act(self.fc1(y))).permute(0, 3, 1, 2)).mean((2, 3)))

    torch.manual_seed(0)
    return _export(Block(), "convnext_block", tmp_path_factory.mktemp("block"))


def _stage(path: Path) -> dict:
    return next(s for s in read_manifest(path)["stages"] if s["stage"] == "quantize")


def test_layernorm_gelu_block_is_full_integer_and_faithful(convnext_block_onnx: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    ops = [n.op_type for n in onnx.load(str(convnext_block_onnx)).graph.node]
    assert "Erf" in ops and "LayerNormalization" in ops  # the exported graph has what used to fail
    out = tmp_path / "block.int8.tflite"
    assert main(["quantize", str(convnext_block_onnx), "--backend", "tflite", "--recipe", "digits",
                 "--calib", "builtin:digits/train", "--num-samples", "64", "-o", str(out)]) == 0
    stage = _stage(out)
    assert stage["full_integer"] and stage["float_ops"] == [] and stage["label"] == "TFLite full-integer INT8"
    assert "GELU" in stage["ops"] and "ERF" not in stage["ops"]  # onnx2tf's fusion: TFLite's int8 GELU
    assert stage["fidelity"]["cosine"] > 0.99, stage["fidelity"]
    assert main(["quantize", str(convnext_block_onnx), "--backend", "ort", "--recipe", "digits",
                 "--calib", "builtin:digits/train", "--num-samples", "64", "-o", str(tmp_path / "b.int8.onnx")]) == 0
    assert _stage(tmp_path / "b.int8.onnx")["fidelity"]["cosine"] > 0.99


def test_an_op_without_integer_kernel_needs_float_fallback_and_is_labelled(tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    class Sine(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.fc = torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.Linear(8, 10)

        def forward(self, x):
            return self.fc(torch.sin(self.conv(x)).mean((2, 3)))

    torch.manual_seed(0)
    model = _export(Sine(), "sine", tmp_path)
    out = tmp_path / "sine.int8.tflite"
    argv = ["quantize", str(model), "--backend", "tflite", "--recipe", "digits", "--calib", "builtin:digits/train",
            "--num-samples", "32", "-o", str(out)]
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "not full-integer: ops left in float: SIN" in err and "--float-fallback" in err and err.count("\n") == 1
    assert not out.exists() and not list(tmp_path.glob("sine.int8*"))  # nothing half-written
    assert main([*argv, "--float-fallback"]) == 0
    printed = capsys.readouterr().out
    assert "TFLite INT8 with float fallback (not full-integer: SIN in float)" in printed
    stage = _stage(out)
    assert not stage["full_integer"] and stage["float_ops"] == ["SIN"] and stage["float_fallback"]
    assert "not full-integer" in stage["label"]


def test_an_operator_onnx2tf_cannot_translate_is_one_line_naming_the_layer(tmp_path: Path,
                                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """ORT's contrib BiasGelu runs in ONNX Runtime, onnx2tf has no module for it: exit 2, one line
    naming the layer and the operator, nothing written."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "W"),
               numpy_helper.from_array(np.zeros(8, np.float32), "B"),
               numpy_helper.from_array(np.zeros(32, np.float32), "B2"),
               numpy_helper.from_array(rng.standard_normal((10, 8)).astype(np.float32), "G")]
    nodes = [helper.make_node("Conv", ["x", "W", "B"], ["c"], pads=[1, 1, 1, 1], name="/stem/Conv"),
             helper.make_node("BiasGelu", ["c", "B2"], ["g"], domain="com.microsoft", name="/block/act/BiasGelu"),
             helper.make_node("GlobalAveragePool", ["g"], ["p"], name="/pool"),
             helper.make_node("Flatten", ["p"], ["f"], name="/flatten"),
             helper.make_node("Gemm", ["f", "G"], ["y"], transB=1, name="/fc/Gemm")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], weights)
    model = tmp_path / "contrib.onnx"
    onnx.save(helper.make_model(graph, ir_version=8, opset_imports=[helper.make_opsetid("", 17),
                                                                    helper.make_opsetid("com.microsoft", 1)]), model)
    out = tmp_path / "contrib.int8.tflite"
    capsys.readouterr()
    assert main(["quantize", str(model), "--backend", "tflite", "--recipe", "digits", "--calib",
                 "builtin:digits/train", "--num-samples", "16", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "could not translate layer /block/act/BiasGelu (operator BiasGelu" in err and err.count("\n") == 1, err
    assert "Traceback" not in err and not list(tmp_path.glob("contrib.int8*"))


def _inception_pool_branch(directory: Path, channels: int = 16) -> Path:
    """Inception-V3's pool branch (3x3 average pool, padding 1, padding counted) where its last blocks
    run at 128 px: on a 2x2 map, where onnx2tf's rescaling of a padded pool went wrong."""
    import torch

    class PoolBranch(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = torch.nn.Conv2d(3, channels, 8, stride=16, padding=0)  # 32x32 -> 2x2
            self.conv, self.fc = torch.nn.Conv2d(channels, 16, 1), torch.nn.Linear(16, 10)

        def forward(self, x):
            y = torch.relu(self.stem(x))
            return self.fc(self.conv(torch.nn.functional.avg_pool2d(y, 3, stride=1, padding=1)).mean((2, 3)))

    torch.manual_seed(0)
    return _export(PoolBranch(), "pool_branch", directory)


def test_a_padded_average_pool_on_a_2x2_map_converts_to_what_onnx_computes(tmp_path: Path,
                                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """Rewritten to Pad + AveragePool before onnx2tf: the FP32 TFLite equals the ONNX model, and the
    INT8 model is faithful (before: FP32 off by a quarter of the values' scale)."""
    from edgekit.quantize.tflite.onnx_rewrites import prepare_for_onnx2tf
    from edgekit.runtime import open_runner

    model = _inception_pool_branch(tmp_path)
    prepare_for_onnx2tf(model, tmp_path / "rewritten.onnx")
    rewritten = onnx.load(str(tmp_path / "rewritten.onnx")).graph.node
    pool = next(n for n in rewritten if n.op_type == "AveragePool")
    assert "Pad" in [n.op_type for n in rewritten] and not any(a.name == "pads" for a in pool.attribute)
    out = tmp_path / "pool.int8.tflite"
    assert main(["quantize", str(model), "--backend", "tflite", "--recipe", "digits", "--calib",
                 "builtin:digits/train", "--num-samples", "32", "-o", str(out)]) == 0
    x = np.random.default_rng(0).random((4, 3, 32, 32), dtype=np.float32)
    onnx_out = open_runner(str(model)).predict(x)
    np.testing.assert_allclose(open_runner(str(tmp_path / "pool.fp32.tflite")).predict(x), onnx_out, atol=1e-4)
    assert _stage(out)["fidelity"]["cosine"] > 0.99


def test_an_enlarging_adaptive_average_pool_is_full_integer_and_faithful(tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """VGG's 7x7 adaptive pool over a 4x4 map, which torch exports as gathers and masked_fill (Where with
    a constant mask and fill): the converter's int8 SELECT read the fill at the wrong scale (cosine
    0.834 here, VGG-11 at 128 px 0.733). Rewritten to a Mul by the mask, the INT8 model is faithful."""
    import torch

    from edgekit.quantize.tflite.onnx_rewrites import prepare_for_onnx2tf
    from edgekit.runtime import open_runner

    class VggTail(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            layers: list[torch.nn.Module] = []
            for width_in, width in [(3, 32), (32, 64), (64, 64)]:
                layers += [torch.nn.Conv2d(width_in, width, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2)]
            self.features, self.pool = torch.nn.Sequential(*layers), torch.nn.AdaptiveAvgPool2d(7)
            self.classifier = torch.nn.Sequential(torch.nn.Linear(64 * 49, 256), torch.nn.ReLU(),
                                                  torch.nn.Linear(256, 10))

        def forward(self, x):
            return self.classifier(torch.flatten(self.pool(self.features(x)), 1))

    torch.manual_seed(0)
    model = _export(VggTail(), "vgg_tail", tmp_path)
    assert "Where" in [n.op_type for n in onnx.load(str(model)).graph.node]
    prepare_for_onnx2tf(model, tmp_path / "rewritten.onnx")
    assert "Where" not in [n.op_type for n in onnx.load(str(tmp_path / "rewritten.onnx")).graph.node]
    out = tmp_path / "vgg_tail.int8.tflite"
    assert main(["quantize", str(model), "--backend", "tflite", "--recipe", "digits", "--calib",
                 "builtin:digits/train", "--num-samples", "32", "-o", str(out)]) == 0
    x = np.random.default_rng(0).random((4, 3, 32, 32), dtype=np.float32)
    np.testing.assert_allclose(open_runner(str(tmp_path / "vgg_tail.fp32.tflite")).predict(x),
                               open_runner(str(model)).predict(x), atol=1e-4)
    assert _stage(out)["fidelity"]["cosine"] > 0.999
    assert "not faithful" not in capsys.readouterr().err


@pytest.mark.parametrize("fill", [0.0, -2.5])
@pytest.mark.parametrize("fill_is_then_branch", [True, False])
def test_a_rank_6_constant_select_is_rewritten_to_the_same_values_and_lower_ranks_are_kept(
        tmp_path: Path, fill: float, fill_is_then_branch: bool) -> None:
    """The rewritten graph computes Where's values and shape in ONNX Runtime, for either branch constant and
    a fill wider than the mask; a 4-D Where (which the converter quantizes right) is left as it is."""
    from onnx import TensorProto, helper, numpy_helper
    from onnxruntime import InferenceSession

    from edgekit.quantize.tflite.onnx_rewrites import prepare_for_onnx2tf

    rng = np.random.default_rng(0)
    for shape, rewritten in [((1, 2, 1, 4, 2, 3), True), ((1, 2, 4, 3), False)]:
        condition = rng.random((1,) * (len(shape) - 2) + shape[-2:]) > 0.5
        constant = np.full((2,) + (1,) * (len(shape) - 3) + shape[-2:], fill, np.float32)
        branches = ["fill", "x"] if fill_is_then_branch else ["x", "fill"]
        graph = helper.make_graph(
            [helper.make_node("Where", ["mask", *branches], ["y"])], "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
            [numpy_helper.from_array(condition, "mask"), numpy_helper.from_array(constant, "fill")])
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10),
                  tmp_path / "where.onnx")
        prepare_for_onnx2tf(tmp_path / "where.onnx", tmp_path / "rewritten.onnx")
        ops = [n.op_type for n in onnx.load(str(tmp_path / "rewritten.onnx")).graph.node]
        assert ("Where" not in ops) == rewritten
        x = {"x": rng.standard_normal(shape).astype(np.float32)}
        expected, got = (InferenceSession(str(tmp_path / name)).run(None, x)[0] for name in ("where.onnx", "rewritten.onnx"))
        assert got.shape == expected.shape
        np.testing.assert_array_equal(got, expected)


def test_a_conversion_that_computes_something_else_is_refused_in_one_line(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """onnx2tf's own translation of the padded pool on a 2x2 map (edgekit's rewrite switched off) runs
    without an error and computes something else: exit 2, one line with the FP32 cosine, nothing written."""
    from edgekit.quantize.tflite import onnx_rewrites

    monkeypatch.setattr(onnx_rewrites, "_average_pool_pads_explicit", lambda graph: False)
    model = _inception_pool_branch(tmp_path)
    out = tmp_path / "pool.int8.tflite"
    capsys.readouterr()
    assert main(["quantize", str(model), "--backend", "tflite", "--recipe", "digits", "--calib",
                 "builtin:digits/train", "--num-samples", "32", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "the TFLite conversion computes something else than the ONNX model" in err and err.count("\n") == 1, err
    assert "Traceback" not in err and not list(tmp_path.glob("pool.*tflite*"))


def test_a_refused_translation_names_the_tensors_whose_layout_onnx2tf_must_guess(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The same refusal on a net whose 2x2 maps have 2 channels: the line names such a tensor and an input
    size where the net has none (64 px: 4x4 maps)."""
    from edgekit.quantize.tflite import onnx_rewrites

    monkeypatch.setattr(onnx_rewrites, "_average_pool_pads_explicit", lambda graph: False)
    model = _inception_pool_branch(tmp_path, channels=2)
    capsys.readouterr()
    assert main(["quantize", str(model), "--backend", "tflite", "--recipe", "digits", "--calib",
                 "builtin:digits/train", "--num-samples", "32", "-o", str(tmp_path / "pool.int8.tflite")]) == 2
    err = capsys.readouterr().err
    assert "computes something else" in err and err.count("\n") == 1, err
    assert "as many channels as rows and columns" in err and "1x2x2x2" in err and "exported at 64x64 it has none" in err


def test_square_cubes_are_found_and_a_size_without_them_is_suggested(tmp_path: Path) -> None:
    """8 channels at 8x8 (a stride-4 stem at 32 px) is one; at 64 px the map is 16x16; a net without such a
    tensor gets no hint at all."""
    import torch

    from edgekit.quantize.tflite import layout_ambiguity

    cube = _export(torch.nn.Sequential(torch.nn.Conv2d(3, 8, 4, stride=4), torch.nn.ReLU()), "cube", tmp_path)
    assert [shape for _, shape in layout_ambiguity.square_cubes(cube)] == [[1, 8, 8, 8], [1, 8, 8, 8]]
    assert layout_ambiguity.size_without_them(cube) == 64
    plain = _export(torch.nn.Conv2d(3, 16, 4, stride=4), "plain", tmp_path)
    assert layout_ambiguity.square_cubes(plain) == [] and layout_ambiguity.hint(plain) == ""


def _rounding_amplifier(directory: Path) -> Path:
    """30 tanh convolutions with weights 6x wider than preserving: in the chaotic regime, where a
    perturbation grows at every layer, so float32 rounding alone moves the output (as in random-weight
    EfficientNet-B4 to B7 at 128 px: ORT's optimised and unoptimised graphs agree to cosine 0.987)."""
    import torch

    from edgekit.export import export_onnx

    torch.manual_seed(0)
    layers: list[torch.nn.Module] = [torch.nn.Conv2d(3, 16, 3, padding=1)]
    for _ in range(30):
        conv = torch.nn.Conv2d(16, 16, 3, padding=1)
        torch.nn.init.normal_(conv.weight, std=6.0 / np.sqrt(16 * 9))
        torch.nn.init.zeros_(conv.bias)
        layers += [conv, torch.nn.Tanh()]
    model = torch.nn.Sequential(*layers, torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(16, 10))
    path = directory / "amplifier.onnx"
    export_onnx(model.eval(), torch.zeros(1, 3, 32, 32), path, parity_count=0)
    return path


def test_a_model_that_amplifies_float_rounding_is_held_to_its_own_spread_and_said_so(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Its right FP32 TFLite sits below the 0.999 a trained net's would: converted, with the spread that
    excused it in the manifest and a warning that its fidelity figures measure the amplification."""
    model = _rounding_amplifier(tmp_path)
    out = tmp_path / "amplifier.int8.tflite"
    assert main(["quantize", str(model), "--backend", "tflite", "--recipe", "digits", "--calib",
                 "builtin:digits/train", "--num-samples", "32", "-o", str(out)]) == 0
    stage = _stage(out)
    translation, spread = stage["fp32_translation_cosine"], stage["fp32_float_spread_cosine"]
    assert translation < 0.999 and spread < 0.999, stage  # the model really amplifies rounding
    assert 1 - translation <= 4 * (1 - spread)
    assert "this model amplifies float rounding" in capsys.readouterr().err


def test_shape_arithmetic_is_folded_through_a_chain_longer_than_any_fixed_round_count(tmp_path: Path) -> None:
    """40 blocks that each pad to a multiple of 7 from the shape the block before left, as Swin's
    windows do: every block's pads become known only once the previous Pad's output shape is (one
    folding round a block). Swin-S's 18-block stage at 128 px needed 53 rounds; a cap of 32 left its
    10th block on with runtime shapes, whose attention onnx2tf then mistranslated."""
    import torch

    from edgekit.export import export_onnx
    from edgekit.quantize.tflite.onnx_rewrites import prepare_for_onnx2tf

    class Windows(torch.nn.Module):
        def forward(self, x):
            for _ in range(40):
                width = x.shape[-1]
                x = torch.nn.functional.pad(x, (0, (7 - width % 7) % 7))[..., : width + 1] * 0.5
            return x

    source = tmp_path / "windows.onnx"
    export_onnx(Windows().eval(), torch.zeros(1, 3, 8, 8), source, parity_count=0)
    assert "Shape" in [n.op_type for n in onnx.load(str(source)).graph.node]
    prepare_for_onnx2tf(source, tmp_path / "folded.onnx")
    folded = onnx.load(str(tmp_path / "folded.onnx"))
    assert [n.op_type for n in folded.graph.node if n.op_type in ("Shape", "Gather", "Mod", "Concat")] == []
    static = onnx.shape_inference.infer_shapes(folded).graph.output[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in static] == [1, 3, 8, 14]


class _CosineAttention:
    """Swin V2's attention in small: F.normalize on queries and keys (torch exports ReduceL2 -> Clip(eps)
    -> Expand -> Div, which TFLite has no int8 kernels for: SQUARE, SQRT, DIV), a scaled cosine
    similarity, softmax."""

    @staticmethod
    def module(heads: int = 2):
        import torch
        import torch.nn.functional as F

        class Block(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.stem = torch.nn.Conv2d(3, 16, 4, stride=4)
                self.qkv, self.head = torch.nn.Linear(16, 48), torch.nn.Linear(16, 10)

            def forward(self, x):
                tokens = self.stem(x).flatten(2).transpose(1, 2)
                q, k, v = self.qkv(tokens).reshape(1, -1, 3, heads, 16 // heads).permute(2, 0, 3, 1, 4)
                attention = (F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)) * 10.0
                mixed = (attention.softmax(-1) @ v).transpose(1, 2).reshape(1, -1, 16)
                return self.head((tokens + mixed).mean(1))

        torch.manual_seed(0)
        return Block()


def test_an_l2_normalize_is_rewritten_to_the_same_values(tmp_path: Path) -> None:
    """Clip(ReduceL2) -> Sqrt(Max(ReduceSumSquare)) and Div without Expand: ONNX Runtime computes the same
    values, a zero vector (the eps floor) included."""
    import torch
    import torch.nn.functional as F

    from edgekit.export import export_onnx
    from edgekit.quantize.tflite.onnx_rewrites import prepare_for_onnx2tf
    from edgekit.runtime import open_runner

    class Normalize(torch.nn.Module):
        def forward(self, x):
            return F.normalize(x.flatten(2), dim=-1) * 3.0

    export_onnx(Normalize(), torch.zeros(1, 3, 8, 8), tmp_path / "n.onnx")
    prepare_for_onnx2tf(tmp_path / "n.onnx", tmp_path / "rewritten.onnx")
    before = [n.op_type for n in onnx.load(str(tmp_path / "n.onnx")).graph.node]
    after = [n.op_type for n in onnx.load(str(tmp_path / "rewritten.onnx")).graph.node]
    assert {"ReduceL2", "Clip", "Expand"} <= set(before)
    assert not {"ReduceL2", "Clip", "Expand"} & set(after) and {"ReduceSumSquare", "Max", "Sqrt"} <= set(after)
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    x[0, 1] = 0.0  # a zero vector: divided by the floor, not by zero
    expected, got = (open_runner(str(tmp_path / name)).predict(x) for name in ("n.onnx", "rewritten.onnx"))
    assert np.all(np.isfinite(got)) and np.all(got[0, 1] == 0.0)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)


def test_cosine_attention_is_full_integer_and_faithful(tmp_path: Path) -> None:
    """Swin V2's normalized queries and keys become TFLite's L2_NORMALIZATION (an int8 kernel): no float
    fallback is needed, and the INT8 model is faithful."""
    model = _export(_CosineAttention.module(), "cosine_attention", tmp_path)
    out = tmp_path / "cosine_attention.int8.tflite"
    assert main(["quantize", str(model), "--backend", "tflite", "--recipe", "digits", "--calib",
                 "builtin:digits/train", "--num-samples", "32", "-o", str(out)]) == 0
    stage = _stage(out)
    assert stage["full_integer"] and stage["float_ops"] == [] and "L2_NORMALIZATION" in stage["ops"]
    assert stage["fidelity"]["cosine"] > 0.99, stage["fidelity"]


def test_a_5d_l2_normalization_is_one_line_and_a_5d_normalize_is_not_rewritten_into_one(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """TFLite's L2_NORMALIZATION kernel takes up to 4-D, but the converter fuses x / ||x|| of any rank: a
    5-D one converted to a model its interpreter refuses to prepare. That is one line naming the op (exit 2,
    nothing written), and a 5-D F.normalize is left as exported rather than rewritten into that fusion."""
    import torch
    import torch.nn.functional as F

    from edgekit.export import export_onnx
    from edgekit.quantize.tflite.onnx_rewrites import prepare_for_onnx2tf

    class Grouped(torch.nn.Module):
        def __init__(self, clamped: bool) -> None:
            super().__init__()
            self.clamped, self.stem, self.head = clamped, torch.nn.Conv2d(3, 16, 4, stride=4), torch.nn.Linear(16, 10)

        def forward(self, x):
            tokens = self.stem(x).flatten(2).transpose(1, 2).reshape(1, 4, 16, 2, 8)
            tokens = F.normalize(tokens, dim=-1) if self.clamped else tokens / tokens.norm(dim=-1, keepdim=True)
            return self.head(tokens.reshape(1, 64, 16).mean(1))

    torch.manual_seed(0)
    export_onnx(Grouped(True).eval(), torch.zeros(1, 3, 32, 32), tmp_path / "clamped.onnx")
    prepare_for_onnx2tf(tmp_path / "clamped.onnx", tmp_path / "rewritten.onnx")
    assert "ReduceL2" in [n.op_type for n in onnx.load(str(tmp_path / "rewritten.onnx")).graph.node]
    model = _export(Grouped(False), "unclamped", tmp_path)
    out = tmp_path / "unclamped.int8.tflite"
    capsys.readouterr()
    assert main(["quantize", str(model), "--backend", "tflite", "--recipe", "digits", "--calib",
                 "builtin:digits/train", "--num-samples", "16", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "cannot run" in err and "L2_NORMALIZATION" in err and err.count("\n") == 1, err
    assert "Traceback" not in err and not list(tmp_path.glob("unclamped.int8*"))


def _branches_summed_then_gelu(directory: Path) -> Path:
    """Two of FastViT's MobileOne blocks (a 3x3 and a 1x1 stride-2 convolution summed, then GELU; the second
    depthwise): the structure whose GELU onnx2tf's own fusion mislaid (see the FastViT test below)."""
    import torch

    from edgekit.export import export_onnx

    class Block(torch.nn.Module):
        def __init__(self, cin: int, cout: int, groups: int) -> None:
            super().__init__()
            self.kxk = torch.nn.Conv2d(cin, cout, 3, 2, 1, groups=groups, bias=False)
            self.scale = torch.nn.Conv2d(cin, cout, 1, 2, groups=groups, bias=False)

        def forward(self, x):
            return torch.nn.functional.gelu(self.scale(x) + self.kxk(x))

    torch.manual_seed(0)
    net = torch.nn.Sequential(Block(3, 16, 1), Block(16, 16, 16), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                              torch.nn.Linear(16, 10))
    export_onnx(net.eval(), torch.zeros(1, 3, 32, 32), directory / "branches.onnx")
    return directory / "branches.onnx"


def test_an_erf_gelu_becomes_one_gelu_op_computing_the_same_values(tmp_path: Path) -> None:
    """The five-op Erf GELU becomes ONNX's Gelu op, the model converted to opset 20 (its ReduceMean's axes
    an input there): ONNX Runtime computes the same values; the TFLite INT8 model uses TFLite's GELU."""
    from edgekit.quantize.tflite.onnx_rewrites import prepare_for_onnx2tf
    from edgekit.runtime import open_runner

    model = _branches_summed_then_gelu(tmp_path)
    prepare_for_onnx2tf(model, tmp_path / "rewritten.onnx")
    rewritten = onnx.load(str(tmp_path / "rewritten.onnx"))
    ops = [n.op_type for n in rewritten.graph.node]
    assert ops.count("Gelu") == 2 and not {"Erf", "Div"} & set(ops)
    assert next(o.version for o in rewritten.opset_import if o.domain in ("", "ai.onnx")) >= 20
    x = np.random.default_rng(0).standard_normal((4, 3, 32, 32)).astype(np.float32)
    expected = open_runner(str(model)).predict(x)
    np.testing.assert_allclose(open_runner(str(tmp_path / "rewritten.onnx")).predict(x), expected, rtol=1e-5, atol=1e-6)
    out = tmp_path / "branches.int8.tflite"
    assert main(["quantize", str(model), "--backend", "tflite", "--recipe", "digits", "--calib", "builtin:digits/train",
                 "--num-samples", "32", "-o", str(out)]) == 0
    stage = _stage(out)
    assert stage["full_integer"] and "GELU" in stage["ops"] and stage["fidelity"]["cosine"] > 0.99, stage["fidelity"]


def test_timm_fastvit_converts_to_a_tflite_computing_what_its_onnx_model_does(tmp_path: Path) -> None:
    """timm's FastViT-T8 (random weights) at 128 px: every MobileOne block sums its branches, then GELU.
    Through onnx2tf's own GELU fusion its FP32 TFLite had cosine 0.851 to the ONNX model (calibrated on
    ImageNet-like images; 0.9982 on this test's digits) and quantize refused it as a mistranslation; with
    the Gelu op it computes what ONNX does and is full-integer."""
    timm = pytest.importorskip("timm")
    import torch

    from edgekit.export import export_onnx
    from edgekit.runtime import open_runner

    torch.manual_seed(0)
    model = tmp_path / "fastvit.onnx"
    export_onnx(timm.create_model("fastvit_t8", num_classes=10).eval(), torch.zeros(1, 3, 128, 128), model)
    (tmp_path / "r128.yaml").write_text("name: r128\nsize: [128, 128]\ncolor_mode: rgb\ngray_to_rgb: true\n"
                                        "scale: 0.00392156862745098\nmean: [0.485, 0.456, 0.406]\n"
                                        "std: [0.229, 0.224, 0.225]\nlayout: NCHW\n")
    out = tmp_path / "fastvit.int8.tflite"
    assert main(["quantize", str(model), "--backend", "tflite", "--recipe", str(tmp_path / "r128.yaml"), "--calib",
                 "builtin:digits/train", "--num-samples", "32", "-o", str(out)]) == 0
    x = np.random.default_rng(0).standard_normal((4, 3, 128, 128)).astype(np.float32)
    expected = open_runner(str(model)).predict(x)
    got = open_runner(str(tmp_path / "fastvit.fp32.tflite")).predict(x)
    np.testing.assert_allclose(got, expected, atol=1e-3 * float(np.abs(expected).max()))
    assert _stage(out)["full_integer"]
