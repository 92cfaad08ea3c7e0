"""INT8 for ONNX Runtime and TFLite on a trained digits CNN: accuracy kept, sizes, checks, failures."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgekit.cli import main
from edgekit.evaluate import evaluate
from edgekit.inspect import inspect_file
from edgekit.manifest import read_manifest
from edgekit.quantize.ort import OrtQuantSettings, quantize_ort
from edgekit.quantize.tflite import quantize_tflite

TEST = "builtin:digits/test"


@pytest.fixture(scope="module")
def fp32_top1(digits_fp32_onnx: Path) -> float:
    top1 = evaluate(digits_fp32_onnx, TEST, "digits")["top1"]
    assert top1 > 93.0, "the fixture model did not train"
    return top1


@pytest.fixture(scope="module")
def tflite_pair(digits_fp32_onnx: Path, digits_calib: np.ndarray, tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("tfl") / "digits.int8.tflite"
    return quantize_tflite(digits_fp32_onnx, out, digits_calib, progress=False)


def test_ort_qdq_keeps_accuracy_and_shrinks(digits_fp32_onnx: Path, digits_calib: np.ndarray, fp32_top1: float,
                                            tmp_path: Path) -> None:
    out = tmp_path / "q.onnx"
    stage = quantize_ort(digits_fp32_onnx, out, digits_calib, progress=False)
    assert stage["format"] == "QDQ" and stage["per_channel"] and stage["activation_type"] == "uint8"
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
    quantize_ort(digits_fp32_onnx, out, digits_calib, OrtQuantSettings("QOperator", "int8", "int8", False),
                 progress=False)
    info = inspect_file(out)
    assert info["quantization"] == "int8 QOperator" and "QLinearConv" in info["ops"]
    assert abs(fp32_top1 - evaluate(out, TEST, "digits")["top1"]) <= 2.0


def test_tflite_full_integer_keeps_accuracy(tflite_pair: dict, digits_fp32_onnx: Path, fp32_top1: float) -> None:
    int8 = Path(tflite_pair["paths"]["int8"])
    fp32 = Path(tflite_pair["paths"]["fp32"])
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


def test_broken_tflite_is_a_clear_error_not_a_crash(tflite_pair: dict, tmp_path: Path) -> None:
    from edgekit.errors import EdgekitError
    from edgekit.runtime.verify import verify_tflite

    data = Path(tflite_pair["paths"]["int8"]).read_bytes()
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
    from edgekit.quantize.ort.settings import u8s8_saturates
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
    ranking = layer_sensitivity(digits_fp32_onnx, out, digits_calib[:8])
    weighted = [n.name for n in onnx.load(str(digits_fp32_onnx)).graph.node if n.op_type in ("Conv", "Gemm")]
    candidates = budget_candidates(digits_fp32_onnx, ranking)
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

    from edgekit.quantize.ort.settings import u8s8_saturates
    from edgekit.runtime.device_runner import isa_flags

    out = tmp_path / "u8s8.onnx"
    quantize_ort(digits_fp32_onnx, out, digits_calib, OrtQuantSettings(reduce_range=False), progress=False)
    result = evaluate(out, TEST, "digits")
    assert (result["warning"] is not None) == u8s8_saturates(platform.machine(), isa_flags())
    safe = tmp_path / "u8s7.onnx"
    quantize_ort(digits_fp32_onnx, safe, digits_calib, OrtQuantSettings(reduce_range=True), progress=False)
    result = evaluate(safe, TEST, "digits")
    assert result["warning"] is None and abs(fp32_top1 - result["top1"]) <= 1.0


@pytest.mark.parametrize(("args", "message"), [
    (["--backend", "ort", "--recipe", "imagenet"], "model input 'input' has shape [1, 3, 32, 32], calibration tensors have [3, 224, 224] per item"),
    (["--backend", "ort", "--recipe", "digits", "--accuracy-budget", "1"], "--accuracy-budget: needs --eval"),
    (["--backend", "tflite", "--recipe", "digits", "-o", "{tmp}/x.onnx"], "--backend tflite writes a .tflite file"),
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
