"""Issue 10, trustworthy runs: stage keys that cannot go stale, checkpoints per configuration,
reproducible runs, movable run folders, and a whole pipeline file checked before any work."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from edgekit.cli import main
from edgekit.data import fingerprint
from edgekit.targets.profiles import shipped_dir

ALL = {"train", "prune", "distill", "export", "quantize", "eval", "bench", "report"}


def _digits(split: str, count: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``count`` 8x8 digits of a split as uint8 images and their labels."""
    from edgekit.data.datasets import Digits

    digits = Digits(split, None)  # type: ignore[arg-type]  # the recipe is not needed for raw images
    return digits.images[:count], np.asarray(digits.labels[:count])


def _image_folder(root: Path, count: int = 20) -> Path:
    from PIL import Image

    images, labels = _digits("train", count)
    for i, (image, label) in enumerate(zip(images, labels)):
        (root / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image, mode="L").save(root / str(label) / f"{i:03d}.png")
    return root


def _npz(path: Path, count: int) -> Path:
    images, labels = _digits("test", count)
    np.savez(path, x=images[..., None], y=labels)
    return path


def _write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture()
def workspace(tmp_path: Path) -> dict:
    """A tiny pipeline (CNN width 8, one epoch on 270 images, ORT only) over data, recipe and target
    files of its own, so that each input can be changed in turn."""
    recipe = tmp_path / "recipe.yaml"
    shutil.copy(Path(shipped_dir()).parent / "calibration" / "digits.yaml", recipe)
    targets = tmp_path / "targets"
    targets.mkdir()
    # ORT only: every rerun benchmarks, and the reruns, not the runtimes, are what this tests
    lab = yaml.safe_load((shipped_dir() / "x86-64-avx2.yaml").read_text()) | {"name": "lab", "runtimes": ["onnxruntime"]}
    _write(targets / "lab.yaml", lab)
    config = {
        "name": "tiny",
        "model": {"source": "edgekit.zoo:digits_cnn", "kwargs": {"width": 8}, "input_shape": [1, 3, 32, 32]},
        "data": {"recipe": str(recipe), "train": "builtin:digits/val", "calib": str(_image_folder(tmp_path / "calib")),
                 "eval": str(_npz(tmp_path / "eval.npz", 60))},
        "train": {"epochs": 1, "batch_size": 32},
        "prune": {"ratio": 0.5},  # channel rounding from the target profile
        "distill": {"epochs": 1, "batch_size": 32},
        "quantize": {"num_samples": 16, "tflite": None},
        "bench": {"targets": ["lab"], "runs": 2, "warmup": 0},
    }
    return {"root": tmp_path, "config": config, "recipe": recipe, "targets": targets, "lab": lab}


def _run(ws: dict, capsys: pytest.CaptureFixture[str], *extra: str, run_dir: Path | None = None) -> tuple[int, str]:
    path = _write(ws["root"] / "pipe.yaml", ws["config"])
    code = main(["run", str(path), "--output", str(run_dir or ws["root"] / "run"), "--targets-dir", str(ws["targets"]),
                 *extra])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def _ran(output: str) -> set[str]:
    """The stages that logged ``[stage] running`` (the others logged ``up to date``)."""
    return {line[1:].split("]")[0] for line in output.splitlines() if line.startswith("[") and line.endswith("] running")}


def _set_lab(ws: dict, section: str, key: str, value: object) -> None:
    ws["lab"][section][key] = value
    _write(ws["targets"] / "lab.yaml", ws["lab"])


def test_rerun_redoes_exactly_the_stages_that_read_the_changed_input(workspace: dict,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    ws, config = workspace, workspace["config"]
    code, out = _run(ws, capsys)
    assert code == 0, out
    assert _ran(out) == ALL
    assert _ran(_run(ws, capsys)[1]) == set()

    downstream_of_quantize = {"quantize", "eval", "bench", "report"}
    config["bench"]["runs"] = 3  # a setting only bench reads
    assert _ran(_run(ws, capsys)[1]) == {"bench", "report"}
    _set_lab(ws, "tflite", "threads", 1)  # the profile's content is read by bench only ...
    assert _ran(_run(ws, capsys)[1]) == {"bench", "report"}
    _set_lab(ws, "onnxruntime", "per_channel", False)  # ... its ORT defaults by quantize
    assert _ran(_run(ws, capsys)[1]) == downstream_of_quantize
    config["quantize"]["num_samples"] = 20  # now every calibration image, so that editing any one counts
    assert _ran(_run(ws, capsys)[1]) == downstream_of_quantize
    calib_file = sorted((ws["root"] / "calib").rglob("*.png"))[0]
    from PIL import Image

    checkerboard = (np.indices((8, 8)).sum(0) % 2 * 255).astype(np.uint8)  # extends the activation ranges
    Image.fromarray(checkerboard, mode="L").save(calib_file)  # same name, new content
    assert _ran(_run(ws, capsys)[1]) == downstream_of_quantize
    _npz(ws["root"] / "eval.npz", 50)  # the evaluation data's content
    assert _ran(_run(ws, capsys)[1]) == {"eval", "report"}
    _set_lab(ws, "pruning", "channel_multiple", 4)  # the profile's channel rounding is read by prune
    assert _ran(_run(ws, capsys)[1]) == ALL - {"train"}
    recipe = yaml.safe_load(ws["recipe"].read_text()) | {"mean": [0.45]}
    _write(ws["recipe"], recipe)  # every stage that prepares images reads the recipe
    assert _ran(_run(ws, capsys)[1]) == ALL

    # a missing calibration folder is an error even though quantize is cached
    config["data"]["calib"] = str(ws["root"] / "nowhere")
    code, out = _run(ws, capsys)
    assert code == 2 and "pipe.yaml: key 'data.calib':" in out and "nowhere" in out
    assert "Traceback" not in out


def test_checkpoints_belong_to_their_configuration(workspace: dict, capsys: pytest.CaptureFixture[str]) -> None:
    """0.1.0 resumed ``checkpoints/train/last.pt`` whatever the configuration: a changed lr trained
    nothing, a changed prune ratio died in a size mismatch, and --force kept the checkpoints."""
    ws, config = workspace, workspace["config"]
    config["prune"]["round_to"] = 2  # so that ratios 0.5 and 0.3 give students of different shapes
    assert _run(ws, capsys)[0] == 0
    checkpoints = ws["root"] / "run" / "artifacts" / "checkpoints"
    first = {p.name for p in (checkpoints / "train").iterdir()}
    config["train"]["lr"] = 0.01
    code, out = _run(ws, capsys)
    assert code == 0, out
    assert "resumed" not in out and "epoch 1/1: loss" in out and "train" in _ran(out)
    second = {p.name for p in (checkpoints / "train").iterdir()}
    assert len(second) == 1 and second != first  # the stale key's folder is gone
    config["prune"]["ratio"] = 0.3
    code, out = _run(ws, capsys)
    assert code == 0, out
    assert _ran(out) == ALL - {"train"} and "resumed" not in out
    (checkpoints / "train" / "0123456789abcdef").mkdir()
    code, out = _run(ws, capsys, "--force")
    assert code == 0 and _ran(out) == ALL
    assert not (checkpoints / "train" / "0123456789abcdef").exists()


def _state_hashes(path: Path) -> dict[str, str]:
    """sha256 of every state-dict tensor (the pickle around them may differ, the numbers must not)."""
    from edgekit.sources import load_model

    state = load_model(str(path)).module.state_dict()
    return {name: hashlib.sha256(t.detach().cpu().contiguous().numpy().tobytes()).hexdigest() for name, t in state.items()}


def _figures(run_dir: Path) -> dict[str, tuple]:
    return {p.name: (d["top1"], d["top5"], d["agreement"])
            for p in sorted((run_dir / "eval").glob("*.json")) for d in [json.loads(p.read_text())]}


def test_two_fresh_runs_are_identical_and_a_moved_run_folder_stands_alone(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The demo's shape (train, prune, distill, both exports, ORT INT8, eval) on a short configuration."""
    demo = yaml.safe_load((Path(__file__).parent.parent / "edgekit" / "pipeline" / "demo.yaml").read_text())
    demo |= {"model": {"source": "edgekit.zoo:digits_cnn", "kwargs": {"width": 8}, "input_shape": [1, 3, 32, 32]},
             "train": {"epochs": 1, "batch_size": 32}, "distill": {"epochs": 1, "batch_size": 32},
             "quantize": {"num_samples": 16, "tflite": None}, "bench": {"targets": []}}
    demo["data"] |= {"train": "builtin:digits/val", "calib": "builtin:digits/val"}
    demo["prune"]["round_to"] = 4
    config = _write(tmp_path / "demo-like.yaml", demo)
    runs = [tmp_path / "a", tmp_path / "b"]
    for run in runs:
        assert main(["run", str(config), "--output", str(run)]) == 0
    capsys.readouterr()
    for name in ("baseline.pt", "pruned.pt", "pruned_distilled.pt"):
        assert _state_hashes(runs[0] / "artifacts" / name) == _state_hashes(runs[1] / "artifacts" / name), name
    for name in ("fp32.onnx", "pruned.fp32.onnx", "int8.onnx", "pruned.int8.onnx"):
        digests = [hashlib.sha256((run / "artifacts" / name).read_bytes()).hexdigest() for run in runs]
        assert digests[0] == digests[1], name
    assert _figures(runs[0]) == _figures(runs[1]) and len(_figures(runs[0])) == 4

    moved = tmp_path / "moved"
    os.rename(runs[0], moved)
    records = json.loads((moved / "stages.json").read_text())
    assert all(not Path(p).is_absolute() for r in records.values() for p in r["outputs"])
    assert main(["run", str(config), "--output", str(moved)]) == 0
    out = capsys.readouterr().out
    assert _ran(out) == set() and out.count("] up to date") == len(ALL)
    assert str(runs[0]) not in (moved / "stages.json").read_text()


@pytest.mark.parametrize(("patch", "key", "reason"), [
    ({"prune": {"ratio": 1.5}}, "prune.ratio", "must be between 0 and 1 (exclusive), got 1.5"),
    ({"prune": {"target_macs": 0}}, "prune.target_macs", "must be greater than 0 and at most 1, got 0"),
    ({"model": {"source": "edgekit.zoo:digits_cnn", "input_shape": [1, 3, 0, 32]}}, "model.input_shape",
     "must be 4 positive integers (N, C, H, W), got [1, 3, 0, 32]"),
    ({"model": {"source": "edgekit.zoo:digits_cnn", "input_shape": [3, 32, 32]}}, "model.input_shape", "got [3, 32, 32]"),
    ({"train": {"epochs": 0}}, "train.epochs", "must be at least 1, got 0"),
    ({"train": {"lr": -0.1}}, "train.lr", "must be greater than 0, got -0.1"),
    ({"train": {"batch_size": 0}}, "train.batch_size", "must be at least 1, got 0"),
    ({"distill": {"alpha": 1.2}}, "distill.alpha", "must be between 0 and 1, got 1.2"),
    ({"distill": {"temperature": 0}}, "distill.temperature", "must be greater than 0, got 0"),
    ({"quantize": {"num_samples": 0}}, "quantize.num_samples", "must be at least 1, got 0"),
    ({"bench": {"runs": 0}}, "bench.runs", "must be at least 1, got 0"),
    ({"bench": {"warmup": -1}}, "bench.warmup", "must be at least 0, got -1"),
    ({"bench": {"threads": 0}}, "bench.threads", "must be at least 1, got 0"),
    ({"bench": {"targets": ["no-such-board"]}}, "bench.targets.0", "no target profile named 'no-such-board'"),
    ({"bench": {"hosts": [{"host": "pi@board:ssh"}]}}, "bench.hosts.0.host", "the port must be a number"),
    ({"bench": {"hosts": [{"host": "pi@board", "target": "nope"}]}}, "bench.hosts.0.target", "no target profile"),
    ({"data": {"recipe": "nope", "calib": "builtin:digits", "eval": "builtin:digits"}}, "data.recipe", "no recipe named 'nope'"),
    ({"data": {"recipe": "digits", "calib": "missing-folder", "eval": "builtin:digits"}}, "data.calib",
     "missing-folder: data folder not found"),
    ({"data": {"recipe": "digits", "calib": "builtin:digits", "eval": "builtin:mnist"}}, "data.eval",
     "unknown built-in data set"),
    ({"data": {"recipe": "digits", "calib": "builtin:digits", "eval": "builtin:digits/holdout"}}, "data.eval",
     "unknown split"),
    ({"data": {"recipe": "digits", "calib": "builtin:digits", "eval": "builtin:digits"}}, "data.train",
     "required when a 'train' or 'distill' section is given"),
    ({"model": {"source": "edgekit.zoo:digits_cnn", "weights": "gone.pth", "input_shape": [1, 3, 32, 32]}},
     "model.weights", "gone.pth: file not found"),
    ({"model": {"source": "nets.py:build", "input_shape": [1, 3, 32, 32]}}, "model.source", "nets.py: file not found"),
])
def test_the_whole_file_is_checked_before_any_work(patch: dict, key: str, reason: str, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """0.1.0 reported ``prune.ratio: 1.5`` after the whole training stage, as ``--ratio``, and an
    ``input_shape`` with a 0 as a traceback after 23 s of training."""
    base = {"name": "v", "model": {"source": "edgekit.zoo:digits_cnn", "input_shape": [1, 3, 32, 32]},
            "data": {"recipe": "digits", "train": "builtin:digits/train", "calib": "builtin:digits/train",
                     "eval": "builtin:digits/test"},
            "train": {"epochs": 1}}
    config = _write(tmp_path / "pipe.yaml", {**base, **patch})
    assert main(["run", str(config), "--output", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"edgekit: error: {config}: key '{key}': ") and reason in err, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_fingerprints_follow_content_not_names_or_times(tmp_path: Path) -> None:
    folder = _image_folder(tmp_path / "images", 6)
    before = fingerprint(folder)
    some = sorted(folder.rglob("*.png"))[0]
    os.utime(some, ns=(1, 1))  # a touch (or a copy) changes nothing the data yields
    (folder / "notes.txt").write_text("not an image")  # nor does a file the data sets never read
    assert fingerprint(folder) == before
    data = bytearray(some.read_bytes())
    data[-13] ^= 0xFF  # same size, same name, other content
    some.write_bytes(bytes(data))
    assert fingerprint(folder) != before
    edited = fingerprint(folder)
    some.rename(some.with_name("zz.png"))  # a renamed file may change its class or order
    assert fingerprint(folder) != edited
    arrays = _npz(tmp_path / "x.npz", 5)
    assert fingerprint(arrays)["sha256"] == hashlib.sha256(arrays.read_bytes()).hexdigest()
    from edgekit.data.datasets import digits_file

    assert fingerprint("builtin:digits/val") == {"builtin": "builtin:digits/val", "sha256": hashlib.sha256(digits_file().read_bytes()).hexdigest()}
