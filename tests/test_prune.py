"""Structured pruning that really shrinks, distillation that really recovers, sparsify, quantizer maths."""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from edgekit.cli import main
from edgekit.export import export_onnx
from edgekit.manifest import read_manifest
from edgekit.prune import prune
from edgekit.sources import load_model
from edgekit.prune.verify import check_onnx_channels, onnx_weight_shapes, torch_weight_shapes

MODELS = ["resnet18", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0", "shufflenet_v2_x1_0", "regnet_y_400mf"]


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_torchvision_models_prune_export_and_keep_channels(name: str, tmp_path: Path) -> None:
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None, num_classes=10).eval()
    example = torch.randn(1, 3, 96, 96)
    before = torch_weight_shapes(model)
    report = prune(model, example, ratio=0.5, progress=None)
    assert report["macs_after"] < 0.6 * report["macs_before"]
    assert model(example).shape == (1, 10)  # the classifier's width never changes
    assert torch_weight_shapes(model) != before
    result = export_onnx(model, example, tmp_path / f"{name}.onnx")  # includes the parity proof
    assert result.parity.passed
    check_onnx_channels(model, tmp_path / f"{name}.onnx")
    changed = [v["after"][0] for v in report["layers"].values() if v["after"] and v["after"][0] != v["before"][0]]
    assert changed and all(w % 8 == 0 for w in changed), changed  # rounded to the SIMD-friendly multiple


def test_resnet18_half_ratio_shrinks_macs_and_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", "torchvision:resnet18", "--input-shape", "1,3,224,224", "-o", str(tmp_path / "full.onnx")]) == 0
    assert main(["prune", "torchvision:resnet18", "--ratio", "0.5", "--input-shape", "1,3,224,224",
                 "-o", str(tmp_path / "p.pt")]) == 0
    assert main(["export", str(tmp_path / "p.pt"), "--input-shape", "1,3,224,224", "-o", str(tmp_path / "p.onnx")]) == 0
    capsys.readouterr()
    manifest = read_manifest(tmp_path / "p.onnx")
    prune_stage = manifest["stages"][0]
    assert prune_stage["stage"] == "prune" and manifest["stages"][-1]["stage"] == "export"
    assert prune_stage["macs_after"] <= 0.30 * prune_stage["macs_before"]
    assert (tmp_path / "full.onnx").stat().st_size >= 3 * (tmp_path / "p.onnx").stat().st_size
    model = load_model(str(tmp_path / "p.pt")).module
    check_onnx_channels(model, tmp_path / "p.onnx")
    layer = prune_stage["layers"]["layer1.0.conv1"]
    assert layer["before"][0] == 64 and layer["after"][0] == 32


def test_channel_check_catches_a_mismatch(tmp_path: Path) -> None:
    from edgekit.errors import EdgekitError
    from edgekit.zoo import digits_cnn

    small, big = digits_cnn(width=8).eval(), digits_cnn(width=16).eval()
    export_onnx(big, torch.zeros(1, 3, 32, 32), tmp_path / "big.onnx")
    with pytest.raises(EdgekitError, match="channel counts differ"):
        check_onnx_channels(small, tmp_path / "big.onnx")
    assert sum(onnx_weight_shapes(tmp_path / "big.onnx").values()) == sum(torch_weight_shapes(big).values())


def _top1(model: torch.nn.Module) -> float:
    from edgekit.data import load_all, load_recipe, open_dataset

    x, y, _ = load_all(open_dataset("builtin:digits/test", load_recipe("digits")))
    with torch.no_grad():
        return 100.0 * float((model(torch.from_numpy(x)).argmax(1).numpy() == y).mean())


@pytest.mark.slow
def test_distillation_recovers_a_half_macs_digits_cnn(digits_cnn_model: torch.nn.Module) -> None:
    from edgekit.distill import train

    teacher = digits_cnn_model
    teacher_top1 = _top1(teacher)
    student = copy.deepcopy(teacher)
    report = prune(student, torch.zeros(1, 3, 32, 32), target_macs=0.5, importance="l2", progress=None)
    assert report["macs_after"] <= 0.5 * report["macs_before"]
    pruned_only = _top1(student)
    train(student, "builtin:digits/train", "digits", teacher=teacher, val_source="builtin:digits/val", epochs=6,
          lr=2e-3, alpha=0.7, temperature=4.0, progress=False, log=lambda _: None)
    distilled = _top1(student)
    assert distilled >= teacher_top1 - 1.0, (teacher_top1, distilled)
    assert distilled > pruned_only + 1.0, (pruned_only, distilled)  # distillation measurably helps


def test_pure_distillation_from_unlabelled_images(digits_cnn_model: torch.nn.Module, tmp_path: Path) -> None:
    """No labels at all: the teacher's soft targets alone recover accuracy."""
    from edgekit.data import load_all, load_recipe, open_dataset
    from edgekit.distill import train

    x, _, _ = load_all(open_dataset("builtin:digits/train", load_recipe("digits")))
    np.save(tmp_path / "unlabelled.npy", x)  # tensors, no labels
    student = copy.deepcopy(digits_cnn_model)
    prune(student, torch.zeros(1, 3, 32, 32), ratio=0.5, progress=None)
    before = _top1(student)
    history = train(student, str(tmp_path / "unlabelled.npy"), "digits", teacher=digits_cnn_model, epochs=3,
                    lr=2e-3, progress=False, log=lambda _: None, checkpoint_dir=tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "last.pt").exists() and len(history["epochs"]) == 3
    assert _top1(student) > max(before, 90.0)


def test_prune_cli_with_distillation_and_target_profile(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from edgekit.zoo import digits_cnn

    torch.save(digits_cnn(width=16), tmp_path / "m.pt")
    out = tmp_path / "small.pt"
    assert main(["prune", str(tmp_path / "m.pt"), "--ratio", "0.5", "--target", "rpi5", "--distill", "--train",
                 "builtin:digits/val", "--recipe", "digits", "--epochs", "1", "-o", str(out)]) == 0
    stages = read_manifest(out)["stages"]
    assert [s["stage"] for s in stages] == ["prune", "distill"] and stages[0]["round_to"] == 16
    assert load_model(str(out), arch=str(tmp_path / "m.pt")).module(torch.zeros(1, 3, 32, 32)).shape == (1, 10)
    capsys.readouterr()


@pytest.mark.parametrize(("args", "message"), [
    (["--ratio", "0.5", "--importance", "magic"], "--importance: 'magic' is not one of l1, l2, bn, taylor"),
    (["--ratio", "1.5"], "--ratio: must be in (0, 1)"),
    (["--ratio", "0.5", "--distill", "--train", "{tmp}/nope", "--recipe", "digits"], "nope: data folder not found"),
    (["--ratio", "0.5", "--distill"], "--distill: needs --train DATA and --recipe NAME"),
    (["--ratio", "0.5", "--protect", "no.such.layer"], "--protect: no layer named 'no.such.layer'"),
])
def test_prune_bad_input(args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    out = tmp_path / "out.pt"
    assert main(["prune", "edgekit.zoo:digits_cnn", "--input-shape", "1,3,32,32", *args, "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not out.exists() and not list(tmp_path.glob("*.part"))


def test_prune_refuses_to_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "o.pt"
    out.write_bytes(b"keep")
    assert main(["prune", "edgekit.zoo:digits_cnn", "--input-shape", "1,3,32,32", "--ratio", "0.5", "-o", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err and out.read_bytes() == b"keep"


def test_sparsify_is_honest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "s.pt"
    assert main(["sparsify", "edgekit.zoo:digits_cnn", "--sparsity", "0.7", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "NOT faster" in text
    stage = read_manifest(out)["stages"][0]
    assert stage["sparsity"] == pytest.approx(0.7, abs=0.01)
    assert stage["gzip_bytes_after"] < 0.7 * stage["gzip_bytes_before"]
    model = load_model(str(out)).module
    conv = model.features[0][0]
    assert not hasattr(conv, "weight_orig")  # permanent, no pruning re-parametrisation left
    assert conv.weight.shape == (32, 3, 3, 3)  # shapes unchanged: dense kernels do the same work


def test_sparsify_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "s.pt"
    assert main(["sparsify", "edgekit.zoo:digits_cnn", "--sparsity", "1.5", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--sparsity: must be in [0, 1)" in err and err.count("\n") == 1 and not out.exists()
    assert main(["sparsify", "edgekit.zoo:digits_cnn", "--sparsity", "0.5", "-o", str(tmp_path / "s.onnx")]) == 2
    assert "s.onnx: the output must end in .pt or .pth" in capsys.readouterr().err  # .pt2 needs an example input


def test_taylor_importance_ranks_on_real_batches_when_given_training_data() -> None:
    """Random inputs and real digits give different gradients, so different channels survive: if
    the training data were ignored both prunings would keep the very same weights."""
    from edgekit.prune import PruneSettings
    from edgekit.prune.workflow import prune_step
    from edgekit.zoo import digits_cnn

    torch.manual_seed(0)
    original = digits_cnn(width=16).eval()
    settings = PruneSettings(ratio=0.5, importance="taylor", round_to=4)
    on_random, on_data = copy.deepcopy(original), copy.deepcopy(original)
    random_report = prune_step(on_random, torch.zeros(1, 3, 32, 32), settings, progress=None)
    data_report = prune_step(on_data, torch.zeros(1, 3, 32, 32), settings, train="builtin:digits/train",
                             recipe="digits", progress=None)
    assert random_report.macs_after == data_report.macs_after  # same widths...
    kept = zip(on_random.state_dict().values(), on_data.state_dict().values())
    assert not all(torch.equal(a, b) for a, b in kept)  # ...different channels


def test_cli_and_pipeline_write_the_same_prune_and_distill_stages(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from edgekit.pipeline.config import PipelineConfig
    from edgekit.pipeline.stages import StepContext
    from edgekit.pipeline.steps import distill, prune as prune_stage, train_baseline
    from edgekit.zoo import digits_cnn

    torch.save(digits_cnn(width=8), tmp_path / "m.pt")
    out = tmp_path / "small.pt"
    assert main(["prune", str(tmp_path / "m.pt"), "--ratio", "0.5", "--round-to", "4", "--importance", "taylor",
                 "--distill", "--train", "builtin:digits/val", "--recipe", "digits", "--epochs", "1", "-o", str(out)]) == 0
    cli = read_manifest(out)["stages"]
    config = PipelineConfig.model_validate({
        "name": "t", "model": {"source": "edgekit.zoo:digits_cnn", "kwargs": {"width": 8}, "input_shape": [1, 3, 32, 32]},
        "data": {"recipe": "digits", "calib": "builtin:digits/val", "eval": "builtin:digits/val",
                 "train": "builtin:digits/val"},
        "prune": {"ratio": 0.5, "round_to": 4, "importance": "taylor"}, "distill": {"epochs": 1}})
    ctx = StepContext(config=config, run_dir=tmp_path / "run", log=lambda _: None)
    baseline = train_baseline(ctx, [])[0]
    pruned = prune_stage(ctx, [baseline])[0]
    piped = read_manifest(distill(ctx, [pruned, baseline])[0])["stages"]
    capsys.readouterr()
    assert [s["stage"] for s in cli] == [s["stage"] for s in piped] == ["prune", "distill"]
    for ours, theirs in zip(cli, piped):
        assert set(ours) == set(theirs), set(ours) ^ set(theirs)
    assert cli[0]["macs"] == piped[0]["macs"] == cli[0]["macs_after"] < cli[0]["macs_before"]
    assert cli[1]["epochs"] == piped[1]["epochs"] == 1 and len(cli[1]["history"]) == len(piped[1]["history"]) == 1


class _FixedWidthReshape(torch.nn.Module):
    """forward() reshapes by a constant 16 channels: any pruning of ``head.0`` breaks it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 16, 3, padding=1)
        self.head = torch.nn.Sequential(torch.nn.Conv2d(16, 16, 1), torch.nn.ReLU())
        self.fc = torch.nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.conv(x))
        return self.fc(x.reshape(x.shape[0], 16, -1).mean(-1))


def test_a_layer_whose_pruning_breaks_forward_keeps_its_width_and_the_rest_prunes() -> None:
    """Pruning ``head.0`` breaks the fixed-width reshape (a one-line refusal of the whole model, before
    probe.py): the probe finds it, it keeps its 16 channels, and the stem still narrows."""
    torch.manual_seed(0)
    model = _FixedWidthReshape().eval()
    report = prune(model, torch.randn(1, 3, 8, 8), ratio=0.5, progress=None)
    assert report["unmapped_protected"] == ["head.0"]
    assert model.head[0].out_channels == 16 and model.conv.out_channels == 8
    assert model(torch.randn(2, 3, 8, 8)).shape == (2, 10)


class _FirstTwelve(torch.nn.Module):
    """Takes the first 12 channels with ``narrow``: 15 channels still have 12 (a one-channel probe
    passes), 8 do not."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.narrow(1, 0, 12)


class _NarrowedTo12(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 16, 3, padding=1)
        self.mix = torch.nn.Conv2d(16, 16, 1)
        self.first12 = _FirstTwelve()
        self.fc = torch.nn.Linear(12, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.first12(self.mix(torch.relu(self.conv(x)))).mean((2, 3)))


def test_a_narrow_is_probed_at_the_width_pruning_leaves_and_what_feeds_it_keeps_its_width() -> None:
    torch.manual_seed(0)
    model = _NarrowedTo12().eval()
    report = prune(model, torch.randn(1, 3, 8, 8), ratio=0.5, round_to=None, progress=None)
    assert report["unmapped_protected"] == ["mix"] and model.mix.out_channels == 16
    assert model.conv.out_channels == 8  # the rest still prunes
    assert model(torch.randn(2, 3, 8, 8)).shape == (2, 10)


class _SwappedHalves(torch.nn.Module):
    """Views the channels as two halves: any even width runs, an odd one does not."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 16, 3, padding=1)
        self.mix = torch.nn.Conv2d(16, 16, 1)
        self.fc = torch.nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.mix(torch.relu(self.conv(x)))
        b, c, h, w = y.shape
        return self.fc(y.view(b, 2, -1, h, w).flip(1).reshape(b, c, h, w).mean((2, 3)))


def test_pruning_that_breaks_forward_beyond_the_probe_is_one_line() -> None:
    """The probe prunes each group to its final width (8 of 16: even, runs); three steps pass through
    an odd width on the way, which the halves' view cannot take."""
    from edgekit.errors import EdgekitError

    torch.manual_seed(0)
    with pytest.raises(EdgekitError, match=r"unable to run \(shape .* is invalid.*--protect") as failure:
        prune(_SwappedHalves().eval(), torch.randn(1, 3, 8, 8), ratio=0.5, round_to=None, steps=3, progress=None)
    assert "\n" not in str(failure.value)
    model = _SwappedHalves().eval()  # protecting what feeds the view is the cure the line names
    report = prune(model, torch.randn(1, 3, 8, 8), ratio=0.5, round_to=None, steps=3, protect=["mix"], progress=None)
    assert model(torch.randn(2, 3, 8, 8)).shape == (2, 10) and report["unmapped_protected"] == []
