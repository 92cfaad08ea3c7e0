"""The torchvision classification zoo through edgekit's stages, one architecture per row.

Per architecture, each part in its own child process, so that a crash, an OOM or a hang is one
failed stage and hides no other stage's figures:
  * prune (ratio 0.5, L1): MACs kept, time, the child's peak memory;
  * build (seeded random weights, BatchNorm statistics averaged over calibration images, so
    activations have a trained net's scale: bench_parity.calibrated_model; with ``--weights digits``
    then trained on scikit-learn's digits, a 10-class head: ``train_on_digits``) and export (with
    its parity gate) of the *unpruned* model;
  * ORT INT8 (quantize_ort_workflow, sensitivity ranking included, as the CLI runs it);
  * TFLite full-integer INT8;
  * fidelity per runtime on held-out images (never the calibration ones): INT8 vs FP32 logit cosine
    (mean per sample) and top-1 agreement, both through edgekit.runtime.open_runner; for TFLite also
    the cosine through the builtin kernels (XNNPACK, the default, computes some int8 ops less exactly);
  * speed per runtime: INT8 speed-up over FP32 (FP32 p50 / INT8 p50, interleaved, 2 threads);
  * the FP32 model's input-noise floor (``noise_floor``): a random-weight net that amplifies one INT8
    step of input rounding is not one an INT8 cosine can be held to 0.99 on;
  * its rounding floor (``rounding_floor``): the same with that noise at the input of every Conv and
    Linear, the tensors any INT8 scheme quantizes: what INT8 activations cost this net before any
    quantizer's choice (``--floors`` adds it to rows stored without it).

A stage that fails where a weaker variant still gives figures (export parity, the ORT sensitivity
step, TFLite ops left in float) is recorded as failed and the variant's figures are kept, flagged.
The parent enforces a per-stage timeout and an RSS cap (psutil, summed over the child's tree; not
RLIMIT_AS, which TensorFlow's address-space reservations trip long before real memory runs out).

Rows go to benchmarks/results/zoo.jsonl (zoo-SIZE.jsonl at another --size), which git tracks: the sweep
is longer than a session on a 2-core machine, so each run adds its rows to the repository and the next
clone resumes there. A re-run skips architectures already there unless --force; each row names the
edgekit commit and the machine (CPU, cores, VNNI or not: ORT's INT8 arithmetic differs without it).

    PYTHONPATH=. python benchmarks/zoo.py --only resnet18,mobilenet_v3_large --timeout 600
    PYTHONPATH=. python benchmarks/zoo.py --size 128     # every architecture, smallest first, at 128 px
    PYTHONPATH=. python benchmarks/zoo.py --table        # the stored rows as Markdown
    PYTHONPATH=. python benchmarks/zoo.py --size 128 --weights digits   # trained nets, rows of their own
"""
from __future__ import annotations

import argparse
import faulthandler
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, ROOT, interleaved_p50_ms, load_rows, log, markdown, save_row  # noqa: E402

ROWS = RESULTS / "zoo.jsonl"
# a digits training's per-epoch checkpoint (edgekit.distill.fit's), until its row is stored: a sweep stopped
# mid-training (a session's end) resumes at the last finished epoch, with the weights an unstopped run has
TRAINING = RESULTS / "digits-training"
THREADS = 2
_FAULTS: Any = None  # a child's faulthandler file
RATIO = 0.5
IMAGES = 64  # half calibrate (and set BatchNorm statistics), half are held out for fidelity
FIXED_SIZE = {"maxvit_t": 224}  # its 7x7 window partitions need every stage's map divisible by 7
MIN_SIZE = {"inception_v3": 75}
SIZE = 224  # --size; a smaller one makes the 80-architecture sweep fit a 2-core machine
WEIGHTS = "random"  # --weights: "digits" trains each net first (train_on_digits)
DIGITS_EPOCHS = 4  # bench_trained_vs_random: 4 epochs take ResNet-18 to 92% validation top-1 at 32 px
DIGITS_LR = 3e-3  # the demo's
# Nets without BatchNorm stayed at chance with 3e-3. Without normalization layers (AlexNet, SqueezeNet, the
# plain VGGs): AlexNet at 128 px 10% top-1; 3e-4 92%, 1e-4 87%. SqueezeNet 10%; 1e-3 20%, 3e-4 22%. With
# LayerNorm only (ConvNeXt, ViT, Swin: no warm-up here): ConvNeXt-T 10%, 1e-3 88.5%, 3e-4 94.8%; Swin-T 19.6%.
DIGITS_LR_WITHOUT_BATCHNORM = 3e-4
BF16_MIN_GAIN = 1.15  # trains_bf16: a margin over timing noise, so a near tie stays fp32
# A digits row measures a trained net only if its training learned: validation top-1 more than 3 binomial
# standard deviations above chance (10 classes, 270 validation images: 15.5%). Below that the net may
# map every image to one output, whose INT8 cosine is perfect and means nothing (squeezenet1_0 at 128 px:
# 10% top-1, cosine 1.0000); such rows are kept and shown, but left out of the fidelity medians.
LEARNED_TOP1 = 100 * (0.1 + 3 * (0.1 * 0.9 / 270) ** 0.5)
STAGES = ("prune", "build", "export", "ort", "tflite")
PARTS = {"prune": ("prune",), "export": ("build", "export"), "ort": ("ort",), "tflite": ("tflite",), "floor": ("floor",)}
ROUNDING = "rounding_cosine"  # the export stage's rounding floor (see rounding_floor)
FP32 = "fp32.onnx"
REFERENCE = "reference.npy"  # FP32 ONNX logits on the held-out images, written by the export part


# --- child side: the stages -------------------------------------------------------------------------

class State:
    """The child's progress file: finished stages and the one running, rewritten atomically so the
    parent can name the stage it kills and keep what finished before."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.stages: dict[str, dict[str, Any]] = {}
        self.current: dict[str, Any] | None = None

    def start(self, stage: str) -> None:
        self.current = {"stage": stage, "started": time.time()}
        self._write()

    def finish(self, stage: str, result: dict[str, Any]) -> None:
        assert self.current is not None
        self.stages[stage] = {**result, "s": round(time.time() - self.current["started"], 1)}
        self.current = None
        self._write()

    def _write(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"stages": self.stages, "current": self.current}))
        os.replace(tmp, self.path)


def error_text(exc: BaseException) -> str:
    """``Type: first line``, plus the innermost library frame when the message names no place."""
    from edgekit.errors import first_line

    text = f"{type(exc).__name__}: {first_line(exc, 240)}"
    frames = traceback.extract_tb(exc.__traceback__)
    if frames and "edgekit" not in frames[-1].filename:
        text += f" [at {Path(frames[-1].filename).name}:{frames[-1].lineno} {frames[-1].name}]"
    return text


def run_stage(state: State, stage: str, body: Callable[[], dict[str, Any]]) -> dict[str, Any] | None:
    """Run one stage; an exception becomes the stage's one-line error, never the child's end."""
    state.start(stage)
    try:
        result = body()
    except Exception as exc:  # noqa: BLE001 - every failure is a row entry
        state.finish(stage, {"ok": False, "error": error_text(exc)})
        return None
    state.finish(stage, {"ok": True, **result})
    return result


def input_size(name: str) -> int:
    """--size, except where the architecture fixes it; ViTs get a whole number of patches."""
    if name in FIXED_SIZE:
        return FIXED_SIZE[name]
    if name.startswith("vit_"):
        patch = int(name.rsplit("_", 1)[1])
        return max(patch, SIZE // patch * patch)
    return max(SIZE, MIN_SIZE.get(name, 0))


def images(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Calibration and held-out images, disjoint: one draw of bench_parity's digits + 1/f fields, split
    alternately (each half gets half digits, half fields)."""
    from bench_parity import bn_images

    drawn = bn_images("digits", IMAGES, size, seed=0)
    return drawn[0::2], drawn[1::2]


def prune_child(name: str, state: State) -> None:
    """Prune 0.5 (L1) and record MACs kept and this process's peak RSS (pruning is what it ran)."""
    import torch
    from bench_parity import calibrated_model

    from edgekit.prune import prune

    size = input_size(name)
    calib, _ = images(size)

    def body() -> dict[str, Any]:
        model = calibrated_model(name, size, calib[:4], **head())  # few images: the peak below is pruning's
        before = peak_rss_mb()
        report = prune(model, torch.zeros(1, 3, size, size), ratio=RATIO, progress=None)
        return {"macs_kept": report["macs_after"] / report["macs_before"], "gmacs": report["macs_before"] / 1e9,
                "params_m": report["params_before"] / 1e6, "peak_mb": round(peak_rss_mb()), "rss_before_mb": round(before)}

    run_stage(state, "prune", body)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def export_child(name: str, state: State, work: Path) -> None:
    """Build (BatchNorm statistics on the calibration images) and export the unpruned model; keep the
    FP32 ONNX logits on the held-out images, the reference both INT8 models are held to."""
    import torch
    from bench_parity import calibrated_model

    size = input_size(name)
    calib, held_out = images(size)
    built: dict[str, Any] = {}

    def build() -> dict[str, Any]:
        built["model"], trained = built_model(name, size, calib)
        return {"input": size, "params_m": sum(p.numel() for p in built["model"].parameters()) / 1e6, **trained}

    def export_stage() -> dict[str, Any]:
        floor = round(rounding_floor(built["model"], calib, held_out), 5)
        result = export(built.pop("model"), torch.zeros(1, 3, size, size), work / FP32, held_out)
        runner = open_runner_2(work / FP32)
        reference = runner.predict(held_out)
        np.save(work / REFERENCE, reference)
        return {**result, "noise_cosine": round(noise_floor(runner, held_out, calib, reference), 5), ROUNDING: floor}

    if run_stage(state, "build", build) is not None:
        run_stage(state, "export", export_stage)


def floor_child(name: str, state: State) -> None:
    """The rounding floor alone, for a row stored before it was measured (``--floors``)."""
    size = input_size(name)
    calib, held_out = images(size)
    run_stage(state, "floor", lambda: {ROUNDING: round(rounding_floor(built_model(name, size, calib)[0], calib,
                                                                     held_out), 5)})


def head() -> dict[str, Any]:
    """torchvision builder arguments: the 10-class head of a digits-trained net."""
    return {"num_classes": 10} if WEIGHTS == "digits" else {}


def built_model(name: str, size: int, calib: np.ndarray) -> tuple[Any, dict[str, Any]]:
    """The net a row measures, and for a trained one its validation top-1 and training time."""
    from bench_parity import calibrated_model

    model = calibrated_model(name, size, calib, **head())
    if WEIGHTS != "digits":
        return model, {}
    from bench_parity import digits_recipe

    started = time.time()
    bf16 = trains_bf16(model, size)
    checkpoint = training_checkpoint(name)
    resumed = (checkpoint / "last.pt").is_file()
    top1 = train_on_digits(model, digits_recipe(size), bf16=bf16, checkpoint_dir=checkpoint)
    return model, {"weights": WEIGHTS, "val_top1": round(top1, 2), "train_s": round(time.time() - started, 1),
                   "train_amp": "bf16" if bf16 else None, **({"train_resumed": True} if resumed else {})}


def training_checkpoint(name: str) -> Path:
    return TRAINING / f"{name}-{input_size(name)}"


def trains_bf16(model: Any, size: int) -> bool:
    """Whether the digits training runs under bf16 autocast: only where the CPU multiplies bfloat16 in
    hardware (AMX or AVX512-BF16; elsewhere it is emulated and slower), and there only when one
    training step of this net is at least ``BF16_MIN_GAIN`` times faster in bf16 than in fp32,
    timed on a copy (batch 64, channels_last, the step after a warm-up one). Measured, not ruled,
    because the answer depends on the CPU and the net: on a 2-core Sapphire Rapids (AMX) depthwise
    nets lost (MobileNet-V3-Large fp32 / bf16 0.91 / 1.50 s, EfficientNet-B2 2.27 / 3.05 s) and
    ResNet-50 gained (4.02 / 2.55 s); on a 2-core AMD EPYC (AVX512-BF16, no AMX) MobileNet-V2
    (1.16 / 0.74 s) and EfficientNet-B4 (5.06 / 3.48 s) gained too, MobileNet-V3-Large still lost
    (0.65 / 0.85 s). Rows record the choice (``train_amp``)."""
    import copy

    import torch

    from edgekit.isa import host_isa_flags

    if not {"amx_bf16", "avx512_bf16"} & set(host_isa_flags()):
        return False
    trial = copy.deepcopy(model).train().to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(trial.parameters(), lr=DIGITS_LR)
    generator = torch.Generator().manual_seed(0)
    batch = torch.randn(64, 3, size, size, generator=generator).contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 10, (64,), generator=generator)

    def step_s(bf16: bool) -> float:
        started = time.perf_counter()
        optimizer.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = torch.nn.functional.cross_entropy(trial(batch), labels)
        loss.backward()
        optimizer.step()
        return time.perf_counter() - started

    step_s(False), step_s(True)  # warm-up: first steps allocate and pick kernels
    timings = {bf16: min(step_s(bf16) for _ in range(2)) for bf16 in (False, True)}
    return timings[False] >= BF16_MIN_GAIN * timings[True]


def train_on_digits(model: Any, recipe: Any, bf16: bool = False, checkpoint_dir: Path | None = None) -> float:
    """Train ``model`` in place on scikit-learn's digits prepared by ``recipe`` (the zoo's: the
    calibration and held-out images' own preprocessing), best validation epoch kept, then its
    BatchNorm statistics set on the training images, left in eval mode; its validation top-1. Why:
    random weights with BatchNorm statistics set on images do not quantize like trained ones.
    bench_trained_vs_random measured the demo's ResNet-18 both ways: rounding floor 0.9974 random,
    0.999995 trained; edgekit's ORT INT8 cosine 0.988 random, 0.99994 trained.

    BatchNorm trains with PyTorch's default momentum (0.1): ``calibrated_model`` left it None, a running
    average over every batch since the calibration images, which lagged the changing weights so far
    that a net of training loss 0.03 scored 18% (mobilenet_v2). Its final statistics are recomputed on
    the training images with the kept weights ("precise BatchNorm"), what a trained net's are. A net
    without BatchNorm trains at ``DIGITS_LR_WITHOUT_BATCHNORM``. Speed: channels_last, and with
    ``bf16`` under bf16 autocast (``trains_bf16`` says where that is faster); BatchNorm statistics and
    top-1 are fp32."""
    import torch
    from bench_parity import set_batchnorm_statistics
    from edgekit.data import load_recipe
    from edgekit.distill import fit
    from edgekit.distill.data import as_dataset
    from edgekit.distill.objectives import accuracy

    batchnorms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for module in batchnorms:
        module.momentum = 0.1
    recipe = load_recipe(recipe)
    fit(model, "builtin:digits/train", recipe, val_source="builtin:digits/val", epochs=DIGITS_EPOCHS,
        lr=DIGITS_LR if batchnorms else DIGITS_LR_WITHOUT_BATCHNORM, batch_size=64, progress=False, log=lambda _: None,
        channels_last=True, amp=bf16, checkpoint_dir=checkpoint_dir)
    train = as_dataset("builtin:digits/train", recipe)
    set_batchnorm_statistics(model, torch.stack([train[i][0] for i in range(len(train))]).numpy())
    val = torch.utils.data.DataLoader(as_dataset("builtin:digits/val", recipe), batch_size=64)
    return float(accuracy(model, val))


def rounding_floor(model: Any, calib: np.ndarray, held_out: np.ndarray) -> float:
    """Output cosine of the FP32 torch model with uniform noise of +-half an INT8 step (of the tensor's
    min/max range over the calibration images, zero included, as MinMax calibration sets it) added to
    the input of every Conv and Linear: the rounding error of the tensors every INT8 scheme quantizes,
    weights and every other tensor left exact. Measured: EfficientNet-B0 at 128 px amplifies that
    noise so much that no block stands out (quantizing all but one block: 0.685-0.713), a ResNet-18
    hardly at all. An INT8 cosine near this floor is what 8-bit activations allow this net."""
    import torch
    from edgekit.tasks.base import output_cosine

    layers = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    ranges: dict[Any, tuple[float, float]] = {}

    def observe(module: Any, args: tuple) -> None:
        low, high = ranges.get(module, (0.0, 0.0))
        ranges[module] = (min(low, float(args[0].min())), max(high, float(args[0].max())))

    generator = torch.Generator().manual_seed(0)

    def perturb(module: Any, args: tuple) -> tuple:
        low, high = ranges[module]
        noise = (torch.rand(args[0].shape, generator=generator) - 0.5) * ((high - low) / 255)
        return (args[0] + noise, *args[1:])

    def outputs(batches: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return np.concatenate([model(torch.from_numpy(b)).numpy() for b in np.array_split(batches, max(1, len(batches) // 8))])

    with_hooks(layers, observe, lambda: outputs(calib))
    noisy = with_hooks(layers, perturb, lambda: outputs(held_out))
    return output_cosine(noisy, outputs(held_out))


def with_hooks(layers: list[Any], pre_hook: Callable[..., Any], run: Callable[[], np.ndarray]) -> np.ndarray:
    """``run()`` with ``pre_hook`` on every layer's input, removed afterwards."""
    hooks = [layer.register_forward_pre_hook(pre_hook) for layer in layers]
    try:
        return run()
    finally:
        for hook in hooks:
            hook.remove()


def noise_floor(runner: Any, held_out: np.ndarray, calib: np.ndarray, reference: np.ndarray) -> float:
    """The FP32 model's own output cosine when its input is rounded to one INT8 step (uniform noise of
    +-half a step of the calibration range): what no INT8 model can beat. A random-weight net can be
    chaotic where a trained one is not (measured at 128 px: MnasNet-0.75 0.983 and 84% top-1 agreement,
    ResNet-18 0.9999): a row's INT8 cosine is read against this floor."""
    from edgekit.tasks.base import output_cosine

    step = float(calib.max() - calib.min()) / 255
    noise = np.random.default_rng(0).uniform(-0.5, 0.5, held_out.shape).astype(np.float32) * step
    return output_cosine(runner.predict(held_out + noise), reference)


def runtime_child(name: str, part: str, state: State, work: Path) -> None:
    """ORT or TFLite INT8 of the exported model, with its fidelity and speed."""
    calib, held_out = images(input_size(name))
    reference = np.load(work / REFERENCE)
    stage = {"ort": ort_stage, "tflite": tflite_stage}[part]
    run_stage(state, part, lambda: stage(work / FP32, work, calib, held_out, reference))


def export(model: Any, example: Any, path: Path, samples: np.ndarray) -> dict[str, Any]:
    """Export with the parity gate; a parity failure is recorded and the unchecked export kept, so
    quantization is still measured."""
    from edgekit.errors import ParityError, first_line
    from edgekit.export import export_onnx

    try:
        result = export_onnx(model, example, path, samples=samples[:2], force=True)
        return {"exporter": result.exporter, "mb": round(path.stat().st_size / 1e6, 1)}
    except ParityError as exc:
        export_onnx(model, example, path, parity_count=0, force=True)
        return {"ok": False, "error": f"ParityError: {first_line(exc, 240)}", "fallback": "quantized the unchecked export"}


def open_runner_2(path: Path, **options: Any) -> Any:
    from edgekit.runtime import open_runner

    return open_runner(str(path), threads=THREADS, **options)


def ort_stage(fp32: Path, work: Path, calib: np.ndarray, held_out: np.ndarray, reference: np.ndarray) -> dict[str, Any]:
    """quantize_ort_workflow as the CLI runs it (sensitivity ranking on); if it fails after the INT8
    model could be made, the failure is recorded and a plain quantize_ort gives the figures."""
    from edgekit.quantize.ort import quantize_ort, quantize_ort_workflow

    out = work / "int8.onnx"
    outcome: dict[str, Any] = {}
    try:
        quantize_ort_workflow(fp32, out, calib, threads=THREADS, force=True, progress=False, log=lambda _: None)
    except Exception as exc:  # noqa: BLE001
        outcome = {"ok": False, "error": error_text(exc), "fallback": "quantize_ort without the sensitivity step"}
        fallback(exc, lambda: quantize_ort(fp32, out, calib, force=True, progress=False))
    return {**fidelity(fp32, out, held_out, reference), **outcome}


def tflite_stage(fp32: Path, work: Path, calib: np.ndarray, held_out: np.ndarray, reference: np.ndarray) -> dict[str, Any]:
    """Full-integer TFLite; where that is impossible (an op with no integer kernel), the stage passes
    only with ``--float-fallback``, and the row says so (``float-fb``) with the ops kept in float."""
    from edgekit.quantize.tflite import quantize_tflite

    out = work / "m.int8.tflite"
    outcome: dict[str, Any] = {}
    try:
        quantize_tflite(fp32, out, calib, force=True, progress=False)
    except Exception as exc:  # noqa: BLE001
        fallback(exc, lambda: quantize_tflite(fp32, out, calib, force=True, progress=False, float_fallback=True))
        outcome = {"float_fallback": quantize_record(out).get("float_ops", []), "full_integer_error": error_text(exc)}
    translation = quantize_record(out).get("fp32_translation_cosine")  # FP32 TFLite vs the ONNX model
    return {**fidelity(work / "m.fp32.tflite", out, held_out, reference), **builtin_kernels(out, held_out, reference),
            "translation_cosine": translation, **outcome}


def quantize_record(path: Path) -> dict[str, Any]:
    from edgekit.manifest import read_manifest

    return next(s for s in read_manifest(path)["stages"] if s["stage"] == "quantize")


def builtin_kernels(int8: Path, held_out: np.ndarray, reference: np.ndarray) -> dict[str, Any]:
    """The TFLite INT8 cosine through the builtin kernels, without the XNNPACK delegate the interpreter
    (and ``fidelity``) uses by default: XNNPACK's int8 BATCH_MATMUL of two activations loses precision
    the model does not (swin_t at 128 px: 0.943 through XNNPACK, 0.998 through the builtin kernels)."""
    from edgekit.tasks.base import output_cosine

    got = open_runner_2(int8, delegate="none").predict(held_out)
    return {"builtin_cosine": round(output_cosine(got, reference), 5)}


def fallback(original: Exception, attempt: Callable[[], Any]) -> None:
    """Try the weaker variant; if it fails too, the stage's error is the first failure, not the retry's."""
    try:
        attempt()
    except Exception:  # noqa: BLE001
        raise original from None


def fidelity(fp32: Path, int8: Path, held_out: np.ndarray, reference: np.ndarray) -> dict[str, Any]:
    """INT8 vs FP32 (``reference``: the FP32 ONNX logits) on held-out images, and INT8's speed-up over
    its own runtime's FP32 model (``fp32``), timed interleaved on the same runner as bench."""
    from edgekit.tasks.base import output_cosine

    runners = {"fp32": open_runner_2(fp32), "int8": open_runner_2(int8)}
    got = runners["int8"].predict(held_out)
    feeds = {k: r.example_feeds() for k, r in runners.items()}
    p50 = interleaved_p50_ms({k: (lambda r=r, f=feeds[k]: r.run(f)) for k, r in runners.items()},
                             rounds=5, per_round=4, warmup=3)
    return {"cosine": round(output_cosine(got, reference), 5),
            "agree": round(float(np.mean(got.argmax(1) == reference.argmax(1))), 3),
            "speedup": round(p50["fp32"] / p50["int8"], 2), "fp32_ms": round(p50["fp32"], 2),
            "int8_ms": round(p50["int8"], 2), "mb": round(int8.stat().st_size / 1e6, 1)}


def child_main(args: argparse.Namespace) -> None:
    """One part (a key of PARTS) of one architecture, progress in ``--state``."""
    import logging

    logging.disable(logging.WARNING)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import torch

    torch.set_num_threads(THREADS)
    global SIZE, WEIGHTS
    SIZE, WEIGHTS = args.size, args.weights
    state = State(Path(args.state))
    work = Path(args.state).parent
    global _FAULTS  # kept open: a crash's Python stacks go there (what edgekit's supervisor reads)
    _FAULTS = open(fault_path(Path(args.state)), "w")
    faulthandler.enable(_FAULTS, all_threads=True)
    if args.child_part == "prune":
        prune_child(args.child, state)
    elif args.child_part == "export":
        export_child(args.child, state, work)
    elif args.child_part == "floor":
        floor_child(args.child, state)
    else:
        runtime_child(args.child, args.child_part, state, work)


# --- parent side: children, limits, rows ------------------------------------------------------------

def run_part(name: str, part: str, work: Path, args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Run one part in a child process; kill it past ``--timeout`` per stage or ``--max-rss-gb``;
    return its stages, the killed or crashed one named with why."""
    state_path = work / f"{part}.json"
    stderr_path = work / f"{part}.stderr"
    command = [sys.executable, __file__, "--child", name, "--child-part", part, "--state", str(state_path),
               "--size", str(args.size), "--weights", args.weights]
    with open(stderr_path, "wb") as stderr:
        # cwd: the scratch folder, where a killed ORT child's temporary files (shape inference) go too
        proc = subprocess.Popen(command, cwd=work, stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True,
                                env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))})
        killed, peak_mb = watch(proc, state_path, args.timeout, args.max_rss_gb * 1024)
    state = read_state(state_path)
    stages = state["stages"]
    if state["current"] is not None:
        stage = state["current"]["stage"]
        reason = killed or f"child died ({exit_reason(proc.returncode, state_path)}): {last_line(stderr_path)}"
        stages[stage] = {"ok": False, "error": reason, "s": round(time.time() - state["current"]["started"], 1)}
    elif all(s in stages for s in PARTS[part]) and proc.returncode and not killed:
        # every stage recorded, then a crash while the interpreter tore the libraries down: the figures
        # stand (edgekit's supervisor keeps such a command's exit code too); the crash is noted
        stages[PARTS[part][-1]]["after_exit"] = f"child died at exit ({exit_reason(proc.returncode, state_path)})"
    elif killed or proc.returncode:  # between stages: charged to the next one
        stage = next((s for s in PARTS[part] if s not in stages), PARTS[part][-1])
        stages[stage] = {"ok": False, "error": killed or f"child died ({exit_reason(proc.returncode, state_path)}): "
                                                      f"{last_line(stderr_path)}"}
    for entry in stages.values():
        entry["part_rss_mb"] = round(peak_mb)  # the child's process tree, sampled every 0.5 s
    return stages


def watch(proc: subprocess.Popen, state_path: Path, timeout: float, max_rss_mb: float) -> tuple[str | None, float]:
    """Poll the child until it ends; kill its process group on a stage timeout or the RSS cap and say
    which; also the peak RSS seen. Outside a stage (imports, between stages) the clock runs from the
    last progress."""
    launched, peak = time.time(), 0.0
    while proc.poll() is None:
        time.sleep(0.5)
        current = read_state(state_path)["current"]
        since = current["started"] if current else (state_path.stat().st_mtime if state_path.exists() else launched)
        reason = None
        if time.time() - since > timeout:
            reason = f"timeout: stage ran over {timeout:g} s"
        rss = tree_rss_mb(proc.pid)
        peak = max(peak, rss)
        if reason is None and rss > max_rss_mb:
            reason = f"out of memory: RSS over {max_rss_mb / 1024:.1f} GB"
        if reason:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return reason, peak
    return None, peak


def tree_rss_mb(pid: int) -> float:
    """RSS of a process and its children (TFLite verification runs in a child interpreter)."""
    import psutil

    total = 0
    try:
        process = psutil.Process(pid)
        for p in [process, *process.children(recursive=True)]:
            total += p.memory_info().rss
    except psutil.Error:
        pass
    return total / 2**20


def read_state(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {"stages": {}, "current": None}


def fault_path(state_path: Path) -> Path:
    return state_path.with_suffix(".faults")


def exit_reason(code: int | None, state_path: Path | None = None) -> str:
    """How a child ended; for a crash, where (the library and edgekit's step, from its faulthandler
    stacks, as edgekit's supervisor says it)."""
    if code is None or code >= 0:
        return f"exit {code}"
    from edgekit.supervise import crash_site

    faults = fault_path(state_path) if state_path else None
    library, step = crash_site(faults.read_text(errors="replace")) if faults and faults.exists() else (None, None)
    where = (f" inside {library}" if library else "") + (f", during {step}" if step else "")
    return f"killed by {signal.Signals(-code).name}{where}"


def last_line(path: Path) -> str:
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1][:240] if lines else "no output"


def run_architecture(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Each part of one architecture in its own child, in a scratch folder deleted with its artifacts:
    pruning, export and each runtime fail alone (an ORT OOM still leaves TFLite's figures)."""
    started = time.time()
    parts = ["prune", "export", "ort"] + ([] if args.skip_tflite else ["tflite"])
    stages: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix=f"zoo-{name}-") as folder:
        for part in parts:
            if part in ("ort", "tflite") and not (Path(folder) / REFERENCE).exists():
                break  # no exported model to quantize
            stages.update(run_part(name, part, Path(folder), args))
    without_folder(stages, folder)
    return {"arch": name, "size": args.size, "stages": stages, "total_s": round(time.time() - started, 1),
            "finished": time.strftime("%Y-%m-%d %H:%M:%S"), "commit": git_commit(), "machine": machine()}


def add_floor(row: dict[str, Any], args: argparse.Namespace) -> bool:
    """Put the rounding floor into a stored row's export stage where it is missing; True if it changed."""
    export = row["stages"].get("export") or {}
    if ROUNDING in export or not export.get("ok"):
        return False
    log(f"{row['arch']}: rounding floor ...")
    with tempfile.TemporaryDirectory(prefix=f"zoo-{row['arch']}-") as folder:
        measured = run_part(row["arch"], "floor", Path(folder), args).get("floor", {})
    if ROUNDING not in measured:
        log(f"{row['arch']}: rounding floor not measured ({measured.get('error')})")
        return False
    export[ROUNDING] = measured[ROUNDING]
    return True


def redo_stages(row: dict[str, Any], parts: list[str], args: argparse.Namespace) -> bool:
    """Re-run the quantization ``parts`` of a stored row on a fresh export (after a quantizer changed),
    each redone stage marked with the commit it ran on; the other stages stay. True if any ran."""
    if not (row["stages"].get("export") or {}).get("ok"):
        return False
    log(f"{row['arch']}: redoing {', '.join(parts)} ...")
    with tempfile.TemporaryDirectory(prefix=f"zoo-{row['arch']}-") as folder:
        run_part(row["arch"], "export", Path(folder), args)  # the model to quantize and its FP32 reference
        if not (Path(folder) / REFERENCE).exists():
            log(f"{row['arch']}: export failed this time; nothing redone")
            return False
        for part in parts:
            for stage, entry in without_folder(run_part(row["arch"], part, Path(folder), args), folder).items():
                row["stages"][stage] = {**entry, "redone_on": git_commit()}
    return True


def without_folder(stages: dict[str, dict[str, Any]], folder: str) -> dict[str, dict[str, Any]]:
    """``stages`` with the scratch folder (deleted with the row's artifacts) taken out of their errors:
    an error names the file alone."""
    for entry in stages.values():
        if "error" in entry:
            entry["error"] = entry["error"].replace(folder + os.sep, "")
    return stages


def machine() -> dict[str, Any]:
    """The CPU a row's times and INT8 figures come from (rows from several sessions share one file)."""
    from edgekit.isa import host_u8s8_saturates
    from edgekit.runtime.device_runner import system_info

    info = system_info()
    return {"cpu": info.get("cpu_model"), "cores": info.get("cpu_count"), "u8s8_saturates": host_u8s8_saturates()}


def git_commit() -> str:
    """The edgekit commit a row was measured on, so a stale row can be told from a current one."""
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


# --- printing ----------------------------------------------------------------------------------------

HEADERS = ["arch", "prune", "MACs kept", "prune peak MB (+in prune)", "build", "export", "FP32 noise cos", "rounding floor", "ORT", "ORT cos", "ORT agree",
           "ORT speed-up", "TFLite", "TFLite cos", "TFLite cos builtin", "TFLite agree", "TFLite speed-up", "stage s (prune/build/exp/ort/tfl)"]


def verdict(stage: dict[str, Any] | None) -> str:
    if stage is None:
        return "-"
    if stage.get("ok"):
        return "float-fb" if "float_fallback" in stage else "ok"
    return "FAIL*" if "fallback" in stage else "FAIL"


def figure(stage: dict[str, Any] | None, key: str, fmt: str) -> str:
    value = (stage or {}).get(key)
    return "" if value is None else format(value, fmt)


def table_row(row: dict[str, Any]) -> list[str]:
    s = row["stages"]
    times = "/".join(figure(s.get(k), "s", ".3g") or "-" for k in STAGES)
    return [row["arch"], verdict(s.get("prune")), figure(s.get("prune"), "macs_kept", ".0%"), prune_memory(s.get("prune")),
            built(s.get("build")), verdict(s.get("export")), figure(s.get("export"), "noise_cosine", ".4f"),
            figure(s.get("export"), ROUNDING, ".4f"),
            verdict(s.get("ort")), figure(s.get("ort"), "cosine", ".4f"), figure(s.get("ort"), "agree", ".0%"), figure(s.get("ort"), "speedup", ".2f"),
            verdict(s.get("tflite")), figure(s.get("tflite"), "cosine", ".4f"), figure(s.get("tflite"), "builtin_cosine", ".4f"),
            figure(s.get("tflite"), "agree", ".0%"),
            figure(s.get("tflite"), "speedup", ".2f"), times]


def built(stage: dict[str, Any] | None) -> str:
    """The build verdict, with the validation top-1 of a net trained on digits (``--weights digits``)."""
    top1 = (stage or {}).get("val_top1")
    if top1 is None:
        return verdict(stage)
    return verdict(stage) + f" (digits {top1:.0f}%{'' if _learned(stage) else ', not learned'})"


def learned(row: dict[str, Any]) -> bool:
    """False for a digits row whose training stayed near chance (``LEARNED_TOP1``); random rows: True."""
    return _learned(row["stages"].get("build"))


def _learned(build: dict[str, Any] | None) -> bool:
    top1 = (build or {}).get("val_top1")
    return top1 is None or top1 > LEARNED_TOP1


def prune_memory(stage: dict[str, Any] | None) -> str:
    """The pruning child's peak RSS and how much of it came after the model was built."""
    if not stage or "peak_mb" not in stage:
        return ""
    return f"{stage['peak_mb']:.0f} (+{stage['peak_mb'] - stage['rss_before_mb']:.0f})"


def failures(row: dict[str, Any]) -> list[str]:
    """One line per failed stage: the architecture, the stage, the error's first line (and fallback)."""
    lines = []
    for stage in STAGES:
        entry = row["stages"].get(stage)
        if entry and not entry.get("ok"):
            extra = f" (figures from: {entry['fallback']})" if "fallback" in entry else ""
            lines.append(f"{row['arch']}: {stage}: {entry.get('error')}{extra}")
        elif entry and "float_fallback" in entry:
            lines.append(f"{row['arch']}: {stage}: float fallback for {', '.join(entry['float_fallback']) or '-'} "
                         f"({entry.get('full_integer_error')})")
    return lines


def coverage(rows: list[dict[str, Any]]) -> str:
    """Per stage N/M passed, median cosine per runtime (over rows whose training learned), and the slowest stages."""
    parts = []
    for stage in STAGES:
        tried = [r["stages"][stage] for r in rows if stage in r["stages"]]
        parts.append(f"{stage} {sum(bool(t.get('ok')) for t in tried)}/{len(rows)}")
    timed = sorted(((e["s"], f"{r['arch']}/{k}") for r in rows for k, e in r["stages"].items() if "s" in e), reverse=True)
    unlearned = [r["arch"] for r in rows if not learned(r)]
    if unlearned:
        parts.append(f"fidelity figures below leave out {len(unlearned)} row(s) whose digits training stayed near "
                     f"chance (validation top-1 <= {LEARNED_TOP1:.1f}%): {', '.join(unlearned)}")
        rows = [r for r in rows if learned(r)]
    for runtime in ("ort", "tflite"):
        cosines = [r["stages"][runtime]["cosine"] for r in rows if "cosine" in r["stages"].get(runtime, {})]
        if cosines:
            parts.append(f"median {runtime} cosine {statistics.median(cosines):.4f} (n={len(cosines)}, "
                         f"{sum(c < 0.99 for c in cosines)} below 0.99)")
    builtin = [r["stages"]["tflite"]["builtin_cosine"] for r in rows if "builtin_cosine" in r["stages"].get("tflite", {})]
    if builtin:
        parts.append(f"median tflite cosine through the builtin kernels (no XNNPACK) {statistics.median(builtin):.4f} "
                     f"(n={len(builtin)}, {sum(c < 0.99 for c in builtin)} below 0.99)")
    floors = [r["stages"]["export"]["noise_cosine"] for r in rows if "noise_cosine" in r["stages"].get("export", {})]
    if floors:
        parts.append(f"FP32 input-noise cosine below 0.99 (chaotic random net): {sum(f < 0.99 for f in floors)}/{len(floors)}")
    parts += floor_summary(rows)
    parts.append("slowest: " + (", ".join(f"{label} {s:.0f} s" for s, label in timed[:3]) or "-"))
    return "coverage: " + "; ".join(parts)


def floor_summary(rows: list[dict[str, Any]]) -> list[str]:
    """The rounding floor's median, and per runtime how many INT8 cosines come within 0.01 of it."""
    floored = [r for r in rows if ROUNDING in r["stages"].get("export", {})]
    if not floored:
        return []
    parts = [f"median rounding floor {statistics.median(r['stages']['export'][ROUNDING] for r in floored):.4f} "
             f"(n={len(floored)}, {sum(r['stages']['export'][ROUNDING] < 0.99 for r in floored)} below 0.99)"]
    for runtime in ("ort", "tflite"):
        pairs = [(r["stages"][runtime]["cosine"], r["stages"]["export"][ROUNDING]) for r in floored
                 if "cosine" in r["stages"].get(runtime, {})]
        parts.append(f"{runtime} cosine within 0.01 of the floor (or above it): "
                     f"{sum(c >= f - 0.01 for c, f in pairs)}/{len(pairs)}")
    return parts


def print_table(rows: list[dict[str, Any]]) -> None:
    print(markdown([table_row(r) for r in rows], HEADERS))
    print("\nFAIL* = the stage failed; its figures come from the fallback named below. float-fb = full-integer "
          "TFLite is impossible (reason below); it passed with --float-fallback, those ops in float.\n")
    for row in rows:
        for line in failures(row):
            print(f"- {line}")
    print(f"\n{coverage(rows)}")


# --- command line ------------------------------------------------------------------------------------

def architectures(args: argparse.Namespace) -> list[str]:
    import torchvision

    names = args.only.split(",") if args.only else torchvision.models.list_models(module=torchvision.models)
    if not args.only:  # smallest first: an interrupted sweep has covered the most architectures
        names.sort(key=parameter_count)
    return names[: args.limit] if args.limit else names


def parameter_count(name: str) -> int:
    """From torchvision's weight metadata (nothing downloaded, nothing built)."""
    import torchvision

    return list(torchvision.models.get_model_weights(name))[0].meta["num_params"]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated architectures (default: every torchvision classifier)")
    parser.add_argument("--limit", type=int, help="the first N architectures only")
    parser.add_argument("--force", action="store_true", help="redo architectures already in zoo.jsonl")
    parser.add_argument("--skip-tflite", action="store_true", help="no TFLite stage")
    parser.add_argument("--timeout", type=float, default=3600,
                        help="seconds per stage before the child is killed (the stored rows' slowest stage, "
                             "maxvit_t's TFLite at 224 px, took 3043 s on 2 shared cores)")
    parser.add_argument("--max-rss-gb", type=float, default=default_rss_cap_gb(),
                        help="memory cap of a child's process tree (default: 20 GB, the stored rows' cap, "
                             "or this machine's memory less 3 GB if that is less)")
    parser.add_argument("--size", type=int, default=SIZE, help="input size (MaxViT stays 224; ViTs round to whole patches)")
    parser.add_argument("--weights", choices=("random", "digits"), default=WEIGHTS,
                        help="random (BatchNorm statistics set on images) or digits (then trained on scikit-learn's "
                        "digits, a 10-class head; rows in their own file)")
    parser.add_argument("--rows", type=Path, help="the JSON-lines file rows are kept in (default: results/zoo.jsonl "
                        "at 224, results/zoo-SIZE.jsonl at another size; zoo-digits.jsonl, zoo-SIZE-digits.jsonl "
                        "with --weights digits)")
    parser.add_argument("--table", action="store_true", help="print the stored rows as Markdown and exit")
    parser.add_argument("--floors", action="store_true", help="measure the rounding floor of stored rows without one "
                        "(nothing else is redone)")
    parser.add_argument("--redo", help="comma-separated quantization stages (ort, tflite) to re-run on stored rows, "
                        "on a fresh export; the other stages stay")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--child-part", choices=tuple(PARTS), help=argparse.SUPPRESS)
    parser.add_argument("--state", help=argparse.SUPPRESS)
    return parser.parse_args()


def default_rss_cap_gb() -> float:
    """20 GB (what the stored rows ran under: the largest models' TFLite conversions need 10-20 GB), less
    where the machine has less than 23 GB, so that a child is stopped before the kernel's OOM killer acts."""
    import psutil

    return round(min(20.0, psutil.virtual_memory().total / 2**30 - 3.0), 1)


def main() -> None:
    args = parse_args()
    if args.child:
        child_main(args)
        return
    global SIZE, WEIGHTS  # the parent's too: it names the training checkpoints (training_checkpoint)
    SIZE, WEIGHTS = args.size, args.weights
    if args.rows is None:
        stem = "zoo" + ("" if args.size == 224 else f"-{args.size}") + ("" if args.weights == "random" else f"-{args.weights}")
        args.rows = ROWS.with_name(f"{stem}.jsonl")
    stored = load_rows(args.rows, "arch")
    names = architectures(args)
    if args.floors:
        for name in names:
            if name in stored and add_floor(stored[name], args):
                save_row(args.rows, stored[name])
    elif args.redo:
        parts = args.redo.split(",")
        if unknown := [p for p in parts if p not in ("ort", "tflite")]:
            print(f"--redo: {unknown[0]} is not a quantization stage (ort, tflite)", file=sys.stderr)
            raise SystemExit(2)
        for name in names:
            if name in stored and redo_stages(stored[name], parts, args):
                save_row(args.rows, stored[name])
                shutil.rmtree(training_checkpoint(name), ignore_errors=True)
                print(" | ".join(table_row(stored[name])), flush=True)
    elif not args.table:
        for name in names:
            if name in stored and not args.force:
                log(f"{name}: done before (--force redoes it)")
                continue
            log(f"{name}: running ...")
            stored[name] = run_architecture(name, args)
            save_row(args.rows, stored[name])
            shutil.rmtree(training_checkpoint(name), ignore_errors=True)
            print(" | ".join(table_row(stored[name])), flush=True)
            for line in failures(stored[name]):
                print(f"  {line}", flush=True)
    print_table([stored[n] for n in names if n in stored] if args.only or args.limit else list(stored.values()))


if __name__ == "__main__":
    main()
