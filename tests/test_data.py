"""Calibration data: recipes, real image folders written to disk, sampling, caching, bad input."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgekit.cli import main
from edgekit.data import calibration_tensors, load_recipe, open_dataset, sample_indices
from edgekit.data.datasets import BadSample, load_all
from edgekit.errors import EdgekitError


def write_images(root: Path, per_class: dict[str, int], size: tuple[int, int] = (40, 30), mode: str = "RGB") -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for name, count in per_class.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
            image = Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8), mode)
            path = root / name / f"{i}.{'png' if i % 2 else 'jpg'}"
            image.save(path)
            paths.append(path)
    return paths


def test_shipped_recipes() -> None:
    imagenet = load_recipe("imagenet")
    assert imagenet.input_shape() == (1, 3, 224, 224) and imagenet.resize == 256 and imagenet.center_crop
    digits = load_recipe("digits")
    assert digits.input_shape(4) == (4, 3, 32, 32)


def test_recipe_apply_matches_torchvision_preprocessing(tmp_path: Path) -> None:
    import torch
    from torchvision import transforms

    image = Image.fromarray(np.random.default_rng(1).integers(0, 255, (300, 400, 3), dtype=np.uint8))
    ours = load_recipe("imagenet").apply(image)
    theirs = transforms.Compose([
        transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(),
        transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
    ])(image)
    assert ours.shape == (3, 224, 224)
    # PIL vs tensor resize differ by antialiasing details only
    assert np.mean(np.abs(ours - theirs.numpy())) < 0.05
    assert isinstance(theirs, torch.Tensor)


@pytest.mark.parametrize(("content", "message"), [
    ("name: x\nsize: [8, 8]\nmean: [0]\nstd: [1]\ncolour: rgb\n", "key 'colour': unknown key"),
    ("name: x\nsize: [8, 8]\nstd: [1]\n", "key 'mean': required key is missing"),
    ("name: x\nsize: [8, 8]\nmean: [0]\nstd: [0]\n", "key 'std'"),
    ("name: x\nsize: eight\nmean: [0]\nstd: [1]\n", "key 'size'"),
    ("name: x\nsize: [8, 8]\nmean: [0, 0]\nstd: [1]\n", "key 'mean': needs 1 or 3 values"),
])
def test_bad_recipe_names_file_and_key(content: str, message: str, tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text(content)
    with pytest.raises(EdgekitError) as info:
        load_recipe(str(path))
    assert str(path) in str(info.value) and message in str(info.value)


def test_image_folder_labels_sampling_and_cache(tmp_path: Path) -> None:
    write_images(tmp_path / "imgs", {"cat": 30, "dog": 10})
    recipe = load_recipe("digits")
    dataset = open_dataset(tmp_path / "imgs", recipe)
    assert len(dataset) == 40 and dataset.classes == ["cat", "dog"]
    chosen = sample_indices(dataset, 20, seed=3)
    labels = [dataset.labels[i] for i in chosen]
    assert labels.count(0) == 15 and labels.count(1) == 5  # stratified: 3:1 like the folder
    assert chosen == sample_indices(dataset, 20, seed=3) and chosen != sample_indices(dataset, 20, seed=4)
    cache = tmp_path / "cache"
    first = calibration_tensors(tmp_path / "imgs", recipe, 20, seed=3, cache=cache, progress=False)
    assert first.shape == (20, 3, 32, 32) and first.dtype == np.float32
    assert first.min() >= -1.0 and first.max() <= 1.0
    cached = list((cache / "calibration").glob("*.npy"))
    assert len(cached) == 1
    np.testing.assert_array_equal(calibration_tensors(tmp_path / "imgs", recipe, 20, seed=3, cache=cache, progress=False), first)
    # editing one sampled image's content changes the key: a second cache entry appears
    sampled_file = dataset.files[chosen[0]]
    Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(sampled_file)
    calibration_tensors(tmp_path / "imgs", recipe, 20, seed=3, cache=cache, progress=False)
    assert len(list((cache / "calibration").glob("*.npy"))) == 2


def test_builtin_digits_splits_are_disjoint_and_stratified() -> None:
    recipe = load_recipe("digits")
    sizes = {s: len(open_dataset(f"builtin:digits/{s}", recipe)) for s in ("train", "val", "test")}
    assert sum(sizes.values()) == 1797 and sizes["train"] > 1200 and min(sizes.values()) > 250
    test = open_dataset("builtin:digits/test", recipe)
    assert set(test.labels) == set(range(10))
    x, y = test.get(0)
    assert x.shape == (3, 32, 32) and 0 <= y <= 9
    from edgekit.data.datasets import _digits_split

    targets = np.asarray(open_dataset("builtin:digits", recipe).labels)
    parts = [set(_digits_split(targets, s).tolist()) for s in ("train", "val", "test")]
    assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])


def test_npy_and_npz_sources(tmp_path: Path) -> None:
    recipe = load_recipe("digits")
    tensors = np.random.default_rng(0).standard_normal((6, 3, 32, 32)).astype(np.float32)
    np.save(tmp_path / "t.npy", tensors)
    dataset = open_dataset(tmp_path / "t.npy", recipe)
    np.testing.assert_array_equal(dataset.get(2)[0], tensors[2])
    images = np.random.default_rng(0).integers(0, 255, (5, 20, 20, 3), dtype=np.uint8)
    np.savez(tmp_path / "i.npz", images=images, labels=np.arange(5))
    dataset = open_dataset(tmp_path / "i.npz", recipe)
    assert dataset.labels == [0, 1, 2, 3, 4] and dataset.get(1)[0].shape == (3, 32, 32)


def test_bad_data_sources(tmp_path: Path) -> None:
    recipe = load_recipe("digits")
    with pytest.raises(EdgekitError, match="data folder not found"):
        open_dataset(tmp_path / "nope", recipe)
    (tmp_path / "empty").mkdir()
    with pytest.raises(EdgekitError, match="empty: no images found"):
        open_dataset(tmp_path / "empty", recipe)
    np.save(tmp_path / "wrong.npy", np.zeros((4, 3, 16, 16), np.float32))
    with pytest.raises(EdgekitError, match=r"wrong.npy: tensors have shape \[3, 16, 16\] per item, the recipe 'digits' makes \[3, 32, 32\]"):
        open_dataset(tmp_path / "wrong.npy", recipe)
    with pytest.raises(EdgekitError, match="unknown built-in data set"):
        open_dataset("builtin:mnist", recipe)


def test_corrupt_and_grayscale_images_are_named_or_skipped(tmp_path: Path) -> None:
    folder = tmp_path / "imgs"
    write_images(folder, {"a": 4})
    (folder / "a" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    imagenet = load_recipe("imagenet")
    dataset = open_dataset(folder, imagenet)
    with pytest.raises(BadSample, match="broken.jpg: corrupt or unreadable image"):
        load_all(dataset)
    x, _, skipped = load_all(dataset, skip_bad=True)
    assert len(x) == 4 and len(skipped) == 1 and "broken.jpg" in skipped[0]
    gray = tmp_path / "gray"
    write_images(gray, {"a": 2}, mode="L")
    with pytest.raises(BadSample, match=r"0.jpg: grayscale image \(L\) for an RGB recipe 'imagenet'"):
        load_all(open_dataset(gray, imagenet))


def test_an_image_over_the_decompression_bomb_limit_is_one_line_or_skipped(
        tmp_path: Path, digits_fp32_onnx: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "imgs"
    write_images(folder, {"a": 4})
    Image.new("RGB", (20000, 20000)).save(folder / "a" / "huge.png")  # 1.2 GB decoded, a small file
    out = tmp_path / "q.onnx"
    command = ["quantize", str(digits_fp32_onnx), "--backend", "ort", "--calib", str(folder), "--recipe", "digits",
               "--no-sensitivity", "-o", str(out)]
    code = main(command)
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert f"{folder / 'a' / 'huge.png'}: image too large to decode safely" in err and "--skip-bad" in err
    assert not out.exists() and not list(tmp_path.glob("*.part"))
    assert main([*command, "--skip-bad"]) == 0 and out.exists()
    assert "skipped 1 bad sample(s)" in capsys.readouterr().err


def test_quantize_cli_reports_missing_calibration_folder(tmp_path: Path, digits_fp32_onnx: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "q.onnx"
    code = main(["quantize", str(digits_fp32_onnx), "--backend", "ort", "--calib", str(tmp_path / "missing"),
                 "--recipe", "digits", "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and f"{tmp_path / 'missing'}: data folder not found" in err and err.count("\n") == 1
    assert not out.exists() and not list(tmp_path.glob("*.part"))


def test_any_python_iterable_through_the_api() -> None:
    from edgekit.data import tensors_from_iterable

    def images():
        rng = np.random.default_rng(0)
        for _ in range(5):
            yield Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8))

    prepared = tensors_from_iterable(images(), "digits")
    assert prepared.shape == (5, 3, 32, 32) and prepared.dtype == np.float32
    batches = (np.zeros((2, 3, 8, 8), np.float32) for _ in range(3))
    assert tensors_from_iterable(batches, limit=5).shape == (5, 3, 8, 8)
    with pytest.raises(EdgekitError, match="pass a recipe"):
        tensors_from_iterable(images())
    with pytest.raises(EdgekitError, match="yielded nothing"):
        tensors_from_iterable(iter([]))


def test_a_16_bit_grayscale_png_reads_as_the_8_bit_image_it_is(tmp_path: Path) -> None:
    """PIL's conversion to 8 bits clips at 255: a 0..65535 ramp became 17 distinct values, almost all white."""
    ramp = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    (tmp_path / "deep").mkdir()
    (tmp_path / "flat").mkdir()
    Image.fromarray(ramp).save(tmp_path / "deep" / "ramp.png")
    assert Image.open(tmp_path / "deep" / "ramp.png").mode.startswith("I")
    Image.fromarray(np.round(ramp / 257).astype(np.uint8)).save(tmp_path / "flat" / "ramp.png")
    recipe = load_recipe("digits-canvas")  # 64x64 grayscale, no resize: every pixel counts
    deep, _, _ = load_all(open_dataset(tmp_path / "deep", recipe))
    flat, _, _ = load_all(open_dataset(tmp_path / "flat", recipe))
    assert np.array_equal(deep, flat) and np.unique(deep).size == 256


def test_photos_of_a_format_edgekit_does_not_read_are_named_not_dropped_silently(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = tmp_path / "phone"
    write_images(folder, {"a": 2})
    (folder / "a" / "IMG_0001.HEIC").write_bytes(b"\x00\x00\x00\x18ftypheic")  # an iPhone photo
    (folder / "a" / "scan.tif").write_bytes(b"II*\x00")
    (folder / "a" / "notes.txt").write_text("not an image")
    dataset = open_dataset(folder, load_recipe("digits"))
    assert len(dataset.files) == 2
    warned = [r.getMessage() for r in caplog.records if "left out" in r.getMessage()]
    assert warned == [f"{folder}: left out 2 image file(s) of a format edgekit does not read (.heic: 1, .tif: 1); "
                      "convert them to PNG or JPEG to use them"]
