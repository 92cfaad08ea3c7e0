"""``edgekit eval``: a task's metrics (classification: top-1, top-5) and fidelity to the FP32 reference
(agreement, output cosine) for .onnx or .tflite files; the data is decoded once for all of them."""
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
    parser.add_argument("--task", default="classification", help="what the model does (default: classification)")
    parser.add_argument("--runtime", help="runtime for the artifact (default: the one its extension implies)")
    parser.add_argument("--num-samples", type=int, help="evaluate a seeded sample of this many items")
    parser.add_argument("--threads", type=int)
    parser.add_argument("--skip-bad", action="store_true", help="skip corrupt images instead of failing")
    parser.add_argument("--json", help="also write the result (schema edgekit.eval/1) to this file")
    parser.add_argument("--force", action="store_true", help="overwrite the --json file")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from edgekit.atomic import check_can_write, write_text_atomic
    from edgekit.evaluate import evaluate_many
    from edgekit.tasks import get_task

    task = get_task(args.task)  # an unknown name fails before any file is touched
    if args.json:
        check_can_write(args.json, args.force, inputs=[args.artifact, args.reference, args.data])
    evaluation = evaluate_many([args.artifact], args.data, args.recipe, reference=args.reference, task=task,
                               runtime=args.runtime, num_samples=args.num_samples, threads=args.threads,
                               skip_bad=args.skip_bad)[0]
    result = evaluation.as_dict()
    against = f" (reference {result['reference']})" if result["reference"] else ""
    print(f"{result['artifact']}: {result['num_samples']} samples  {task.summary(evaluation.metrics)}{against}")
    if result.get("warning"):
        print(f"warning: {result['warning']}", file=sys.stderr)
    if args.json:
        write_text_atomic(args.json, json.dumps(result, indent=2) + "\n", force=args.force)
    return 0
