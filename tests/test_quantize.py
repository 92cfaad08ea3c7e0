"""INT8 for ONNX Runtime and TFLite on a trained digits CNN: accuracy kept, sizes, checks, failures."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from edgekit.cli import main
from edgekit.evaluate import evaluate
from edgekit.inspect import inspect_file
from edgekit.manifest import read_manifest
from edgekit.quantize.ort import OrtQuantSettings, quantize_ort
from edgekit.quantize.result import QuantizeResult
from edgekit.quantize.tflite import quantize_tflite

TEST = "builtin:digits/test"


@pytest.fixture(scope="module")
def fp32_top1(digits_fp32_onnx: Path) -> float:
    top1 = evaluate(digits_fp32_onnx, TEST, "digits")["top1"]
    assert top1 > 93.0, "the fixture model did not train"
    return top1


@pytest.fixture(scope="module")
def tflite_pair(digits_fp32_onnx: Path, digits_calib: np.ndarray, tmp_path_factory: pytest.TempPathFactory) -> QuantizeResult:
    out = tmp_path_factory.mktemp("tfl") / "digits.int8.tflite"
    return quantize_tflite(digits_fp32_onnx, out, digits_calib, progress=False)


def test_ort_qdq_keeps_accuracy_and_shrinks(digits_fp32_onnx: Path, digits_calib: np.ndarray, fp32_top1: float,
                                            tmp_path: Path) -> None:
    out = tmp_path / "q.onnx"
    result = quantize_ort(digits_fp32_onnx, out, digits_calib, progress=False)
    assert result.settings["format"] == "QDQ" and result.settings["per_channel"] and result.settings["activation_type"] == "uint8"
    assert result.paths == {"int8": out} and result.sensitivity is None  # the plain call ranks nothing
    result = evaluate(out, TEST, "digits", reference=digits_fp32_onnx)
    assert abs(fp32_top1 - result["top1"]) <= 1.0
    assert result["agreement"] >= 97.0
    assert out.stat().st_size <= 0.30 * digits_fp32_onnx.stat().st_size
    assert inspect_file(out)["quantization"] == "int8 QDQ"
    manifest = read_manifest(out)
    assert [s["stage"] for s in manifest["stages"]] == ["export", "quantize"]
    assert manifest["source"]["parent"] == digits_fp32_onnx.name


def test_ort_qoperator_s8s8_per_tensor(digits_fp32_onnx: Path, digits_calib: np.ndarray, fp32_top1: float,
                                       tmp_path: Path) -> None:
    out = tmp_path / "qop.onnx"
    settings = OrtQuantSettings(format="QOperator", activation_type="int8", weight_type="int8", per_channel=False)
    quantize_ort(digits_fp32_onnx, out, digits_calib, settings, progress=False)
    info = inspect_file(out)
    assert info["quantization"] == "int8 QOperator" and "QLinearConv" in info["ops"]
    assert abs(fp32_top1 - evaluate(out, TEST, "digits")["top1"]) <= 2.0


def test_tflite_full_integer_keeps_accuracy(tflite_pair: QuantizeResult, digits_fp32_onnx: Path, fp32_top1: float) -> None:
    int8, fp32 = tflite_pair.paths["int8"], tflite_pair.paths["fp32"]
    assert fp32.name == "digits.fp32.tflite"
    info = inspect_file(int8)
    assert info["quantization"] == "full-integer int8 (integer input and output)" and info["float_ops"] == []
    assert info["inputs"][0]["dtype"] == "int8" and info["inputs"][0]["shape"] == [1, 32, 32, 3]
    assert info["outputs"][0]["dtype"] == "int8"
    result = evaluate(int8, TEST, "digits", reference=digits_fp32_onnx)
    assert abs(fp32_top1 - result["top1"]) <= 1.0 and result["agreement"] >= 97.0
    # the FP32 reference is numerically the ONNX model
    assert evaluate(fp32, TEST, "digits", reference=digits_fp32_onnx)["agreement"] == 100.0
    from edgekit.manifest import sha256_file

    assert sha256_file(digits_fp32_onnx) == read_manifest(digits_fp32_onnx)["sha256"]  # onnx2tf got a copy
    manifest = read_manifest(int8)
    assert manifest["input"]["layout"] == "NHWC" and manifest["input"]["quantization"]["scale"] > 0
    assert manifest["stages"][-1]["backend"] == "tflite" and manifest["stages"][-1]["full_integer"]


def test_tflite_float_io_option(digits_fp32_onnx: Path, digits_calib: np.ndarray, tmp_path: Path) -> None:
    out = tmp_path / "fio.tflite"
    quantize_tflite(digits_fp32_onnx, out, digits_calib[:50], float_io=True, write_fp32=False, progress=False)
    info = inspect_file(out)
    assert info["inputs"][0]["dtype"] == "float32" and info["quantization"] != "none (float)"
    assert "QUANTIZE" in info["ops"] and "CONV_2D" in info["ops"]
    assert not (tmp_path / "fio.fp32.tflite").exists()


def test_the_same_tflite_conversion_twice_in_one_process_writes_the_same_bytes(digits_fp32_onnx: Path,
                                                                                digits_calib: np.ndarray,
                                                                                tmp_path: Path) -> None:
    """Keras numbered its auto-named layers per process and the .tflite carries the names: a second
    conversion of the same model (a pipeline, a sweep, a notebook) wrote other bytes than the first."""
    first, second = tmp_path / "first.tflite", tmp_path / "second.tflite"
    for out in (first, second):
        quantize_tflite(digits_fp32_onnx, out, digits_calib[:50], write_fp32=False, progress=False)
    assert first.read_bytes() == second.read_bytes()


def test_the_tflite_conversion_runs_no_command_found_on_path(digits_fp32_onnx: Path, digits_calib: np.ndarray,
                                                             tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """onnx2tf ran ``onnxsim`` from PATH when there was one (an activated venv) and went on without it
    otherwise, so the same inputs gave other bytes (FastViT-T8). A stand-in ``onnxsim`` first on PATH
    would leave a mark; the conversion must not run it."""
    bin_dir, mark = tmp_path / "bin", tmp_path / "onnxsim-ran"
    bin_dir.mkdir()
    (bin_dir / "onnxsim").write_text(f"#!/bin/sh\ntouch {mark}\nexit 1\n")
    (bin_dir / "onnxsim").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    quantize_tflite(digits_fp32_onnx, tmp_path / "q.tflite", digits_calib[:50], write_fp32=False, progress=False)
    assert (tmp_path / "q.tflite").exists() and not mark.exists()


def test_broken_tflite_is_a_clear_error_not_a_crash(tflite_pair: QuantizeResult, tmp_path: Path) -> None:
    from edgekit.errors import EdgekitError
    from edgekit.runtime.verify import verify_tflite

    data = tflite_pair.output.read_bytes()
    broken = tmp_path / "broken.tflite.part"  # what quantize checks: its temporary file, named as its output
    broken.write_bytes(data[: len(data) // 3])
    with pytest.raises(EdgekitError, match=r"^out\.tflite: (not a loadable TFLite model|the TFLite interpreter crashed)"):
        verify_tflite(broken, invoke=True, any_name=True, label="out.tflite")


def test_cli_both_backends_and_eval_json(digits_fp32_onnx: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ort_out = tmp_path / "cli.int8.onnx"
    assert main(["quantize", str(digits_fp32_onnx), "--backend", "ort", "--calib", "builtin:digits/train",
                 "--recipe", "digits", "--num-samples", "100", "-o", str(ort_out)]) == 0
    assert "most sensitive layers" in capsys.readouterr().out
    ranking = read_manifest(ort_out)["stages"][-1]["sensitivity"]
    assert ranking and ranking[0]["sqnr_db"] <= ranking[-1]["sqnr_db"]
    conv_rows = [r for r in ranking if r["op"] == "Conv"]
    assert conv_rows and all(r["weight_sqnr_db"] > 30 for r in conv_rows)  # 8-bit per-channel weights
    tfl_out = tmp_path / "cli.int8.tflite"
    assert main(["quantize", str(digits_fp32_onnx), "--backend", "tflite", "--calib", "builtin:digits/train",
                 "--recipe", "digits", "--num-samples", "100", "-o", str(tfl_out)]) == 0
    assert (tmp_path / "cli.fp32.tflite").exists()
    report = tmp_path / "eval.json"
    assert main(["eval", str(tfl_out), "--data", TEST, "--recipe", "digits", "--reference", str(digits_fp32_onnx),
                 "--json", str(report)]) == 0
    document = json.loads(report.read_text())
    assert document["schema"] == "edgekit.eval/1" and document["num_samples"] == 269
    assert document["top1"] > 90 and document["agreement"] > 95


def test_accuracy_budget_and_auto(digits_fp32_onnx: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "budget.onnx"
    assert main(["quantize", str(digits_fp32_onnx), "--backend", "ort", "--calib", "builtin:digits/train",
                 "--recipe", "digits", "--num-samples", "100", "--accuracy-budget", "0.5", "--eval", TEST,
                 "-o", str(out)]) == 0
    budget = read_manifest(out)["stages"][-1]["accuracy_budget"]
    assert budget["met"] and budget["fp32_top1"] - budget["top1"] <= 0.5
    auto_out = tmp_path / "auto.onnx"
    assert main(["quantize", str(digits_fp32_onnx), "--backend", "ort", "--calib", "builtin:digits/train",
                 "--recipe", "digits", "--num-samples", "100", "--auto", "--eval", TEST, "-o", str(auto_out)]) == 0
    text = capsys.readouterr().out
    assert "auto: chose" in text and "QOperator S8S8 per-channel" in text
    rows = read_manifest(auto_out)["stages"][-1]["auto"]
    assert rows[0]["config"] == "FP32" and len(rows) == 7
    assert any(r["config"] == "QDQ U8S8 7-bit per-channel" for r in rows)


def test_reduce_range_follows_the_cpu(tmp_path: Path) -> None:
    """7-bit weights exactly where ORT's U8S8 kernels saturate: x86-64 without VNNI."""
    from edgekit.isa import u8s8_saturates
    from edgekit.targets import load_target

    assert u8s8_saturates("x86_64", ["avx2", "fma"])
    assert not u8s8_saturates("x86_64", ["avx2", "avx512f", "avx512_vnni"])
    assert not u8s8_saturates("aarch64", ["asimd", "asimddp"])
    assert load_target("x86-64-avx2").ort_settings["reduce_range"] is True
    assert load_target("x86-64-avx512-vnni").ort_settings["reduce_range"] is False
    assert load_target("rpi4").ort_settings["reduce_range"] is False
    mine = tmp_path / "old-xeon.yaml"  # a user's profile that does not say: derived from its ISA
    mine.write_text("name: old-xeon\ndescription: a Haswell box\narch: x86_64\nisa_features: [avx2]\ncores: 4\nthreads: 4\nruntimes: [onnxruntime]\n")
    assert load_target(str(mine)).ort_settings["reduce_range"] is True


def test_budget_candidates_cover_every_weighted_layer(digits_fp32_onnx: Path, digits_calib: np.ndarray,
                                                      tmp_path: Path) -> None:
    """Conv+Relu fuse, so the ranking names Relus; the search must still reach every Conv, the first included."""
    import onnx

    from edgekit.quantize.ort.sensitivity import budget_candidates, layer_sensitivity

    out = tmp_path / "q.onnx"
    quantize_ort(digits_fp32_onnx, out, digits_calib, progress=False)
    model = onnx.load(str(digits_fp32_onnx))
    ranking = layer_sensitivity(model, digits_fp32_onnx, out, digits_calib[:8])
    weighted = [n.name for n in model.graph.node if n.op_type in ("Conv", "Gemm")]
    candidates = budget_candidates(model, ranking)
    assert sorted(candidates) == sorted(weighted)
    ranked_weighted = [r["node"] for r in ranking if r["op"] in ("Conv", "Gemm")]
    assert candidates[:len(ranked_weighted)] != [] and set(ranked_weighted) <= set(candidates)
    quantize_ort(digits_fp32_onnx, out, digits_calib, nodes_to_exclude=candidates, force=True, progress=False)
    graph = onnx.load(str(out)).graph
    dequantized = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    assert not any(n.input[1] in dequantized for n in graph.node if n.op_type in ("Conv", "Gemm")), \
        "every weighted layer excluded, yet a weight is still quantized"


def test_host_specific_accuracy_is_flagged(digits_fp32_onnx: Path, digits_calib: np.ndarray, fp32_top1: float,
                                           tmp_path: Path) -> None:
    """8-bit U8S8 weights: on an x86 CPU without VNNI the accuracy measured here is the host's, and eval says so."""
    import platform

    from edgekit.isa import host_isa_flags, u8s8_saturates

    out = tmp_path / "u8s8.onnx"
    quantize_ort(digits_fp32_onnx, out, digits_calib, OrtQuantSettings(reduce_range=False), progress=False)
    result = evaluate(out, TEST, "digits")
    assert (result["warning"] is not None) == u8s8_saturates(platform.machine(), host_isa_flags())
    safe = tmp_path / "u8s7.onnx"
    quantize_ort(digits_fp32_onnx, safe, digits_calib, OrtQuantSettings(reduce_range=True), progress=False)
    result = evaluate(safe, TEST, "digits")
    assert result["warning"] is None and abs(fp32_top1 - result["top1"]) <= 1.0


@pytest.mark.parametrize(("args", "message"), [
    (["--backend", "ort", "--recipe", "imagenet"], "model input 'input' has shape [1, 3, 32, 32], calibration tensors have [3, 224, 224] per item"),
    (["--backend", "ort", "--recipe", "digits", "--accuracy-budget", "1"], "--accuracy-budget: needs --eval"),
    (["--runtime", "tflite", "--recipe", "digits", "-o", "{tmp}/x.onnx"], "--runtime tflite writes a .tflite file"),
    (["--backend", "ort", "--recipe", "nope"], "--recipe: no recipe named 'nope'"),
])
def test_quantize_bad_input(args: list[str], message: str, digits_fp32_onnx: Path, tmp_path: Path,
                            capsys: pytest.CaptureFixture[str]) -> None:
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    if "-o" not in args:
        args += ["-o", str(tmp_path / "out.onnx")]
    code = main(["quantize", str(digits_fp32_onnx), "--calib", "builtin:digits/train", "--num-samples", "20", *args])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1
    assert [p.name for p in tmp_path.iterdir()] == []


def test_quantize_refuses_corrupt_onnx_and_existing_output(tmp_path: Path, digits_fp32_onnx: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx")
    assert main(["quantize", str(bad), "--backend", "ort", "--calib", "builtin:digits/train", "--recipe", "digits",
                 "-o", str(tmp_path / "o.onnx")]) == 2
    assert "bad.onnx: not a valid ONNX model" in capsys.readouterr().err
    existing = tmp_path / "exists.tflite"
    existing.write_bytes(b"old")
    assert main(["quantize", str(digits_fp32_onnx), "--backend", "tflite", "--calib", "builtin:digits/train",
                 "--recipe", "digits", "-o", str(existing)]) == 2
    assert "exists.tflite: already exists (use --force to overwrite)" in capsys.readouterr().err
    assert existing.read_bytes() == b"old"


@pytest.mark.parametrize("runtime,mode", [("onnxruntime", "static"), ("tflite", "static"), ("onnxruntime", "dynamic"),
                                          ("tflite", "fp16")])
def test_an_already_quantized_model_is_refused_in_one_line(tmp_path: Path, runtime: str, mode: str,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """Given as the FP32 model, a QDQ model made ONNX Runtime fail on duplicate node names (an internal
    error) and onnx2tf mistranslate it; every mode of both runtimes now names the file."""
    import onnx
    from onnx import TensorProto, helper

    scale, zero = helper.make_tensor("s", TensorProto.FLOAT, [], [0.02]), helper.make_tensor("z", TensorProto.UINT8, [], [128])
    graph = helper.make_graph(
        [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]), helper.make_node("DequantizeLinear", ["q", "s", "z"], ["d"]),
         helper.make_node("GlobalAveragePool", ["d"], ["y"])], "qdq",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 1, 1])], [scale, zero])
    quantized = tmp_path / "int8.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8), quantized)
    out = tmp_path / ("o.tflite" if runtime == "tflite" else "o.onnx")
    calib = ["--calib", "builtin:digits/train", "--recipe", "digits", "--num-samples", "8"] if mode == "static" else []
    code = main(["quantize", str(quantized), "--runtime", runtime, "--mode", mode, *calib, "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and f"{quantized}: already quantized (int8 QDQ)" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["int8.onnx"]


def test_a_channels_last_model_input_is_named_as_such(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A TensorFlow-born ONNX model takes NHWC: the error says so, not just that the shapes differ."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Transpose", ["x"], ["t"], perm=[0, 3, 1, 2]), helper.make_node("GlobalAveragePool", ["t"], ["y"])],
        "nhwc", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 32, 32, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 1, 1])])
    model = tmp_path / "nhwc.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8), model)
    code = main(["quantize", str(model), "--runtime", "onnxruntime", "--calib", "builtin:digits/train", "--recipe",
                 "digits", "--num-samples", "8", "-o", str(tmp_path / "o.onnx")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "input 'x' is channels-last [1, 32, 32, 3] (NHWC)" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nhwc.onnx"]


@pytest.mark.slow
def test_torchvision_mobilenet_v2_both_backends(tmp_path: Path) -> None:
    """A real 224x224 torchvision model end to end, calibrated on images written to disk."""
    import torch
    import torchvision
    from PIL import Image

    from edgekit.data import calibration_tensors
    from edgekit.export import export_onnx
    from edgekit.runtime import open_runner

    rng = np.random.default_rng(0)
    (tmp_path / "imgs").mkdir()
    for i in range(24):  # smooth random images: blobs, not white noise
        small = rng.integers(0, 255, (6, 8, 3), dtype=np.uint8)
        Image.fromarray(small).resize((320, 240), Image.BICUBIC).save(tmp_path / "imgs" / f"{i}.jpg")
    calib = calibration_tensors(tmp_path / "imgs", "imagenet", 24, progress=False)
    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v2(num_classes=10)
    # Random weights make activations vanish (outputs ~1e-9); re-estimating batch-norm statistics
    # on the images gives the unit-scale activations a trained network has.
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None
    model.train()
    with torch.no_grad():
        model(torch.from_numpy(calib))
    model.eval()
    onnx_path = tmp_path / "mv2.onnx"
    export_onnx(model, torch.zeros(1, 3, 224, 224), onnx_path)
    quantize_ort(onnx_path, tmp_path / "mv2.int8.onnx", calib, progress=False)
    quantize_tflite(onnx_path, tmp_path / "mv2.int8.tflite", calib, progress=False)
    reference = open_runner(str(onnx_path)).predict(calib[:8])
    for name in ("mv2.int8.onnx", "mv2.int8.tflite", "mv2.fp32.tflite"):
        got = open_runner(str(tmp_path / name)).predict(calib[:8])
        cosine = np.sum(got * reference, 1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(reference, axis=1))
        assert cosine.min() > (0.999 if "fp32" in name else 0.9), name


def test_eval_bad_input(digits_fp32_onnx: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", str(digits_fp32_onnx), "--data", TEST, "--recipe", "imagenet", "--num-samples", "4"]) == 2
    err = capsys.readouterr().err
    assert "model input has shape [1, 3, 32, 32], the data makes [4, 3, 224, 224]" in err and err.count("\n") == 1
    assert main(["eval", str(tmp_path / "none.tflite"), "--data", TEST, "--recipe", "digits"]) == 2
    assert "none.tflite: artifact not found" in capsys.readouterr().err
    assert main(["eval", str(digits_fp32_onnx), "--data", str(tmp_path / "val"), "--recipe", "digits"]) == 2
    assert "val: data folder not found" in capsys.readouterr().err


def test_quantize_result_from_both_backends(tflite_pair: QuantizeResult, digits_fp32_onnx: Path,
                                            digits_calib: np.ndarray, tmp_path: Path) -> None:
    """One typed result; ``stage()`` is what the manifest holds, with the keys the report reads."""
    ort = quantize_ort(digits_fp32_onnx, tmp_path / "r.onnx", digits_calib[:64], progress=False)
    for result, backend in ((ort, "ort"), (tflite_pair, "tflite")):
        assert result.backend == backend and result.output.is_file()
        assert all(p.is_file() for p in result.artifacts())
        assert read_manifest(result.output)["stages"][-1] == json.loads(json.dumps(result.stage()))
        assert {"stage", "backend", "label", "calibration", "seconds"} <= result.stage().keys()
    assert ort.settings["activation_type"] == "uint8" and ort.stage()["reduce_range"] in (True, False)
    assert not ort.full_integer and ort.timings["total_s"] > 0
    assert tflite_pair.full_integer and tflite_pair.float_ops == [] and tflite_pair.artifacts()[1].name == "digits.fp32.tflite"


def test_one_settings_model_for_profile_pipeline_and_flags(digits_fp32_onnx: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """A value set in a profile, in the pipeline YAML or by a flag goes through the one model, in the
    order host default <- profile <- explicit; the CLI's flags are generated from the model."""
    import argparse
    import typing

    import yaml

    from edgekit.pipeline.config import parse_config
    from edgekit.quantize.ort import resolve_settings
    from edgekit.quantize.ort.settings import add_arguments, from_arguments
    from edgekit.targets import load_target

    profile_path = tmp_path / "lab.yaml"
    profile_path.write_text(yaml.safe_dump({
        "name": "lab", "description": "an ARM board", "arch": "aarch64", "isa_features": ["asimd"], "cores": 4,
        "threads": 4, "runtimes": ["onnxruntime"],
        "onnxruntime": {"activation_type": "int8", "calibrate_method": "Entropy", "per_channel": True}}))
    profile = load_target(str(profile_path))
    pipeline = parse_config({"model": {"source": "edgekit.zoo:digits_cnn", "input_shape": [1, 3, 32, 32]},
                             "data": {"recipe": "digits", "calib": "c", "eval": "e"},
                             "quantize": {"ort": {"per_channel": False}}}, "pipeline.yaml")
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    flags = parser.parse_args(["--format", "QOperator", "--reduce-range"])
    assert type(profile.onnxruntime) is type(pipeline.quantize.ort) is OrtQuantSettings
    choices = {a.dest: a.choices for a in parser._actions if a.choices}
    assert choices["activation_type"] == typing.get_args(OrtQuantSettings.model_fields["activation_type"].annotation)

    from_pipeline = resolve_settings(profile, pipeline.quantize.ort)
    assert (from_pipeline.activation_type, from_pipeline.calibrate_method) == ("int8", "Entropy")  # the profile's
    assert from_pipeline.per_channel is False and from_pipeline.format == "QDQ"  # the pipeline's, the default
    assert from_pipeline.reduce_range is False  # decided by the profile's ISA: ARM sums in 32 bits
    assert resolve_settings(None, pipeline.quantize.ort).activation_type == "uint8"  # no target: host default
    from_flags = resolve_settings(profile, from_arguments(flags))
    assert (from_flags.format, from_flags.reduce_range, from_flags.per_channel) == ("QOperator", True, True)

    out = tmp_path / "lab.int8.onnx"  # and the command line itself, through a real quantization
    assert main(["quantize", str(digits_fp32_onnx), "--backend", "ort", "--calib", "builtin:digits/train",
                 "--recipe", "digits", "--num-samples", "32", "--target", str(profile_path), "--format", "QOperator",
                 "--reduce-range", "-o", str(out)]) == 0
    stage = read_manifest(out)["stages"][-1]
    assert {k: stage[k] for k in from_flags.as_dict()} == from_flags.as_dict()
    assert inspect_file(out)["quantization"] == "int8 QOperator"
    assert stage["sensitivity"] is None and "QOperator" in stage["sensitivity_note"]
    capsys.readouterr()


def _hardswish_se_onnx(path: Path) -> Path:
    """MobileNetV3's ingredients in miniature: hardswish and squeeze-excitation."""
    import torch
    from torch import nn
    from torchvision.ops import SqueezeExcitation

    from edgekit.export import export_onnx

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.Hardswish(),
                          SqueezeExcitation(8, 4, scale_activation=nn.Hardsigmoid), nn.Conv2d(8, 8, 3, padding=1),
                          nn.Hardswish(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10)).eval()
    export_onnx(model, torch.zeros(1, 3, 32, 32), path)
    return path


def test_sensitivity_survives_graphs_that_trip_ort_helper(digits_calib: np.ndarray, tmp_path: Path) -> None:
    """ORT's pre-processing inlines HardSwish (tensors ``_inlfunc_HardSwish_*`` the float model lacks), and
    ORT's ``compute_activation_error`` then raised ``KeyError: 'float'`` after the INT8 file was written."""
    import onnx
    from onnxruntime.quantization.qdq_loss_debug import (
        collect_activations, compute_activation_error, create_activation_matching,
        modify_model_output_intermediate_tensors,
    )

    from edgekit.quantize.ort import quantize_ort_workflow

    fp32 = _hardswish_se_onnx(tmp_path / "hs.onnx")
    out = tmp_path / "hs.int8.onnx"
    lines: list[str] = []
    result = quantize_ort_workflow(fp32, out, digits_calib[:32], progress=False, log=lines.append)
    assert result.sensitivity and result.sensitivity_note is None  # ranked, no failure turned into a note
    assert not [line for line in [*lines, *result.warnings] if "sensitiv" in line.lower()]
    assert {r["op"] for r in result.sensitivity} >= {"Conv", "HardSwish"}
    assert read_manifest(out)["stages"][-1]["sensitivity"] == result.sensitivity[:25]
    # the old code path, on the very same pair of models, still trips ORT's helper: the test can fail
    aug_f, aug_q = str(tmp_path / "f.onnx"), str(tmp_path / "q.onnx")
    modify_model_output_intermediate_tensors(str(fp32), aug_f)
    modify_model_output_intermediate_tensors(str(out), aug_q)
    feeds = [{"input": x[None]} for x in digits_calib[:2]]
    matching = create_activation_matching(collect_activations(aug_q, iter(feeds)), collect_activations(aug_f, iter(feeds)))
    assert any("float" not in m for m in matching), "ORT no longer adds tensors the float model lacks"
    with pytest.raises(KeyError, match="float"):
        compute_activation_error(matching)
    assert onnx.load(str(out)).graph.node  # the INT8 model is whole


def test_a_failed_ranking_is_a_reason_not_an_error(digits_fp32_onnx: Path, digits_calib: np.ndarray,
                                                   tmp_path: Path) -> None:
    import onnx

    from edgekit.quantize.ort.sensitivity import ranking_or_reason

    broken = tmp_path / "broken.int8.onnx"
    broken.write_bytes(digits_fp32_onnx.read_bytes()[:5000])
    ranking, reason = ranking_or_reason(onnx.load(str(digits_fp32_onnx)), digits_fp32_onnx, broken,
                                        digits_calib[:2], OrtQuantSettings())
    assert ranking is None and reason.startswith("per-layer sensitivity not computed (") and "\n" not in reason


def test_pipeline_honours_the_accuracy_budget(digits_cnn_model, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``quantize.accuracy_budget`` runs the library's budget search on ``data.eval``, and is in the stage key."""
    import torch
    import yaml

    weights = tmp_path / "digits.pth"
    torch.save(digits_cnn_model.state_dict(), weights)
    config = {"name": "budget", "model": {"source": "edgekit.zoo:digits_cnn", "kwargs": {"width": 32},
                                          "weights": str(weights), "input_shape": [1, 3, 32, 32]},
              "data": {"recipe": "digits", "calib": "builtin:digits/train", "eval": TEST},
              "prune": None, "distill": None,
              "quantize": {"num_samples": 64, "tflite": None, "accuracy_budget": 1.0}, "bench": {"targets": []}}
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(config))
    run = tmp_path / "run"
    assert main(["run", str(path), "--output", str(run)]) == 0
    assert "accuracy budget: 0 layer(s) in float" in capsys.readouterr().out
    stage = read_manifest(run / "artifacts" / "int8.onnx")["stages"][-1]
    budget = stage["accuracy_budget"]
    assert budget["met"] and budget["budget"] == 1.0 and budget["fp32_top1"] - budget["top1"] <= 1.0
    assert stage["nodes_excluded"] == budget["excluded"] and stage["sensitivity"]
    assert budget["fp32_top1"] == evaluate(run / "artifacts" / "fp32.onnx", TEST, "digits")["top1"]
    assert budget["top1"] == evaluate(run / "artifacts" / "int8.onnx", TEST, "digits")["top1"]
    config["quantize"]["accuracy_budget"] = 0.0  # the budget is part of quantize's key; 0 may need exclusions
    path.write_text(yaml.safe_dump(config))
    code = main(["run", str(path), "--output", str(run), "--only", "quantize"])
    out, err = capsys.readouterr()
    assert "[quantize] running" in out
    if code == 0:
        budget = read_manifest(run / "artifacts" / "int8.onnx")["stages"][-1]["accuracy_budget"]
        assert budget["budget"] == 0.0 and budget["top1"] >= budget["fp32_top1"]
    else:  # activations stay INT8, so even every weighted layer in float can miss a zero budget
        assert code == 2 and "quantize.accuracy_budget 0.0: not met even with every weighted layer in float" in err
