"""Does the export parity gate pass every correct export and fail real mismatches?

For each torchvision classifier (random weights, BatchNorm statistics set on images, as in a trained
model) the correct ONNX export and a few deliberately broken copies of it are compared with PyTorch.
Printed per case: the old fixed rule's figure (max-abs ONNX-vs-PyTorch / max|output|, fails above
1e-4), float32's own noise (PyTorch float32 vs float64), the ONNX error vs float64, their ratio (the
new rule's figure, by max-abs and, for comparison, by RMS) and both verdicts.

    PYTHONPATH=. python benchmarks/bench_parity.py                       # fast default list, ~3 min
    PYTHONPATH=. python benchmarks/bench_parity.py --models all          # every model, larger ones too
    PYTHONPATH=. python benchmarks/bench_parity.py --models resnet18,vit_b_16@224
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import log, markdown, save_summary  # noqa: E402
from models import smooth_images  # noqa: E402

from edgekit.export import export_onnx  # noqa: E402
from edgekit.export.faults import BREAKAGES  # noqa: E402
from edgekit.export.onnx_export import float64_outputs  # noqa: E402
from edgekit.export.parity import DEFAULT_TOLERANCE, ParityReport, compare, parity_inputs  # noqa: E402

FAST = ["resnet18", "mobilenet_v2", "mobilenet_v3_large@224", "mobilenet_v3_small",
        "efficientnet_b0", "shufflenet_v2_x1_0", "squeezenet1_0", "googlenet", "regnet_x_400mf", "mnasnet0_5"]
SLOW = ["densenet121", "convnext_tiny", "vit_b_16"]
DEFAULT_SIZE = 128


# --- models with BatchNorm statistics from images ---------------------------------------------------

def bn_images(source: str, count: int, size: int, seed: int) -> np.ndarray:
    """ImageNet-normalised NCHW images. ``blobs``: the other benchmarks' smooth random blobs (upsampled
    7x7 noise); ``digits``: half scikit-learn digits (real scans of ink), half 1/f colour fields."""
    from edgekit.data import load_all, open_dataset, sample_indices

    if source == "blobs":
        return smooth_images(count, size, seed)

    digits = open_dataset("builtin:digits/train", digits_recipe(size))
    real, _, _ = load_all(digits, sample_indices(digits, count // 2, seed=seed))
    return np.concatenate([real, pink_fields(count - len(real), size, seed)]).astype(np.float32)


def digits_recipe(size: int) -> Any:
    """scikit-learn's digits as ImageNet-normalised RGB at ``size`` px (what ImageNet classifiers take)."""
    from edgekit.data import load_recipe

    return dataclasses.replace(load_recipe("imagenet"), size=(size, size), resize=None, center_crop=False,
                               gray_to_rgb=True)


def pink_fields(count: int, size: int, seed: int) -> np.ndarray:
    """Random fields with natural images' 1/f amplitude spectrum, per channel, ImageNet-normalised."""
    rng = np.random.default_rng(seed)
    fy, fx = np.meshgrid(np.fft.fftfreq(size), np.fft.fftfreq(size), indexing="ij")
    amplitude = 1.0 / np.maximum(np.hypot(fy, fx), 1.0 / size)
    phases = rng.uniform(0, 2 * np.pi, (count, 3, size, size))
    fields = np.real(np.fft.ifft2(amplitude * np.exp(1j * phases)))
    fields = (fields - fields.mean(axis=(2, 3), keepdims=True)) / fields.std(axis=(2, 3), keepdims=True)
    images = np.clip(0.45 + 0.22 * fields, 0, 1)
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    return (images - mean[:, None, None]) / std[:, None, None]


def calibrated_model(name: str, size: int, images: np.ndarray, **kwargs: Any) -> torch.nn.Module:
    """Seeded random weights; BatchNorm running statistics averaged (momentum=None) over the images.
    ``kwargs`` go to torchvision's builder (``num_classes``)."""
    torch.manual_seed(0)
    if name.startswith("vit_"):
        kwargs["image_size"] = size
    if name in ("googlenet", "inception_v3"):
        kwargs.update(aux_logits=False, init_weights=True)
    model = torchvision.models.get_model(name, weights=None, **kwargs)
    with torch.no_grad():  # a trained model's scale where torchvision's init mutes whole branches
        for key, param in model.named_parameters():
            if key.endswith("layer_scale"):  # ConvNeXt starts each block's branch at 1e-6
                param.fill_(0.3)
    for module in model.modules():
        if isinstance(module, torch.nn.Linear) and not module.weight.any():  # ViT's zero-initialised head
            torch.nn.init.normal_(module.weight, std=0.02)
    return set_batchnorm_statistics(model, images)


def set_batchnorm_statistics(model: torch.nn.Module, images: np.ndarray) -> torch.nn.Module:
    """Every BatchNorm's running statistics replaced by their average (momentum=None) over the images;
    the model is returned in eval mode."""
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None
    model.train()
    with torch.no_grad():
        for batch in np.array_split(images, max(1, len(images) // 16)):
            model(torch.from_numpy(batch))
    return model.eval()


# --- measurement -------------------------------------------------------------------------------------

@dataclasses.dataclass
class Case:
    model: str
    variant: str
    report: ParityReport

    def row(self) -> list[Any]:
        r = self.report
        scale = r.reference_max_abs or 1.0
        return [self.model, self.variant, f"{r.relative_error:.2e}", "PASS" if r.relative_error <= DEFAULT_TOLERANCE else "FAIL",
                f"{r.noise_floor / scale:.2e}", f"{r.onnx_error_fp64 / scale:.2e}",
                f"{r.noise_ratio:.3g}", f"{r.rms_ratio:.3g}", f"{r.min_cosine:.6f} (>= {r.min_cosine_required:.6f})", "PASS" if r.passed else "FAIL"]


HEADERS = ["model", "export", "old: max-abs/max|out|", "old", "fp32 noise/max|out|", "ONNX vs fp64/max|out|",
           "ratio (max-abs)", "ratio (RMS)", "min cosine (required)", "new"]


def measure(onnx_model: onnx.ModelProto, inputs: list[np.ndarray], fp32: list[np.ndarray],
            fp64: list[np.ndarray], real: int) -> ParityReport:
    """The gate's report for one ONNX model (outputs of PyTorch precomputed)."""
    import onnxruntime as ort

    session = ort.InferenceSession(onnx_model.SerializeToString(), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    got = [session.run(None, {name: x})[0] for x in inputs]
    lookup = {id(x): i for i, x in enumerate(inputs)}
    return compare(lambda x: fp32[lookup[id(x)]], lambda x: got[lookup[id(x)]], inputs, real_samples=real, exact=fp64)


def run_model(spec: str, source: str, count: int, folder: Path) -> list[Case]:
    """The correct export and every applicable breakage of one ``name[@size]``, BatchNorm set on ``source``."""
    name, _, size_text = spec.partition("@")
    size = int(size_text or DEFAULT_SIZE)
    label = f"{name}@{size} {source}"
    started = time.perf_counter()
    model = calibrated_model(name, size, bn_images(source, 32, size, seed=0))
    samples = bn_images(source, 2, size, seed=1)
    path = folder / f"{name}_{size}.onnx"
    export_onnx(model, torch.zeros(1, 3, size, size), path, parity_count=0, force=True)  # parity measured below
    inputs = parity_inputs((1, 3, size, size), count, samples=samples)
    fp64 = float64_outputs(model, inputs)
    assert fp64 is not None, f"{name}: no float64 reference"
    with torch.no_grad():
        fp32 = [model(torch.from_numpy(x)).numpy() for x in inputs]
    exported = onnx.load(str(path))
    cases = [Case(label, "correct", measure(exported, inputs, fp32, fp64, len(samples)))]
    for variant, breakage in BREAKAGES.items():
        broken = onnx.ModelProto()
        broken.CopyFrom(exported)
        if breakage(broken):  # False: the model has no such part (no residual Add, no bias)
            cases.append(Case(label, variant, measure(broken, inputs, fp32, fp64, len(samples))))
    log(f"{label}: {time.perf_counter() - started:.1f} s")
    return cases


def summarise(cases: list[Case]) -> list[dict[str, Any]]:
    """Worst correct and best-hidden broken figures for each rule: the margins the docstring quotes."""
    good = [c for c in cases if c.variant == "correct"]
    bad = [c for c in cases if c.variant != "correct"]
    figures = {
        "old rule: worst correct export, max-abs/max|out|": max(c.report.relative_error for c in good),
        "old rule: correct exports failing": sum(c.report.relative_error > DEFAULT_TOLERANCE for c in good),
        "old rule: broken exports passing": sum(c.report.relative_error <= DEFAULT_TOLERANCE for c in bad),
        "new rule: worst correct export, ratio (max-abs)": max(c.report.noise_ratio for c in good),
        "new rule: mildest broken export, ratio (max-abs)": min(c.report.noise_ratio for c in bad),
        "new rule: worst correct export, ratio (RMS)": max(c.report.rms_ratio for c in good),
        "new rule: mildest broken export, ratio (RMS)": min(c.report.rms_ratio for c in bad),
        "new rule: correct exports failing": sum(not c.report.passed for c in good),
        "new rule: broken exports passing": sum(c.report.passed for c in bad),
    }
    return [{"comparison": "export parity gate", "metric": k, "value": round(v, 3) if isinstance(v, float) else v}
            for k, v in figures.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="fast", help="fast | all | comma-separated name[@size] (default size 128)")
    parser.add_argument("--inputs", type=int, default=8, help="seeded random inputs per model (plus 2 image samples)")
    parser.add_argument("--bn-images", default="blobs,digits", help="BatchNorm statistics from: blobs, digits or both")
    args = parser.parse_args()
    specs = {"fast": FAST, "all": FAST + SLOW}.get(args.models) or args.models.split(",")
    torch.manual_seed(0)
    cases: list[Case] = []
    with tempfile.TemporaryDirectory() as folder:
        for spec in specs:
            for source in args.bn_images.split(","):
                cases += run_model(spec, source, args.inputs, Path(folder))
    print("\n## Correct exports\n")
    print(markdown([c.row() for c in cases if c.variant == "correct"], HEADERS))
    print("\n## Broken exports\n")
    print(markdown([c.row() for c in cases if c.variant != "correct"], HEADERS))
    rows = summarise(cases)
    print("\n## Summary\n")
    print(markdown([[r["metric"], r["value"]] for r in rows], ["figure", "value"]))
    save_summary("parity", rows)


if __name__ == "__main__":
    main()
