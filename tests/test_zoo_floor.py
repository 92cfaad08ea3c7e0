"""benchmarks/zoo.py's rounding floor: what one INT8 step of rounding at every Conv/Linear input costs
an FP32 net, the figure each zoo row's INT8 cosine is read against."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import zoo  # noqa: E402


def _net(depth: int, gain: float) -> torch.nn.Module:
    torch.manual_seed(0)
    layers: list[torch.nn.Module] = [torch.nn.Conv2d(3, 16, 3, padding=1)]
    for _ in range(depth):
        conv = torch.nn.Conv2d(16, 16, 3, padding=1)
        torch.nn.init.orthogonal_(conv.weight, gain=gain)
        layers += [torch.nn.Tanh(), conv]
    return torch.nn.Sequential(*layers, torch.nn.Flatten(), torch.nn.LazyLinear(10)).eval()


def test_the_floor_is_near_one_for_a_shallow_net_lower_for_a_chaotic_one_and_leaves_the_net_as_it_was() -> None:
    rng = np.random.default_rng(0)
    calib, held_out = (rng.normal(size=(8, 3, 8, 8)).astype(np.float32) for _ in range(2))
    shallow, chaotic = _net(1, 1.0), _net(12, 4.0)
    with torch.no_grad():
        shallow(torch.from_numpy(held_out)), chaotic(torch.from_numpy(held_out))  # LazyLinear gets its shape
        before = chaotic(torch.from_numpy(held_out)).numpy()
    shallow_floor, chaotic_floor = zoo.rounding_floor(shallow, calib, held_out), zoo.rounding_floor(chaotic, calib, held_out)
    assert 0.999 < shallow_floor < 1.0
    assert chaotic_floor < shallow_floor - 0.01, (chaotic_floor, shallow_floor)
    assert zoo.rounding_floor(chaotic, calib, held_out) == chaotic_floor  # seeded: the same figure twice
    with torch.no_grad():
        assert np.array_equal(chaotic(torch.from_numpy(held_out)).numpy(), before)  # no hook left behind


def test_redo_of_an_unknown_stage_is_one_line_exit_2_and_leaves_the_rows_as_they_were(tmp_path: Path) -> None:
    import subprocess

    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"arch": "resnet18", "size": 128, "stages": {}}\n')
    done = subprocess.run([sys.executable, zoo.__file__, "--size", "128", "--rows", str(rows), "--only", "resnet18",
                           "--redo", "ort,onnx"], capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.strip() == "--redo: onnx is not a quantization stage (ort, tflite)"
    assert rows.read_text() == '{"arch": "resnet18", "size": 128, "stages": {}}\n'


def test_a_digits_row_whose_training_stayed_at_chance_is_shown_but_not_in_the_fidelity_medians() -> None:
    def row(arch: str, top1: float, cosine: float) -> dict:
        stages = {"build": {"ok": True, "val_top1": top1}, "ort": {"ok": True, "cosine": cosine},
                  "export": {"ok": True, zoo.ROUNDING: cosine}}
        return {"arch": arch, "stages": stages}

    rows = [row("a", 45.0, 0.998), row("b", 50.0, 0.994), row("constant", 10.0, 1.0)]  # 10%: chance, cosine 1.0
    line = zoo.coverage(rows)
    assert "ort 3/3" in line and "leave out 1 row(s)" in line and ": constant;" in line, line
    assert "median ort cosine 0.9960 (n=2" in line and "median rounding floor 0.9960 (n=2" in line, line
    assert zoo.built(rows[2]["stages"]["build"]) == "ok (digits 10%, not learned)"
    assert zoo.built(rows[0]["stages"]["build"]) == "ok (digits 45%)"


def test_a_digits_trained_net_keeps_batchnorm_statistics_of_its_final_weights_on_the_training_images() -> None:
    """The calibration leaves BatchNorm's momentum None (a running average since the calibration): trained
    so, the statistics lagged the weights (mobilenet_v2: 18% top-1 at a training loss of 0.03). A trained
    net's statistics are those of its kept weights on the training images, and its top-1 is what they give."""
    from bench_parity import digits_recipe, set_batchnorm_statistics
    from edgekit.distill.data import as_dataset

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 8, 3, padding=1)
    model = torch.nn.Sequential(conv, torch.nn.BatchNorm2d(8), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                torch.nn.Flatten(), torch.nn.Linear(8, 10))
    set_batchnorm_statistics(model, np.random.default_rng(0).normal(size=(32, 3, 16, 16)).astype(np.float32))
    top1 = zoo.train_on_digits(model, digits_recipe(16))

    train = as_dataset("builtin:digits/train", digits_recipe(16))
    with torch.no_grad():
        features = conv(torch.stack([train[i][0] for i in range(len(train))]))
    assert torch.allclose(model[1].running_mean, features.mean(dim=(0, 2, 3)), atol=1e-4)
    assert not model.training and top1 > zoo.LEARNED_TOP1, top1
