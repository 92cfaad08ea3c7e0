"""The task registry and the evaluation driver: data decoded once, the reference run once, cosine."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import edgekit.data.datasets as datasets
from edgekit.cli import main
from edgekit.errors import EdgekitError
from edgekit.evaluate import evaluate, evaluate_many
from edgekit.export import export_onnx
from edgekit.report.validate import check_eval
from edgekit.tasks import TASKS, get_task

TEST = "builtin:digits/test"


def test_an_unknown_task_is_one_line(digits_fp32_onnx: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "e.json"
    assert main(["eval", str(digits_fp32_onnx), "--data", TEST, "--recipe", "digits", "--task", "detektion",
                 "--json", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--task: 'detektion' is not one of classification" in err and err.count("\n") == 1 and not out.exists()


def test_a_model_without_a_classes_output_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    features = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1)).eval()  # [N, 4, 32, 32]: no classes axis
    path = tmp_path / "features.onnx"
    export_onnx(features, torch.zeros(1, 3, 32, 32), path)
    assert main(["eval", str(path), "--data", TEST, "--recipe", "digits", "--num-samples", "8"]) == 2
    err = capsys.readouterr().err
    assert f"{path}: output shape [1, 4, 32, 32]; the classification task needs a [N, classes] output" in err
    assert err.count("\n") == 1


def test_classification_declares_its_metrics_and_formats() -> None:
    task = get_task("classification")
    assert TASKS["classification"] is task
    assert task.primary_metric(labelled=True).name == "top1" and task.primary_metric(labelled=True).higher_is_better
    assert task.primary_metric(labelled=False).name == "agreement"
    assert set(task.formats) == {"folder", "array", "builtin"}
    with pytest.raises(EdgekitError, match="--task: 'x' is not one of"):
        get_task("x")


def _image_folder(root: Path, per_class: int = 6) -> Path:
    """A real on-disk labelled folder: digits images saved as PNG under class sub-folders."""
    from edgekit.data.datasets import digits_file

    with np.load(digits_file()) as digits:
        images, labels = digits["images"], digits["labels"]
    for label in range(10):
        (root / str(label)).mkdir(parents=True)
        for i, index in enumerate(np.flatnonzero(labels == label)[:per_class]):
            Image.fromarray(images[index]).save(root / str(label) / f"{i}.png")
    return root


def test_evaluate_many_decodes_once_and_matches_per_artifact_evaluate(
        digits_fp32_onnx: Path, digits_calib: np.ndarray, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from edgekit.quantize.ort import quantize_ort

    int8 = tmp_path / "int8.onnx"
    quantize_ort(digits_fp32_onnx, int8, digits_calib, progress=False)
    folder = _image_folder(tmp_path / "images")
    artifacts = [digits_fp32_onnx, int8, digits_fp32_onnx]
    separately = [evaluate(a, str(folder), "digits", reference=digits_fp32_onnx) for a in artifacts]

    decoded: list[int] = []
    real_get = datasets.ImageFolder.get
    monkeypatch.setattr(datasets.ImageFolder, "get", lambda self, i: decoded.append(i) or real_get(self, i))
    together = evaluate_many(artifacts, str(folder), "digits", reference=digits_fp32_onnx)
    assert len(decoded) == 60  # every image decoded once, not once per artifact (3 x 2 x 60 before)
    volatile = ("created",)
    assert [{k: v for k, v in r.as_dict().items() if k not in volatile} for r in together] == \
        [{k: v for k, v in d.items() if k not in volatile} for d in separately]
    fp32, quantized = together[0].as_dict(), together[1].as_dict()
    assert fp32["cosine"] == 1.0 and fp32["agreement"] == 100.0 and fp32["task"] == "classification"
    assert 0.99 < quantized["cosine"] < 1.0  # INT8 changes the logits, only a little
    assert together[1].primary() == ("top1", quantized["top1"], True)
    for document in (fp32, quantized):
        check_eval(json.loads(json.dumps(document)), tmp_path / "e.json")


def test_without_reference_cosine_and_agreement_are_null(digits_fp32_onnx: Path) -> None:
    result = evaluate(digits_fp32_onnx, TEST, "digits", num_samples=20)
    assert result["cosine"] is None and result["agreement"] is None and result["reference"] is None
    assert result["top1"] is not None and result["num_samples"] == 20


def test_eval_cli_passes_the_runtime_through(digits_fp32_onnx: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "e.json"
    assert main(["eval", str(digits_fp32_onnx), "--data", TEST, "--recipe", "digits", "--num-samples", "16",
                 "--runtime", "onnxruntime", "--reference", str(digits_fp32_onnx), "--json", str(out)]) == 0
    assert "cosine 1" in capsys.readouterr().out and json.loads(out.read_text())["cosine"] == 1.0
    with pytest.raises(SystemExit) as exit_:  # --runtime offers the registry's names: argparse refuses others
        main(["eval", str(digits_fp32_onnx), "--data", TEST, "--recipe", "digits", "--num-samples", "16",
              "--runtime", "no-such-runtime"])
    assert exit_.value.code == 2 and "invalid choice: 'no-such-runtime'" in capsys.readouterr().err
