"""``edgekit bench``: latency of model artifacts here or on a device over SSH."""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from edgekit.log import log
from edgekit.runtime.device_runner.registry import SUFFIXES

MAX_RUNS = 1_000_000
WEEK_S = 7 * 24 * 3600.0
MAX_PROFILE_TOP = 10_000


def register(subparsers: argparse._SubParsersAction) -> None:
    from edgekit.cli.common import add_json_output, add_runtime, add_ssh_options, add_targets_dir, input_shape

    parser = subparsers.add_parser(
        "bench", help="benchmark artifacts locally or on a device over SSH",
        description="Measure the latency of model artifacts here or on devices over SSH, with a target "
                    "profile's threads and runtimes; the input is each model's own shape (dynamic batch: 1). "
                    "Several --host are measured at once, one connection each; exit 0 when every device was "
                    "measured, 1 when some failed (one line each) and the others were, 2 on bad input or when "
                    "none was.")
    parser.add_argument("artifacts", nargs="+", help=f"model files ({', '.join(SUFFIXES)})")
    parser.add_argument("--target", help="target profile (threads, SSH defaults); see edgekit targets list")
    add_targets_dir(parser)
    parser.add_argument("--runs", type=int, default=100, help="timed inferences per artifact")
    parser.add_argument("--warmup", type=int, default=10, help="untimed inferences first")
    parser.add_argument("--time-budget", type=float, help="stop measuring an artifact after this many seconds")
    parser.add_argument("--threads", type=int, help="inference threads (default: the profile's)")
    add_runtime(parser, "run every artifact on this runtime (default: each runtime the target profile lists "
                        "that runs the file, else the one its suffix implies)")
    parser.add_argument("--input-shape", metavar="N,C,H,W", type=input_shape,
                        help="the size to time a model whose input has dynamic dimensions at, in its own layout, e.g. "
                             "1,3,640,640 (models of a fixed size ignore it)")
    parser.add_argument("--profile", action="store_true", help="after timing, a profiled pass: the slowest "
                        "operators per artifact (ONNX Runtime, OpenVINO; TFLite's Python API has no op profiler)")
    parser.add_argument("--profile-top", type=int, default=10, help="operators listed per artifact with --profile")
    parity = parser.add_argument_group("device parity")
    parity.add_argument("--parity", action="store_true",
                        help="also compare each artifact's outputs on a fixed probe set (8 seeded inputs, plus up to 8 "
                             "--parity-data samples) with its FP32 .onnx on this host and with the same file on this "
                             "host (result field device_parity)")
    parity.add_argument("--parity-reference", metavar="FP32_ONNX",
                        help="the FP32 .onnx every artifact is compared with (default: each one's own, by its manifest)")
    parity.add_argument("--parity-data", metavar="DATA", help="real samples for the probe set (images, .npy/.npz, builtin:...)")
    parity.add_argument("--recipe", help="preprocessing recipe of --parity-data (imagenet, digits, or a YAML path)")
    parser.add_argument("--python", help="interpreter for local runs (default: this one), e.g. a board-like venv")
    add_json_output(parser, "write the result (schema edgekit.bench/1) to this file")
    parser.add_argument("--out-dir", metavar="DIR", help="write the result into this folder as bench-<target>-<host>.json")
    parser.add_argument("--force", action="store_true", help="overwrite the JSON output (--json or in --out-dir)")
    add_ssh_options(parser, many=True)
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds allowed for the whole run on a device")
    parser.set_defaults(handler=run)


def output_path(args: argparse.Namespace, target: str | None, host: str) -> str | None:
    """Where the document goes: --json, or --out-dir/bench-<target>-<host>.json."""
    if args.json:
        return args.json
    if args.out_dir:
        safe_host = host.replace("@", "_").replace(":", "_").replace("/", "_")
        return str(Path(args.out_dir) / f"bench-{target or 'default'}-{safe_host}.json")
    return None


def check_arguments(args: argparse.Namespace) -> tuple[list, list[str | None]]:
    """Every argument and the output files, checked before measuring (which can take an hour);
    returns the devices (none: here, or the profile's ssh host) and each one's output path."""
    from edgekit.bench.run import destination
    from edgekit.cli.common import check_output, devices, positive
    from edgekit.errors import EdgekitError
    from edgekit.evaluate import MAX_THREADS

    if not 1 <= args.runs <= MAX_RUNS or not 0 <= args.warmup <= MAX_RUNS:
        raise EdgekitError(f"--runs must be 1..{MAX_RUNS:,} and --warmup 0..{MAX_RUNS:,} "
                           f"(got {args.runs}, {args.warmup})")
    positive("--threads", args.threads, MAX_THREADS)
    positive("--time-budget", args.time_budget, WEEK_S)
    positive("--timeout", args.timeout, WEEK_S)
    positive("--profile-top", args.profile_top, MAX_PROFILE_TOP)
    if args.python and not args.host:
        found = shutil.which(args.python)
        if found is None:
            problem = "is a folder" if Path(args.python).is_dir() else "no such executable"
            raise EdgekitError(f"--python {args.python}: {problem}")
    if (args.parity_reference or args.parity_data) and not args.parity:
        raise EdgekitError(f"--{'parity-reference' if args.parity_reference else 'parity-data'}: needs --parity")
    if args.parity_data and not args.recipe:
        raise EdgekitError("--recipe: required to read --parity-data")
    if args.out_dir and Path(args.out_dir).exists() and not Path(args.out_dir).is_dir():
        raise EdgekitError(f"--out-dir {args.out_dir}: exists and is not a folder")
    fleet = devices(args, args.target)
    if len(fleet) > 1 and args.json:
        raise EdgekitError("--json: one file cannot hold several devices' results; use --out-dir DIR "
                           "(one bench-<target>-<host>.json per device)")
    places = [destination(d.target, args.targets_dir, d.spec) for d in fleet] or \
        [destination(args.target, args.targets_dir, None)]
    paths = [output_path(args, target, host) for target, host in places]
    for path in paths:
        if path:
            check_output(path, args.force, inputs=args.artifacts)
    return fleet, paths


def run(args: argparse.Namespace) -> int:
    from edgekit.bench import benchmark

    fleet, paths = check_arguments(args)
    if args.target and not fleet:
        import platform

        from edgekit.targets import load_target

        profile = load_target(args.target, args.targets_dir)
        if profile.arch != platform.machine() and not (profile.ssh and profile.ssh.host):
            log.info(f"note: target {profile.name} is {profile.arch}, this machine is {platform.machine()}: measuring "
                  f"here with its settings; add --host to measure on the device itself")
    settings = {"runs": args.runs, "warmup": args.warmup, "threads": args.threads, "runtime": args.runtime,
                "time_budget": args.time_budget, "timeout": args.timeout,
                "profile_top": args.profile_top if args.profile else None, "input_shape": args.input_shape,
                **parity_settings(args)}
    if len(fleet) > 1:
        return run_fleet(args, fleet, paths, settings)
    log.info(f"benchmarking {len(args.artifacts)} artifact(s), {args.runs} runs each ...")
    device = fleet[0] if fleet else None
    document = benchmark(args.artifacts, target=device.target if device else args.target, targets_dir=args.targets_dir,
                         host=device.spec if device else None,
                         remote_python=device.remote_python if device else args.remote_python,
                         ssh_options=device.ssh_options if device else None, local_python=args.python, **settings)
    show(args, document, paths[0])
    return 1 if document.get("failed") else 0  # an artifact the device cannot run: as a failed device


def parity_settings(args: argparse.Namespace) -> dict:
    """``--parity``'s keyword arguments of :func:`edgekit.bench.benchmark` (the real samples read here)."""
    if not args.parity:
        return {}
    samples = None
    if args.parity_data:
        from edgekit.bench.parity import REAL_SAMPLES
        from edgekit.data import calibration_tensors, load_recipe

        samples = calibration_tensors(args.parity_data, load_recipe(args.recipe), REAL_SAMPLES, 0)
    return {"parity": True, "parity_reference": args.parity_reference, "parity_samples": samples}


def run_fleet(args: argparse.Namespace, fleet: list, paths: list[str | None], settings: dict) -> int:
    """Every device at once; a failed one is one ``edgekit: error:`` line (and its document, marked failed)."""
    import sys

    from edgekit.bench.fleet import bench_fleet, exit_code
    from edgekit.bench.run import is_failure

    log.info(f"benchmarking {len(args.artifacts)} artifact(s), {args.runs} runs each, on {len(fleet)} devices at once ...")
    documents = bench_fleet(args.artifacts, fleet, targets_dir=args.targets_dir, **settings)
    for document, path in zip(documents, paths):
        if is_failure(document):
            print(f"edgekit: error: {document['error']}", file=sys.stderr)
            write(args, document, path)
        else:
            show(args, document, path)
    return exit_code(documents)


def show(args: argparse.Namespace, document: dict, path: str | None) -> None:
    from edgekit.bench import render_table
    from edgekit.bench.run import render_profiles

    for note in document.get("notes", []):
        log.info(note)
    print(render_table(document))
    if args.profile:
        print("\n" + render_profiles(document))
    if args.parity:
        from edgekit.bench.run import render_parity

        print("\n" + render_parity(document))
    write(args, document, path)


def write(args: argparse.Namespace, document: dict, path: str | None) -> None:
    from edgekit.atomic import write_text_atomic

    if path:
        write_text_atomic(path, json.dumps(document, indent=1) + "\n", force=args.force)
        log.info(f"wrote {path}")
