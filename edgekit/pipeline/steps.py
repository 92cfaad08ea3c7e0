"""The work of each pipeline stage, built only from the public stage APIs (no logic of its own
beyond naming files and wiring one stage's outputs into the next)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from edgekit.atomic import write_text_atomic
from edgekit.manifest import derive_manifest, new_manifest, read_manifest, write_manifest
from edgekit.pipeline.config import PipelineConfig


def _example(config: PipelineConfig) -> Any:
    import torch

    return torch.zeros(*config.model.input_shape)


def _load(path: Path) -> Any:
    import torch

    return torch.load(path, map_location="cpu", weights_only=False).eval()


def train_baseline(config: PipelineConfig, out: Path) -> Path:
    from edgekit.sources import load_model, save_module

    loaded = load_model(config.model.source, config.model.kwargs, arch=config.model.arch, weights=config.model.weights)
    stages: list[dict[str, Any]] = []
    if config.train is not None:
        from edgekit.distill import train

        if not config.data.train:
            from edgekit.errors import EdgekitError

            raise EdgekitError("pipeline: key 'data.train': required when a 'train' section is given")
        t = config.train
        history = train(loaded.module, config.data.train, config.data.recipe, val_source=config.data.val,
                        epochs=t.epochs, lr=t.lr, batch_size=t.batch_size, optimizer=t.optimizer, seed=t.seed, device=t.device,
                        checkpoint_dir=out.parent / "checkpoints" / "train")
        stages.append({"stage": "train", **t.model_dump(), "history": history["epochs"],
                       "best_val_top1": history["best_val_top1"]})
    save_module(loaded.module, out, _example(config), force=True)
    write_manifest(out, new_manifest(out, source=loaded.describe(), stages=stages,
                                     input_spec={"shape": config.model.input_shape, "layout": "NCHW"}))
    return out


def _round_to(config: PipelineConfig) -> int:
    if config.prune and config.prune.round_to:
        return config.prune.round_to
    if config.bench.targets:
        from edgekit.targets import load_target

        return load_target(config.bench.targets[0]).pruning.channel_multiple
    return 8


def prune(config: PipelineConfig, baseline: Path, out: Path) -> Path:
    from edgekit.prune import prune as prune_model
    from edgekit.sources import save_module

    assert config.prune is not None
    p = config.prune
    model = _load(baseline)
    report = prune_model(model, _example(config), ratio=p.ratio if p.target_macs is None else None,
                         target_macs=p.target_macs, importance=p.importance, global_pruning=p.global_pruning,
                         round_to=_round_to(config), protect=p.protect, steps=p.steps)
    save_module(model, out, _example(config), force=True)
    write_manifest(out, derive_manifest(baseline, out, report))
    return out


def distill(config: PipelineConfig, student_path: Path, teacher_path: Path, out: Path) -> Path:
    from edgekit.distill import train
    from edgekit.sources import save_module

    assert config.distill is not None and config.data.train
    d = config.distill
    student, teacher = _load(student_path), _load(teacher_path)
    history = train(student, config.data.train, config.data.recipe, teacher=teacher, val_source=config.data.val,
                    epochs=d.epochs, lr=d.lr, batch_size=d.batch_size, alpha=d.alpha, temperature=d.temperature,
                    optimizer=d.optimizer, seed=d.seed, device=d.device, checkpoint_dir=out.parent / "checkpoints" / "distill")
    save_module(student, out, _example(config), force=True)
    write_manifest(out, derive_manifest(student_path, out, {
        "stage": "distill", **d.model_dump(), "teacher": teacher_path.name, "history": history["epochs"],
        "best_val_top1": history["best_val_top1"]}))
    return out


def export(config: PipelineConfig, model_path: Path, out: Path) -> Path:
    from edgekit.data import load_recipe
    from edgekit.export import export_onnx
    from edgekit.prune.verify import check_onnx_channels

    model = _load(model_path)
    history = read_manifest(model_path) or {}
    export_onnx(model, _example(config), out, force=True, source=history.get("source"),
                preprocessing=load_recipe(config.data.recipe).as_dict(), prior_stages=history.get("stages"))
    check_onnx_channels(model, out)  # pruning must survive export
    return out


def _quantized_names(onnx_path: Path) -> tuple[Path, Path]:
    stem = onnx_path.name[: -len(".onnx")]
    stem = stem[: -len(".fp32")] if stem.endswith(".fp32") else "" if stem == "fp32" else stem
    prefix = f"{stem}." if stem else ""
    return onnx_path.with_name(f"{prefix}int8.onnx"), onnx_path.with_name(f"{prefix}int8.tflite")


def quantize_all(config: PipelineConfig, onnx_files: list[Path], log: Callable[[str], None]) -> list[Path]:
    from edgekit.data import calibration_tensors
    from edgekit.quantize.ort import quantize_ort, resolve_settings
    from edgekit.quantize.tflite import quantize_tflite

    q = config.quantize
    calib = calibration_tensors(config.data.calib, config.data.recipe, q.num_samples, q.seed)
    info = {"source": config.data.calib, "recipe": config.data.recipe, "num_samples": int(len(calib)), "seed": q.seed}
    target = config.bench.targets[0] if config.bench.targets else None
    outputs: list[Path] = []
    for onnx_path in onnx_files:
        ort_out, tflite_out = _quantized_names(onnx_path)
        if q.ort is not None:
            settings = resolve_settings(target, q.ort.model_dump())
            log(f"[quantize] {onnx_path.name} -> {ort_out.name} ({settings.label()})")
            quantize_ort(onnx_path, ort_out, calib, settings, calibration_info=info, force=True)
            outputs.append(ort_out)
        if q.tflite is not None:
            log(f"[quantize] {onnx_path.name} -> {tflite_out.name} (+ FP32 reference)")
            result = quantize_tflite(onnx_path, tflite_out, calib, float_io=q.tflite.float_io, force=True,
                                     calibration_info=info)
            outputs.append(tflite_out)
            outputs.append(Path(result["paths"]["fp32"]))
    return outputs


def evaluate_all(config: PipelineConfig, artifacts: list[Path], eval_dir: Path, reference: Path) -> list[Path]:
    from tqdm import tqdm

    from edgekit.evaluate import evaluate

    written = []
    for artifact in tqdm(artifacts, desc="evaluating", unit="artifact", disable=None):
        result = evaluate(artifact, config.data.eval, config.data.recipe, reference=reference)
        path = eval_dir / f"{artifact.name}.json"
        write_text_atomic(path, json.dumps(result, indent=1) + "\n", force=True)
        written.append(path)
    return written


def bench_all(config: PipelineConfig, artifacts: list[Path], bench_dir: Path) -> list[Path]:
    from edgekit.bench import benchmark, render_table

    b = config.bench
    written = []
    jobs: list[tuple[str, dict[str, Any]]] = [(f"{t}-local", {"target": t}) for t in b.targets]
    for host in b.hosts:
        options = {"known_hosts": host.known_hosts, "identity": host.identity}
        name = f"{host.target or 'device'}-{host.host.replace('@', '_').replace(':', '_')}"
        jobs.append((name, {"target": host.target, "host": host.host, "remote_python": host.remote_python,
                            "ssh_options": options}))
    for name, job in jobs:
        print(f"[bench] {name}: {len(artifacts)} artifacts x {b.runs} runs", flush=True)
        document = benchmark(artifacts, runs=b.runs, warmup=b.warmup, threads=b.threads, **job)
        print(render_table(document))
        path = bench_dir / f"{name}.json"
        write_text_atomic(path, json.dumps(document, indent=1) + "\n", force=True)
        written.append(path)
    return written


def report(run_dir: Path) -> list[Path]:
    from edgekit.report import write_report

    paths = write_report(run_dir)
    return [paths["html"], paths["md"], paths["json"]]
