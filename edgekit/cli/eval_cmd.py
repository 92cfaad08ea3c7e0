"""``edgekit eval``: top-1, top-5 and agreement with the FP32 reference for an .onnx or .tflite file."""
from __future__ import annotations

import argparse
import json
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("eval", help="accuracy of an .onnx or .tflite artifact on labelled data")
    parser.add_argument("artifact", help=".onnx or .tflite file")
    parser.add_argument("--data", required=True, help="image folder (class sub-folders), .npy/.npz, or builtin:digits/test")
    parser.add_argument("--recipe", required=True, help="preprocessing recipe name (imagenet, digits) or YAML path")
    parser.add_argument("--reference", help="FP32 artifact to measure prediction agreement against")
    parser.add_argument("--num-samples", type=int, help="evaluate a seeded sample of this many items")
    parser.add_argument("--threads", type=int)
    parser.add_argument("--skip-bad", action="store_true", help="skip corrupt images instead of failing")
    parser.add_argument("--json", help="also write the result (schema edgekit.eval/1) to this file")
    parser.add_argument("--force", action="store_true", help="overwrite the --json file")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from edgekit.atomic import check_can_write, write_text_atomic
    from edgekit.evaluate import evaluate

    if args.json:
        check_can_write(args.json, args.force, inputs=[args.artifact, args.reference, args.data])
    result = evaluate(args.artifact, args.data, args.recipe, reference=args.reference,
                      num_samples=args.num_samples, threads=args.threads, skip_bad=args.skip_bad)
    parts = [f"{result['artifact']}: {result['num_samples']} samples"]
    if result["top1"] is not None:
        parts.append(f"top-1 {result['top1']:.2f}%  top-5 {result['top5']:.2f}%")
    if result["agreement"] is not None:
        parts.append(f"agreement with {result['reference']} {result['agreement']:.2f}%")
    print("  ".join(parts))
    if result.get("warning"):
        print(f"warning: {result['warning']}", file=sys.stderr)
    if args.json:
        write_text_atomic(args.json, json.dumps(result, indent=2) + "\n", force=args.force)
    return 0
