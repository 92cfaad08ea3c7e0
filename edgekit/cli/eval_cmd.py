"""``edgekit eval``: a task's metrics (classification: top-1, top-5) and fidelity to the FP32 reference
(agreement, output cosine) for .onnx or .tflite files; the data is decoded once for all of them."""
from __future__ import annotations

import argparse
import json
import sys


DEFAULT_TASK = "classification"


def register(subparsers: argparse._SubParsersAction) -> None:
    from edgekit.cli.common import add_json_output, add_runtime

    parser = subparsers.add_parser(
        "eval", help="accuracy of an .onnx or .tflite artifact on labelled data",
        description="Measure an artifact's task metrics on labelled data and, with --reference, its fidelity "
                    "to the FP32 model; --recipe and --task default to what the artifact's manifest records.")
    parser.add_argument("artifact", help=".onnx or .tflite file")
    parser.add_argument("--data", required=True, help="image folder (class sub-folders), .npy/.npz, or builtin:digits/test")
    parser.add_argument("--recipe", help="preprocessing recipe name (imagenet, digits) or YAML path "
                                         "(default: the one the artifact's manifest records)")
    parser.add_argument("--reference", help="FP32 artifact to measure prediction agreement against")
    parser.add_argument("--task", help=f"what the model does (default: the manifest's, else {DEFAULT_TASK})")
    add_runtime(parser, "runtime for the artifact (default: the one its extension implies)")
    parser.add_argument("--num-samples", type=int, help="evaluate a seeded sample of this many items (default: all)")
    parser.add_argument("--threads", type=int, help="inference threads (default: the runtime's)")
    parser.add_argument("--skip-bad", action="store_true", help="skip corrupt images instead of failing")
    add_json_output(parser, "also write the result (schema edgekit.eval/1) to this file")
    parser.add_argument("--force", action="store_true", help="overwrite the --json file")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from edgekit.atomic import check_can_write, write_text_atomic
    from edgekit.errors import EdgekitError
    from edgekit.evaluate import evaluate_many
    from edgekit.manifest import manifest_path, recorded_recipe, recorded_task
    from edgekit.runtime.verify import check_model_file
    from edgekit.tasks import get_task

    if args.task:
        get_task(args.task)  # an unknown name fails before any file is touched
    if not (args.task and args.recipe):
        check_model_file(args.artifact, "artifact")  # its manifest is read for what the flags leave out
    task = get_task(args.task or recorded_task(args.artifact) or DEFAULT_TASK)
    recipe = args.recipe or recorded_recipe(args.artifact)
    if recipe is None:
        where = manifest_path(args.artifact)
        raise EdgekitError(f"--recipe: required, as {where} (the artifact's manifest) "
                           f"{'records none' if where.exists() else 'does not exist'}")
    if args.json:
        check_can_write(args.json, args.force, inputs=[args.artifact, args.reference, args.data])
    evaluation = evaluate_many([args.artifact], args.data, recipe, reference=args.reference, task=task,
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
