"""The work of each pipeline stage, built only from the public stage APIs (no logic of its own
beyond naming files and wiring one stage's outputs into the next).

Each step's ``reads_*`` function, right above the code that reads those things, declares everything
the step reads besides its input artifacts; the runner derives the stage's cache key from it (see
``STEPS`` at the end). A setting read below but left out above would make a stale stage, so when
a step starts reading something new, its ``reads_*`` says so in the same edit.
"""
from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
import logging
import random
from pathlib import Path
from typing import Any, Iterator

from edgekit.atomic import write_text_atomic
from edgekit.manifest import derive_manifest, new_manifest, read_manifest, sha256_file, write_manifest
from edgekit.pipeline.config import ModelConfig, PipelineConfig
from edgekit.pipeline.stages import Step, StepContext, versions

_log = logging.getLogger(__name__)


def _example(config: PipelineConfig) -> Any:
    import torch

    return torch.zeros(*config.model.input_shape)


def _load(path: Path, config: PipelineConfig) -> Any:
    """One of the pipeline's own model files, never unpickled; the config's model is the only
    architecture trusted beyond torchvision and edgekit.zoo."""
    from edgekit.sources import load_model

    m = config.model
    return load_model(str(path), m.kwargs, arch=m.arch or m.source, allow_pickle=False).module


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Seed torch, numpy and random and make torch deterministic, before any model is built: a model
    initialised from an unseeded generator made two runs of one file differ by 20 points."""
    import numpy as np
    import torch

    previous = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)  # warn, not fail, on an op without a deterministic kernel
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])


def _recipe(config: PipelineConfig) -> dict[str, Any]:
    from edgekit.data import load_recipe

    return load_recipe(config.data.recipe).as_dict()


def _data(config: PipelineConfig, *keys: str) -> dict[str, Any]:
    """The content of the named data sources (``calib``, ``train``...) and the recipe that prepares them."""
    from edgekit.data import fingerprint

    sources = {key: getattr(config.data, key) for key in keys}
    return {"recipe": _recipe(config), **versions("numpy", "pillow"),
            **{key: fingerprint(source) if source else None for key, source in sources.items()}}


def _file_hash(path: str | None) -> str | None:
    return sha256_file(path) if path and Path(path).is_file() else None


def _model_code(model: ModelConfig) -> dict[str, Any]:
    """The bytes that define the model: a model/weights file, or the source of a factory together
    with the local code it can import (``from blocks import act`` beside ``nets.py``, the rest of
    ``mypkg`` for ``mypkg.models:build``): editing a helper module changes the model too."""
    location = model.source.rpartition(":")[0] if ":" in model.source else model.source
    code = _file_hash(location)
    if code is not None and location.endswith(".py"):
        code = _local_code_hash(Path(location).parent, Path(location))
    elif code is None and location and location != "torchvision":
        try:
            spec = importlib.util.find_spec(location)
            top = importlib.util.find_spec(location.split(".")[0])
        except (ImportError, ValueError):
            spec = top = None
        code = _file_hash(spec.origin) if spec is not None else None
        if code is not None and top is not None and top.origin and not _is_library(Path(spec.origin)):
            folder = Path(top.origin).parent
            code = _local_code_hash(folder, Path(spec.origin))
    return {"source_sha256": code, "weights_sha256": _file_hash(model.weights)}


MAX_CODE_FILES = 2000  # beyond this a folder is not a project's model code (a home folder, a checkout)


def _is_library(path: Path) -> bool:
    """Installed code (the standard library, site-packages): its version is in the key already."""
    import sysconfig

    resolved = path.resolve()
    roots = {sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    return any(resolved.is_relative_to(Path(root).resolve()) for root in roots) or \
        resolved.is_relative_to(Path(__file__).resolve().parent.parent)


def _local_code_hash(folder: Path, factory_file: Path) -> str:
    """sha256 over the .py files of ``folder`` and of its packages (sub-folders with ``__init__.py``,
    descended only through packages, so a big folder beside them costs nothing), by relative name
    and content; the factory's own file always counts."""
    import hashlib

    folder = folder.resolve()
    files, pending = {factory_file.resolve()}, [folder]
    while pending and len(files) < MAX_CODE_FILES:
        current = pending.pop()
        with contextlib.suppress(OSError):
            for entry in sorted(current.iterdir()):
                if entry.suffix == ".py" and entry.is_file():
                    files.add(entry.resolve())
                elif entry.is_dir() and not entry.is_symlink() and (entry / "__init__.py").is_file():
                    pending.append(entry)
    digest = hashlib.sha256()
    for path in sorted(files):
        name = str(path.relative_to(folder)) if path.is_relative_to(folder) else str(path)
        digest.update(name.encode() + b"\0" + sha256_file(path).encode())
    return digest.hexdigest()


def _seed(config: PipelineConfig) -> int:
    return config.train.seed if config.train is not None else 0


def reads_train(ctx: StepContext) -> dict[str, Any]:
    config = ctx.config
    reads = {"model": config.model.model_dump(), **_model_code(config.model), "seed": _seed(config),
             **versions("torch", "torchvision")}
    if config.train is not None:
        reads |= {"train": config.train.model_dump(), "data": _data(config, "train", "val")}
        if config.task != "classification":  # the loss and the validation score
            reads["task"] = config.task
    return reads


def train_baseline(ctx: StepContext, inputs: list[Path]) -> list[Path]:
    from edgekit.sources import load_model, save_module

    config, out = ctx.config, ctx.artifacts / "baseline.pt"
    stages: list[dict[str, Any]] = []
    with _seeded(_seed(config)):
        loaded = load_model(config.model.source, config.model.kwargs, arch=config.model.arch,
                            weights=config.model.weights)
        if config.train is not None:
            from edgekit.distill import fit

            t = config.train
            history = fit(loaded.module, config.data.train, config.data.recipe, val_source=config.data.val,
                          checkpoint_dir=ctx.checkpoints, log=ctx.log, task=config.task, **t.model_dump())
            stages.append(history.manifest_stage("train", t.model_dump()))
    save_module(loaded.module, out, _example(config), force=True)
    write_manifest(out, new_manifest(out, source=loaded.describe(), stages=stages,
                                     input_spec={"shape": config.model.input_shape, "layout": "NCHW"}))
    return [out]


def _target_file(ctx: StepContext, name: str) -> str:
    """The profile file a target name resolves to (a user's targets folder first): settings resolved
    through this path honour ``--targets-dir`` even in helpers that take only a name."""
    from edgekit.targets import load_target

    return str(load_target(name, ctx.targets_dir).source)


def _profile(ctx: StepContext, name: str | None) -> dict[str, Any] | None:
    from edgekit.targets import load_target

    return load_target(name, ctx.targets_dir).model_dump() if name else None


def _round_to(ctx: StepContext) -> int:
    config = ctx.config
    if config.prune and config.prune.round_to:
        return config.prune.round_to
    if config.bench.targets:
        from edgekit.targets import load_target

        return load_target(config.bench.targets[0], ctx.targets_dir).pruning.channel_multiple
    return 8


def _prune_settings(ctx: StepContext) -> Any:
    from edgekit.prune import PruneSettings

    p = ctx.config.prune
    assert p is not None
    return PruneSettings(ratio=p.ratio_of(ctx.variant), target_macs=p.target_macs,
                         importance=p.importance, global_pruning=p.global_pruning, round_to=_round_to(ctx),
                         protect=tuple(p.protect), steps=p.steps)


def _recover_settings(ctx: StepContext) -> Any:
    """The ``distill:`` section as the workflow's settings; None when nothing is distilled."""
    from edgekit.distill import RecoverSettings

    config = ctx.config
    if config.distill is None or not config.data.train:
        return None
    return RecoverSettings(**config.distill.model_dump(), task=config.task)


def reads_prune(ctx: StepContext) -> dict[str, Any]:
    from edgekit.prune.workflow import reads_train_data

    config = ctx.config
    section = config.prune.model_dump()
    if ctx.variant:  # one ratio of the sweep: the other ratios are not read
        section |= {"ratios": None, "ratio": config.prune.ratio_of(ctx.variant), "variant": ctx.variant}
    reads = {"prune": section, "round_to": _round_to(ctx), "shape": config.model.input_shape,
             **versions("torch", "torch-pruning")}
    settings, recovery = _prune_settings(ctx), _recover_settings(ctx)
    if config.prune.target_latency_ms is not None:  # measured: where and with what it is measured
        reads["latency"] = {"where": _latency_place(ctx), "latency_of": config.prune.latency_of,
                            # the calibration images are read only to quantize INT8 candidates
                            "calib": _data(config, "calib") if config.prune.latency_of != "fp32-onnx" else None,
                            **versions("onnx", "onnxruntime", "tensorflow", "ai-edge-litert")}
    if config.data.train and reads_train_data(settings, recovery is not None):
        between = recovery is not None and settings.steps > 1
        reads |= {"data": _data(config, "train"), "recovery": recovery.as_dict() if between else None}
    return reads


def prune(ctx: StepContext, inputs: list[Path]) -> list[Path]:
    """Prune the baseline; with ``data.train``, Taylor importance ranks on real batches and, with
    ``distill`` and several ``prune.steps``, one epoch of distillation runs between steps."""
    from edgekit.distill import between_steps
    from edgekit.prune.workflow import prune_step
    from edgekit.sources import save_module

    config, baseline, out = ctx.config, inputs[0], ctx.artifacts / f"{_variant_stem(ctx)}.pt"
    settings, recovery = _prune_settings(ctx), _recover_settings(ctx)
    with _seeded(0):
        model = _load(baseline, config)
        fine_tune = None
        if recovery is not None and settings.steps > 1:
            teacher = _load(baseline, config).eval()
            fine_tune = between_steps(teacher, config.data.train, config.data.recipe, recovery, ctx.log)
        prune_one = lambda m, s: prune_step(m, _example(config), s, train=config.data.train,  # noqa: E731
                                            recipe=config.data.recipe, recovery=fine_tune, progress=None)
        extra: dict[str, Any] = {}
        if config.prune.target_latency_ms is not None:
            model, report, extra["latency_search"] = _prune_to_latency(ctx, model, settings, prune_one)
        else:
            report = prune_step(model, _example(config), settings, train=config.data.train,
                                recipe=config.data.recipe, recovery=fine_tune, progress=ctx.log)
    save_module(model, out, _example(config), force=True)
    stage = report.manifest_stage() | extra | ({"variant": ctx.variant} if ctx.variant else {})
    write_manifest(out, derive_manifest(baseline, out, stage))
    return [out]


def _latency_measurer(ctx: StepContext, runtime: str | None = None) -> Any:
    """Where ``prune.target_latency_ms`` and ``quantize.auto`` measure: the first bench device, else this
    machine with the first bench target's threads; ``runtime`` default: the one of ``prune.latency_of``."""
    from edgekit.bench.measure import Measurer
    from edgekit.pipeline.config import host_devices

    b, p = ctx.config.bench, ctx.config.prune
    runtime = runtime or ("tflite" if p and p.latency_of == "int8-tflite" else "onnxruntime")
    devices = host_devices(b)
    if devices:
        d = devices[0]
        return Measurer(host=d.spec, target=d.target and _target_file(ctx, d.target), remote_python=d.remote_python,
                        ssh_options=d.ssh_options, runtime=runtime)
    return Measurer(target=_target_file(ctx, b.targets[0]) if b.targets else None, runtime=runtime)


def _latency_place(ctx: StepContext) -> dict[str, Any]:
    """What ``_latency_measurer`` measures on, for the prune stage's key."""
    from edgekit.pipeline.config import host_devices

    b = ctx.config.bench
    devices = host_devices(b)
    if devices:
        return {"device": dataclasses.asdict(devices[0]), "profile": _profile(ctx, devices[0].target)}
    return {"profile": _profile(ctx, b.targets[0]) if b.targets else None,
            "machine": _this_machine("machine", "cpu_model", "cpu_count", "isa_flags")}


def _prune_to_latency(ctx: StepContext, model: Any, settings: Any, prune_one: Any) -> tuple[Any, Any, dict[str, Any]]:
    """``prune.target_latency_ms``: (the pruned model, its report, the manifest's ``latency_search``)."""
    from edgekit.prune.latency import CALIBRATION_SAMPLES, prune_to_latency

    config, p = ctx.config, ctx.config.prune
    calib = None
    if p.latency_of != "fp32-onnx":
        from edgekit.data import calibration_tensors

        calib = calibration_tensors(config.data.calib, config.data.recipe, CALIBRATION_SAMPLES, 0)
    return prune_to_latency(model, _example(config), settings, p.target_latency_ms, _latency_measurer(ctx),
                            prune_one, p.latency_of, calib, p.max_ratio, ctx.log)


def _variant_stem(ctx: StepContext) -> str:
    """``pruned``, or ``pruned-r0.3`` for one variant of a ``prune.ratios`` sweep."""
    return f"pruned-{ctx.variant}" if ctx.variant else "pruned"


def reads_distill(ctx: StepContext) -> dict[str, Any]:
    config = ctx.config
    return {"distill": config.distill.model_dump(), "data": _data(config, "train", "val"), **versions("torch")}


def distill(ctx: StepContext, inputs: list[Path]) -> list[Path]:
    from edgekit.distill import distill_stage, recover
    from edgekit.sources import save_module

    config, out = ctx.config, ctx.artifacts / f"{_variant_stem(ctx)}_distilled.pt"
    student_path, teacher_path = inputs
    settings = _recover_settings(ctx)
    assert settings is not None
    with _seeded(settings.seed):
        student, teacher = _load(student_path, config), _load(teacher_path, config)
        history = recover(student, teacher, config.data.train, config.data.recipe, settings, val=config.data.val,
                          checkpoint_dir=ctx.checkpoints, log=ctx.log)
    save_module(student, out, _example(config), force=True)
    write_manifest(out, derive_manifest(student_path, out, distill_stage(history, settings, teacher_path.name)))
    return [out]


def reads_export(ctx: StepContext) -> dict[str, Any]:
    return {"shape": ctx.config.model.input_shape, "recipe": _recipe(ctx.config),
            **versions("torch", "onnx", "onnxruntime")}


def export_models(ctx: StepContext, inputs: list[Path]) -> list[Path]:
    """The baseline to ``fp32.onnx`` and each pruned student to ``<its stem>.fp32.onnx``
    (``pruned_distilled.pt`` -> ``pruned.fp32.onnx``, ``pruned-r0.3.pt`` -> ``pruned-r0.3.fp32.onnx``)."""
    baseline, *students = inputs
    outputs = [export(ctx.config, baseline, ctx.artifacts / "fp32.onnx")]
    for student in students:
        stem = student.name[: -len(".pt")].removesuffix("_distilled")
        outputs.append(export(ctx.config, student, ctx.artifacts / f"{stem}.fp32.onnx"))
    return outputs


def export(config: PipelineConfig, model_path: Path, out: Path) -> Path:
    from edgekit.data import load_recipe
    from edgekit.export import export_onnx
    from edgekit.prune.verify import check_onnx_channels

    with _seeded(0):
        model = _load(model_path, config)
        history = read_manifest(model_path) or {}
        export_onnx(model, _example(config), out, force=True, source=history.get("source"),
                    preprocessing=load_recipe(config.data.recipe).as_dict(), prior_stages=history.get("stages"))
        check_onnx_channels(model, out)  # pruning must survive export
    return out


def _quantized_name(onnx_path: Path, suffix: str, kind: str = "int8") -> Path:
    """``fp32.onnx`` -> ``int8<suffix>``, ``pruned.fp32.onnx`` -> ``pruned.int8<suffix>``; ``kind`` is the
    mode's stem (``dynamic``, ``fp16``) for the modes without calibration."""
    stem = onnx_path.name[: -len(".onnx")]
    stem = stem[: -len(".fp32")] if stem.endswith(".fp32") else "" if stem == "fp32" else stem
    prefix = f"{stem}." if stem else ""
    return onnx_path.with_name(f"{prefix}{kind}{suffix}")


def _ort_settings(ctx: StepContext) -> Any:
    """ORT settings: host default <- the first bench target's profile <- the keys ``quantize.ort`` sets."""
    from edgekit.quantize.ort import resolve_settings
    from edgekit.targets import load_target

    config = ctx.config
    targets = config.bench.targets
    profile = load_target(targets[0], ctx.targets_dir) if targets else None
    return resolve_settings(profile, config.quantize.ort, origin="quantize.ort")


def _measures_accuracy(ctx: StepContext) -> bool:
    """``accuracy_budget`` and ``auto`` evaluate candidates on ``data.eval``."""
    q = ctx.config.quantize
    return q.ort is not None and (q.accuracy_budget is not None or q.auto)


def reads_quantize(ctx: StepContext) -> dict[str, Any]:
    q = ctx.config.quantize
    if "static" not in q.modes:
        return {"static": False}  # the stage writes nothing
    reads = {"num_samples": q.num_samples, "seed": q.seed, "data": _data(ctx.config, "calib"), "remedies": q.remedies,
             **versions("onnx", "onnxruntime")}
    if q.ort is not None:
        reads |= {"ort": _ort_settings(ctx).as_dict(), "accuracy_budget": q.accuracy_budget, "auto": q.auto}
    if _measures_accuracy(ctx):
        reads["eval_data"] = _data(ctx.config, "eval")
    if q.ort is not None and q.auto:  # the fastest candidate is the measuring machine's
        reads["measured_on"] = _latency_place(ctx)
    if q.tflite is not None:
        reads |= {"tflite": q.tflite.model_dump(), **versions("onnx2tf", "tensorflow", "tf-keras")}
    if ctx.config.task != "classification":  # what fidelity and its remedies measure
        reads["task"] = ctx.config.task
    return reads


def _backend_options(ctx: StepContext) -> dict[str, dict[str, Any]]:
    """Each configured backend (a section set to null is skipped) with the options its function takes."""
    from edgekit.quantize.accuracy import accuracy_on

    config, q = ctx.config, ctx.config.quantize
    options: dict[str, dict[str, Any]] = {}
    if q.ort is not None:
        evaluate = accuracy_on(config.data.eval, config.data.recipe, config.task) if _measures_accuracy(ctx) else None
        options["ort"] = {"settings": _ort_settings(ctx), "auto": q.auto, "accuracy_budget": q.accuracy_budget,
                          "evaluate": evaluate, "budget_key": "quantize.accuracy_budget", "log": ctx.log,
                          "remedies": q.remedies, "task": config.task,
                          # auto times its candidates where prune.target_latency_ms would: the first device, else here
                          **({"measure": _latency_measurer(ctx, "onnxruntime")} if q.auto else {})}
    if q.tflite is not None:
        options["tflite"] = {"float_io": q.tflite.float_io, "float_fallback": q.tflite.float_fallback,
                             "quantize_ops": q.tflite.quantize_ops, "task": config.task, "remedies": q.remedies}
    return options


def quantize_all(ctx: StepContext, onnx_files: list[Path]) -> list[Path]:
    from edgekit.data import calibration_tensors
    from edgekit.quantize.registry import get_backend

    config, log = ctx.config, ctx.log
    q = config.quantize
    if "static" not in q.modes:
        return []
    calib = calibration_tensors(config.data.calib, config.data.recipe, q.num_samples, q.seed)
    info = {"source": config.data.calib, "recipe": config.data.recipe, "num_samples": int(len(calib)), "seed": q.seed}
    outputs: list[Path] = []
    for onnx_path in onnx_files:
        for name, options in _backend_options(ctx).items():
            backend = get_backend(name)
            out = _quantized_name(onnx_path, backend.suffix)
            log(f"[quantize] {onnx_path.name} -> {out.name} ({backend.label})")
            result = backend.load()(onnx_path, out, calib, calibration_info=info, force=True, **options)
            outputs.extend(result.artifacts())
    return outputs


def _other_modes(config: PipelineConfig) -> list[str]:
    return [m for m in config.quantize.modes if m != "static"]


def modes_inputs(config: PipelineConfig, onnx_files: list[Path]) -> list[Path]:
    """The exported models the ``quantize_modes`` stage converts: all, or the baseline (``modes_for``)."""
    return onnx_files[:1] if config.quantize.modes_for == "baseline" else onnx_files


def _mode_backends(config: PipelineConfig) -> list[str]:
    q = config.quantize
    return [name for name, section in (("ort", q.ort), ("tflite", q.tflite)) if section is not None]


def reads_quantize_modes(ctx: StepContext) -> dict[str, Any]:
    q = ctx.config.quantize
    backends = _mode_backends(ctx.config)
    reads = {"modes": _other_modes(ctx.config), "backends": backends, "num_samples": q.num_samples, "seed": q.seed,
             "data": _data(ctx.config, "calib"), **versions("onnx", "onnxruntime")}
    if "tflite" in backends:
        reads |= versions("onnx2tf", "tensorflow", "tf-keras")
    return reads


def quantize_modes(ctx: StepContext, onnx_files: list[Path]) -> list[Path]:
    """``dynamic``/``fp16`` of each model for each configured backend; ``data.calib`` images (at most
    fidelity.HOLDOUT, none calibrated on) measure their fidelity to FP32."""
    from edgekit.data import calibration_tensors
    from edgekit.quantize.fidelity import HOLDOUT
    from edgekit.quantize.registry import get_backend, get_mode

    config, q = ctx.config, ctx.config.quantize
    samples = calibration_tensors(config.data.calib, config.data.recipe, min(HOLDOUT, q.num_samples), q.seed)
    info = {"source": config.data.calib, "recipe": config.data.recipe, "seed": q.seed}
    outputs: list[Path] = []
    for onnx_path in onnx_files:
        for mode in map(get_mode, _other_modes(config)):
            for backend in map(get_backend, _mode_backends(config)):
                out = _quantized_name(onnx_path, backend.suffix, mode.stem)
                ctx.log(f"[quantize_modes] {onnx_path.name} -> {out.name} ({mode.labels[backend.name]})")
                result = backend.load(mode.name)(onnx_path, out, samples, mode=mode.name, force=True,
                                                 calibration_info=info)
                outputs.extend(result.artifacts())
    return outputs


def _keep_only(folder: Path, written: list[Path]) -> list[Path]:
    """Remove the JSON files of artifacts or targets no longer in the run: the report reads the whole folder."""
    for stale in set(folder.glob("*.json")) - set(written):
        stale.unlink()
    return written


def _this_machine(*keys: str) -> dict[str, Any]:
    """What this machine contributes to a figure: INT8 kernels (and so INT8 accuracy) differ with the
    ISA, latency with the CPU, so a run folder copied to another machine redoes what depends on it."""
    from edgekit.runtime.device_runner import system_info

    info = system_info()
    return {key: info.get(key) for key in keys}


def _eval_runtimes(ctx: StepContext) -> list[str]:
    """The runtimes the bench targets list: each artifact's accuracy is measured on every runtime it
    is benchmarked on here (OpenVINO's INT8 arithmetic is not ONNX Runtime's)."""
    from edgekit.targets import load_target

    names = [name for target in ctx.config.bench.targets for name in load_target(target, ctx.targets_dir).runtimes]
    return list(dict.fromkeys(names))


def reads_eval(ctx: StepContext) -> dict[str, Any]:
    return {"task": ctx.config.task, "runtimes": _eval_runtimes(ctx), "data": _data(ctx.config, "eval"),
            "machine": _this_machine("machine", "isa_flags"),
            **versions("onnxruntime", "tensorflow", "ai-edge-litert", "openvino")}


def evaluate_all(ctx: StepContext, artifacts: list[Path]) -> list[Path]:
    """Every artifact on the evaluation data (decoded once), with agreement against the first (the
    FP32 baseline, run once)."""
    from edgekit.evaluate import evaluate_many

    config, eval_dir = ctx.config, ctx.run_dir / "eval"
    written = []
    results = evaluate_many(artifacts, config.data.eval, config.data.recipe, reference=artifacts[0], task=config.task,
                            also_on=_eval_runtimes(ctx), progress=True)
    first = {}
    for result in results:
        first.setdefault(result.path, result.runtime)  # the artifact's default runtime: plain <artifact>.json
        suffix = "" if result.runtime == first[result.path] else f".{result.runtime}"
        path = eval_dir / f"{result.path.name}{suffix}.json"
        write_text_atomic(path, json.dumps(result.as_dict(), indent=1) + "\n", force=True)
        written.append(path)
    return _keep_only(eval_dir, written)


def reads_bench(ctx: StepContext) -> dict[str, Any]:
    from edgekit.pipeline.config import host_devices

    b = ctx.config.bench
    hosts = [{**dataclasses.asdict(d), "profile": _profile(ctx, d.target)} for d in host_devices(b)]
    return {"runs": b.runs, "warmup": b.warmup, "threads": b.threads, "hosts": hosts,
            **({"profile_top": b.profile_top} if b.profile else {}),
            **({"parity": {"data": _data(ctx.config, "calib")}} if b.parity else {}),
            "targets": {t: _profile(ctx, t) for t in b.targets},
            "machine": _this_machine("machine", "cpu_model", "cpu_count", "isa_flags") if b.targets else None,
            **versions("onnxruntime", "tensorflow", "ai-edge-litert", "openvino", "asyncssh")}


def bench_all(ctx: StepContext, artifacts: list[Path]) -> list[Path]:
    """This machine per target, one after the other (they would share its cores), then every device
    at once; a device that fails is written as a failure document, shown as one line by the report,
    and the stage is not recorded as done, so the next run retries it."""
    from edgekit.bench import benchmark
    from edgekit.bench.fleet import bench_fleet
    from edgekit.pipeline.config import host_devices

    b, bench_dir = ctx.config.bench, ctx.run_dir / "bench"
    samples = None
    if b.parity:
        from edgekit.bench.parity import REAL_SAMPLES
        from edgekit.data import calibration_tensors

        samples = calibration_tensors(ctx.config.data.calib, ctx.config.data.recipe, REAL_SAMPLES, 0)
    settings = {"runs": b.runs, "warmup": b.warmup, "threads": b.threads,
                "profile_top": b.profile_top if b.profile else None, "parity": b.parity, "parity_samples": samples}
    written = []
    for target in b.targets:
        _log.info(f"[bench] {target}-local: {len(artifacts)} artifacts x {b.runs} runs")
        document = benchmark(artifacts, target=_target_file(ctx, target), **settings)
        written.append(_write_bench(ctx, bench_dir / f"{target}-local.json", document))
    named = host_devices(b)
    devices = [dataclasses.replace(d, target=d.target and _target_file(ctx, d.target)) for d in named]
    if devices:
        _log.info(f"[bench] {len(devices)} device(s) at once: {len(artifacts)} artifacts x {b.runs} runs")
        for device, document in zip(named, bench_fleet(artifacts, devices, **settings)):
            name = f"{device.target or 'device'}-{_safe(device.name)}"
            written.append(_write_bench(ctx, bench_dir / f"{name}.json", document))
    return _keep_only(bench_dir, written)


def bench_complete(outputs: list[Path]) -> bool:
    """Whether every bench document measured: a failed device keeps the stage due."""
    from edgekit.bench.run import is_failure

    return not any(is_failure(json.loads(p.read_text())) for p in outputs if p.suffix == ".json")


def _safe(name: str) -> str:
    return name.replace("@", "_").replace(":", "_").replace("/", "_")


def _write_bench(ctx: StepContext, path: Path, document: dict[str, Any]) -> Path:
    from edgekit.bench import render_table
    from edgekit.bench.run import is_failure

    if is_failure(document):
        _log.warning(f"[bench] failed: {document['error']}")
    else:
        _log.info(render_table(document))
        if ctx.config.bench.profile:
            from edgekit.bench.run import render_profiles

            _log.info(render_profiles(document))
    write_text_atomic(path, json.dumps(document, indent=1) + "\n", force=True)
    return path


def reads_report(ctx: StepContext) -> dict[str, Any]:
    return versions("matplotlib")


def report(ctx: StepContext, inputs: list[Path]) -> list[Path]:
    from edgekit.report import write_report

    paths = write_report(ctx.run_dir)
    return [paths["html"], paths["md"], paths["json"]]


STEPS: dict[str, Step] = {step.name: step for step in (
    Step("train", reads_train, train_baseline),
    Step("prune", reads_prune, prune),
    Step("distill", reads_distill, distill),
    Step("export", reads_export, export_models),
    Step("quantize", reads_quantize, quantize_all),
    Step("quantize_modes", reads_quantize_modes, quantize_modes),
    Step("eval", reads_eval, evaluate_all),
    Step("bench", reads_bench, bench_all, bench_complete),
    Step("report", reads_report, report),
)}
