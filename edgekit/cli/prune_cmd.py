"""``edgekit prune``: structured pruning, optionally with distillation from the unpruned teacher."""
from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

from edgekit.cli.common import (add_force, add_model_source, add_output_file, add_ssh_options, add_targets_dir, fraction,
                                 input_shape, positive)
from edgekit.log import log
from edgekit.prune.latency import CALIBRATION_SAMPLES, FORMATS

if TYPE_CHECKING:
    from edgekit.distill import RecoverSettings
    from edgekit.prune import PruneSettings


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "prune", help="remove whole channels (really smaller, really faster)",
        description="Structured pruning: remove whole channels of a PyTorch model (really smaller, really faster), "
                    "optionally recovering accuracy by distillation from the unpruned model.")
    add_model_source(parser)
    parser.add_argument("--input-shape", type=input_shape, help="e.g. 1,3,224,224 (default: from --recipe)")
    amount = parser.add_mutually_exclusive_group(required=True)
    amount.add_argument("--ratio", type=float, help="fraction of channels to remove, e.g. 0.5")
    amount.add_argument("--target-macs", type=float, help="keep at most this fraction of the MACs, e.g. 0.3")
    amount.add_argument("--target-latency", type=float, metavar="MS",
                        help="the smallest ratio whose shipped model (--latency-of) runs in at most this p50, measured "
                             "on --host (or the --target profile's device, else this machine); the curve goes into "
                             "the manifest")
    parser.add_argument("--importance", default="l1", help="l1, l2, bn (batch-norm scale) or taylor (default: %(default)s)")
    parser.add_argument("--global", dest="global_pruning", action="store_true", help="rank channels across layers")
    parser.add_argument("--round-to", type=int, help="channel multiple (default 8, or the --target profile's)")
    parser.add_argument("--target", help="target profile to take the channel multiple from")
    add_targets_dir(parser)
    parser.add_argument("--protect", action="append", default=[], help="layer name never to prune (repeatable)")
    parser.add_argument("--steps", type=int, default=1, help="prune in this many steps (fine-tuning between)")
    latency = parser.add_argument_group("--target-latency")
    latency.add_argument("--latency-of", default="fp32-onnx", choices=FORMATS,
                         help="the format whose latency must meet the target: the file you will ship")
    latency.add_argument("--max-ratio", type=float, default=0.9, help="the largest ratio the search may try")
    latency.add_argument("--calib", help="calibration data to quantize the candidates (--latency-of int8-*)")
    latency.add_argument("--window", type=float, default=2.0, metavar="SECONDS",
                         help="seconds of timed runs per measuring process: longer rides out more noise, "
                              "shorter searches faster")
    add_ssh_options(parser)
    train = parser.add_argument_group("recovery (knowledge distillation)")
    train.add_argument("--distill", action="store_true", help="distil from the unpruned model after pruning")
    train.add_argument("--teacher", help="another teacher model source (default: the unpruned model)")
    train.add_argument("--train", help="training images (folder, .npz, builtin:digits/train); labels optional")
    train.add_argument("--val", help="validation data for the best checkpoint")
    train.add_argument("--recipe", help="preprocessing recipe for the data")
    train.add_argument("--epochs", type=int, default=5)
    train.add_argument("--lr", type=float, default=2e-3)
    train.add_argument("--batch-size", type=int, default=64, help="global batch (torchrun: split over the processes)")
    train.add_argument("--alpha", type=float, default=0.7, help="weight of the distillation term")
    train.add_argument("--temperature", type=float, default=4.0)
    train.add_argument("--optimizer", default="adamw", choices=("adamw", "sgd"))
    train.add_argument("--checkpoint-dir", help="resumable training checkpoints (default: beside the output)")
    add_speed_flags(train)
    add_output_file(parser, ".pt (torch.save) or .pt2 (ExportedProgram)")
    add_force(parser)
    parser.set_defaults(handler=run)


def add_speed_flags(group: argparse._ArgumentGroup) -> None:
    """Where and how fast training runs; under ``torchrun`` it is also data-parallel (see README)."""
    group.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"),
                       help="auto: cuda, else mps, else cpu (torchrun: one GPU per process, by LOCAL_RANK)")
    group.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                       help="mixed precision (default: on for cuda): bf16 where supported, else fp16 + GradScaler")
    group.add_argument("--amp-dtype", choices=("bf16", "fp16"), help="force the mixed-precision type")
    group.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                       help="NHWC memory format (default: on for cuda)")
    group.add_argument("--workers", type=int, default=0, help="DataLoader worker processes (per process)")
    group.add_argument("--cache-teacher", action="store_true",
                       help="compute the teacher's logits once per image (recipes do not augment); memory: images x classes x 4 B")


def settings(args: argparse.Namespace) -> tuple[PruneSettings, RecoverSettings]:
    """The flags as the workflow's PruneSettings and RecoverSettings."""
    from edgekit.distill import RecoverSettings
    from edgekit.prune import PruneSettings

    prune = PruneSettings(ratio=args.ratio, target_macs=args.target_macs, importance=args.importance,
                          global_pruning=args.global_pruning, round_to=_round_to(args), protect=tuple(args.protect),
                          steps=args.steps)
    recover = RecoverSettings(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, alpha=args.alpha,
                              temperature=args.temperature, optimizer=args.optimizer, device=args.device, amp=args.amp,
                              amp_dtype=args.amp_dtype, channels_last=args.channels_last, workers=args.workers,
                              cache_teacher=args.cache_teacher)
    return prune, recover


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    from edgekit.cli.common import check_output
    from edgekit.distill import between_steps, distill_stage, recover
    from edgekit.distill.distributed import is_main_process
    from edgekit.modelcopy import copy_model
    from edgekit.errors import EdgekitError
    from edgekit.manifest import new_manifest, write_manifest
    from edgekit.prune import IMPORTANCES
    from edgekit.prune.workflow import prune_step
    from edgekit.sources import check_runs_on, load_model, parse_kwargs, save_module

    if is_main_process():  # under torchrun rank 0 alone writes the output, so it alone claims it
        check_output(args.output, args.force, (".pt", ".pth", ".pt2"),
                     inputs=[args.model, args.arch, args.weights, args.teacher])
    _check_numbers(args)
    if args.importance not in IMPORTANCES:
        raise EdgekitError(f"--importance: {args.importance!r} is not one of {', '.join(IMPORTANCES)}")
    if (args.distill or args.steps > 1 and args.train) and not (args.train and args.recipe):
        raise EdgekitError("--distill: needs --train DATA and --recipe NAME")
    if args.train:
        from edgekit.data import open_dataset
        from edgekit.distill.distributed import resolve_device

        open_dataset(args.train, args.recipe)  # fail now, not after pruning
        resolve_device(args.device)  # --device cuda without a GPU: fail now, not after pruning
    shape = args.input_shape
    if shape is None:
        if not args.recipe:
            raise EdgekitError("--input-shape: required unless --recipe gives the input size")
        from edgekit.data import load_recipe

        shape = load_recipe(args.recipe).input_shape()
    prune_settings, recover_settings = settings(args)
    loaded = load_model(args.model, parse_kwargs(args.kwargs), arch=args.arch, weights=args.weights)
    model = loaded.module
    check_runs_on(model, shape)
    example = torch.zeros(*shape)
    teacher = load_model(args.teacher).module if args.teacher else copy_model(model).eval()
    recovery = between_steps(teacher, args.train, args.recipe, recover_settings) if args.train else None
    if args.target_latency is not None:
        model, report, search = _prune_to_latency(args, model, example, prune_settings, recovery)
        stages = [{**report.manifest_stage(), "latency_search": search}]
    else:
        report = prune_step(model, example, prune_settings, train=args.train, recipe=args.recipe, recovery=recovery)
        stages = [report.manifest_stage()]
    if args.distill:
        history = recover(model, teacher, args.train, args.recipe, recover_settings, val=args.val,
                          checkpoint_dir=Path(args.checkpoint_dir or f"{args.output}.checkpoints"))
        stages.append(distill_stage(history, recover_settings, args.teacher or "unpruned model"))
    if not is_main_process():
        return 0  # under torchrun only rank 0 writes the artifact and its manifest
    save_module(model, args.output, example, force=args.force)
    write_manifest(args.output, new_manifest(args.output, source=loaded.describe(),
                                             input_spec={"shape": list(shape), "layout": "NCHW", "dtype": "float32"},
                                             stages=stages))
    log.info(f"wrote {args.output}: {report.summary()}")
    return 0


def _prune_to_latency(args: argparse.Namespace, model, example, prune_settings, recovery) -> tuple:
    """``--target-latency``: (the pruned model, its report, the manifest's ``latency_search``)."""
    from edgekit.cli.common import device_measurer
    from edgekit.prune.latency import prune_to_latency
    from edgekit.prune.workflow import prune_step

    measure = device_measurer(args, "tflite" if args.latency_of == "int8-tflite" else "onnxruntime")
    calib = None
    if args.latency_of != "fp32-onnx":
        from edgekit.data import calibration_tensors, load_recipe

        calib = calibration_tensors(args.calib, load_recipe(args.recipe), CALIBRATION_SAMPLES, 0)
    return prune_to_latency(
        model, example, prune_settings, args.target_latency, measure,
        lambda m, s: prune_step(m, example, s, train=args.train, recipe=args.recipe, recovery=recovery, progress=None),
        args.latency_of, calib, args.max_ratio, log.info)


def _round_to(args: argparse.Namespace) -> int:
    """--round-to, else the --target profile's channel multiple, else 8."""
    if args.round_to is not None:
        return args.round_to
    if args.target:
        from edgekit.targets import load_target

        return load_target(args.target, args.targets_dir).pruning.channel_multiple
    return 8


def _check_numbers(args: argparse.Namespace) -> None:
    """Ratios, counts and rates that cannot work fail before a model is loaded."""
    from edgekit.errors import EdgekitError

    fraction("--ratio", args.ratio)
    fraction("--target-macs", args.target_macs, high_open=False)
    fraction("--max-ratio", args.max_ratio)
    positive("--window", args.window, 600.0)
    positive("--target-latency", args.target_latency, 3_600_000.0)
    if args.target_latency is not None and args.latency_of != "fp32-onnx" and not (args.calib and args.recipe):
        raise EdgekitError(f"--latency-of {args.latency_of}: needs --calib DATA and --recipe NAME to quantize the candidates")
    fraction("--alpha", args.alpha, low_open=False, high_open=False)
    positive("--lr", args.lr, 10.0)
    positive("--temperature", args.temperature, 1e4)
    for name, value, low, high in (("--round-to", args.round_to, 1, 4096), ("--steps", args.steps, 1, 100),
                                   ("--epochs", args.epochs, 0, 100_000), ("--batch-size", args.batch_size, 1, 65_536)):
        if value is not None and not low <= value <= high:
            raise EdgekitError(f"{name}: must be between {low} and {high:,}, got {value}")
    if args.checkpoint_dir and os.path.exists(args.checkpoint_dir) and not os.path.isdir(args.checkpoint_dir):
        raise EdgekitError(f"--checkpoint-dir {args.checkpoint_dir}: exists and is not a folder")
