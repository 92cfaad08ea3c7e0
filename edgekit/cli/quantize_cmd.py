"""``edgekit quantize``: FP32 ONNX -> INT8 for ONNX Runtime or TFLite, calibrated on the user's data."""
from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "quantize", help="post-training INT8 quantization (ONNX Runtime static or TFLite full-integer)",
        description="Quantize an FP32 ONNX model to INT8, calibrated on your own images.",
    )
    parser.add_argument("model", help="FP32 .onnx file (from edgekit export)")
    parser.add_argument("--backend", choices=("ort", "tflite"), required=True)
    parser.add_argument("--calib", required=True, help="image folder, .npy/.npz, or builtin:digits/train")
    parser.add_argument("--recipe", required=True, help="preprocessing recipe: imagenet, digits, or a YAML path")
    parser.add_argument("--num-samples", type=int, default=200, help="calibration samples (seeded, stratified)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-bad", action="store_true", help="skip corrupt images and count them")
    parser.add_argument("-o", "--output", required=True, help=".onnx (ort) or .tflite (tflite) to write")
    parser.add_argument("--target", help="target profile whose quantization defaults to use (edgekit targets list)")
    ort = parser.add_argument_group("ONNX Runtime")
    ort.add_argument("--format", choices=("QDQ", "QOperator"))
    ort.add_argument("--activation-type", choices=("uint8", "int8"))
    ort.add_argument("--weight-type", choices=("int8", "uint8"))
    ort.add_argument("--per-channel", action=argparse.BooleanOptionalAction, default=None)
    ort.add_argument("--reduce-range", action=argparse.BooleanOptionalAction, default=None,
                     help="7-bit weights; default: on where U8S8 saturates (x86-64 without VNNI), else off")
    ort.add_argument("--calibrate-method", choices=("MinMax", "Entropy", "Percentile"))
    ort.add_argument("--exclude", action="append", default=[], help="node name to keep in float (repeatable)")
    ort.add_argument("--accuracy-budget", type=float, help="max top-1 points lost; needs --eval")
    ort.add_argument("--eval", help="labelled data to measure accuracy on (for --accuracy-budget and --auto)")
    ort.add_argument("--auto", action="store_true", help="measure the candidate configurations here, keep the best")
    ort.add_argument("--no-sensitivity", action="store_true", help="skip the per-layer error ranking")
    tfl = parser.add_argument_group("TFLite")
    tfl.add_argument("--float-io", action="store_true", help="keep float input/output (int8 inside)")
    tfl.add_argument("--allow-float-ops", action="store_true", help="accept ops left in float")
    tfl.add_argument("--no-fp32", action="store_true", help="do not write the FP32 .tflite reference")
    parser.add_argument("--force", action="store_true", help="overwrite existing outputs")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from edgekit.atomic import check_can_write
    from edgekit.data import calibration_tensors, load_recipe
    from edgekit.errors import EdgekitError
    from edgekit.runtime.verify import verify_onnx

    suffix = ".onnx" if args.backend == "ort" else ".tflite"
    if not args.output.lower().endswith(suffix):
        raise EdgekitError(f"{args.output}: --backend {args.backend} writes a {suffix} file")
    check_can_write(args.output, args.force, inputs=[args.model, args.calib, args.eval])
    if args.backend == "tflite" and not args.no_fp32:
        from edgekit.quantize.tflite.quantizer import fp32_path_for

        check_can_write(fp32_path_for(args.output), args.force, inputs=[args.model, args.calib, args.eval])
    if Path(args.model).suffix.lower() != ".onnx" and Path(args.model).is_file():
        raise EdgekitError(f"{args.model}: quantize takes an FP32 .onnx model (from edgekit export)")
    verify_onnx(args.model, session=True)
    _check_numbers(args)
    if args.accuracy_budget is not None and not args.eval:
        raise EdgekitError("--accuracy-budget: needs --eval DATA to measure accuracy on")
    if args.eval:
        from edgekit.data import open_dataset

        open_dataset(args.eval, args.recipe)  # fail now, not after calibrating
    recipe = load_recipe(args.recipe)
    calib = calibration_tensors(args.calib, recipe, args.num_samples, args.seed, skip_bad=args.skip_bad)
    info = {"source": args.calib, "recipe": recipe.name, "num_samples": int(len(calib)), "seed": args.seed}
    if args.backend == "tflite":
        from edgekit.quantize.tflite import quantize_tflite

        result = quantize_tflite(args.model, args.output, calib, float_io=args.float_io,
                                 allow_float_ops=args.allow_float_ops, write_fp32=not args.no_fp32,
                                 force=args.force, calibration_info=info)
        for kind, path in result["paths"].items():
            print(f"wrote {path} ({kind}, {Path(path).stat().st_size / 1e6:.2f} MB)")
        print(f"conversion took {result['timings']['total_s']:.1f} s; ops left in float: "
              f"{', '.join(result['float_ops']) or 'none'}")
        return 0
    return _run_ort(args, calib, info, recipe.name)


def _check_numbers(args: argparse.Namespace) -> None:
    """Counts and budgets that make no sense fail before any calibration work."""
    import math

    from edgekit.errors import EdgekitError

    if args.num_samples < 1:
        raise EdgekitError(f"--num-samples: must be at least 1, got {args.num_samples}")
    if args.seed < 0:
        raise EdgekitError(f"--seed: must be non-negative, got {args.seed}")
    budget = args.accuracy_budget
    if budget is not None and (not math.isfinite(budget) or not 0 <= budget <= 100):
        raise EdgekitError(f"--accuracy-budget: must be between 0 and 100 top-1 points, got {budget}")


def _run_ort(args: argparse.Namespace, calib, info: dict, recipe: str) -> int:
    from edgekit.evaluate import evaluate
    from edgekit.manifest import read_manifest, write_manifest
    from edgekit.quantize.ort import quantize_ort, resolve_settings
    from edgekit.quantize.ort import auto as auto_mod
    from edgekit.quantize.ort.sensitivity import budget_candidates, layer_sensitivity, meet_accuracy_budget

    overrides = {"format": args.format, "activation_type": args.activation_type, "weight_type": args.weight_type,
                 "per_channel": args.per_channel, "reduce_range": args.reduce_range,
                 "calibrate_method": args.calibrate_method}
    settings = resolve_settings(args.target, overrides)

    def accuracy(path: Path) -> float | None:
        return evaluate(path, args.eval, recipe)["top1"] if args.eval else None

    extra: dict = {"target": args.target}
    if args.auto:
        result = auto_mod.choose(args.model, lambda s, out: quantize_ort(args.model, out, calib, s, progress=False,
                                                                            calibration_info=info),
                                 accuracy, args.accuracy_budget if args.accuracy_budget is not None else 1.0)
        print(auto_mod.render(result))
        if result["winner"] is None:
            from edgekit.errors import EdgekitError

            raise EdgekitError("--auto: no INT8 candidate stayed within the accuracy budget")
        settings = result["winner"]["settings"]
        extra["auto"] = [{k: v for k, v in r.items() if k != "settings"} for r in result["rows"]]
    excluded = list(args.exclude)
    if args.accuracy_budget is not None and not args.auto:
        # the search itself writes the final model (the last quantization that met the budget)
        quantize_ort(args.model, args.output, calib, settings, nodes_to_exclude=excluded, calibration_info=info,
                     force=args.force, progress=False)
        ranking = layer_sensitivity(args.model, args.output, calib[:8]) if settings.format == "QDQ" else []
        candidates = [c for c in budget_candidates(args.model, ranking) if c not in excluded]
        fp32_top1 = accuracy(Path(args.model))
        outcome = meet_accuracy_budget(
            lambda nodes: quantize_ort(args.model, args.output, calib, settings, nodes_to_exclude=excluded + nodes,
                                       calibration_info=info, force=True, progress=False),
            lambda: accuracy(Path(args.output)), fp32_top1, args.accuracy_budget, candidates,
        )
        extra["accuracy_budget"] = {"budget": args.accuracy_budget, "fp32_top1": fp32_top1, **outcome}
        excluded += outcome["excluded"]
        manifest = read_manifest(args.output)
        manifest["stages"][-1].update(extra)
        write_manifest(args.output, manifest)
        stage = manifest["stages"][-1]
    else:
        stage = quantize_ort(args.model, args.output, calib, settings, nodes_to_exclude=excluded,
                             calibration_info=info, force=args.force, extra_stage=extra)
    if settings.format == "QDQ" and not args.no_sensitivity:
        ranking = layer_sensitivity(args.model, args.output, calib[:8])
        manifest = read_manifest(args.output)
        manifest["stages"][-1]["sensitivity"] = ranking[:25]
        write_manifest(args.output, manifest)
        worst = ", ".join(f"{r['node']} ({r['sqnr_db']} dB)" for r in ranking[:3])
        print(f"most sensitive layers (SQNR, lower is worse): {worst}")
    size = Path(args.output).stat().st_size / 1e6
    print(f"wrote {args.output} ({size:.2f} MB, {stage['label']}, {len(excluded)} node(s) kept in float)")
    if args.eval:
        print(f"top-1 on {args.eval}: INT8 {accuracy(Path(args.output)):.2f}%")
    return 0
