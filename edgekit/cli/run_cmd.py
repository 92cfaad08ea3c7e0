"""``edgekit run CONFIG``: the whole pipeline from one YAML file, resumable stage by stage."""
from __future__ import annotations

import argparse

from edgekit.log import log


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "run", help="run the whole pipeline from a YAML file",
        description="Run the whole pipeline (train, prune, distill, export, quantize, eval, bench, report) from "
                    "one YAML file; stages whose inputs did not change are reused.")
    parser.add_argument("config", help="pipeline YAML (see README: the pipeline format)")
    add_run_options(parser)
    parser.set_defaults(handler=run)


def add_run_options(parser: argparse.ArgumentParser) -> None:
    from edgekit.cli.common import add_out_dir, add_ssh_options, add_targets_dir

    add_out_dir(parser, "run directory (default: runs/<name>)", old_spelling="--output")
    parser.add_argument("--only", help="comma-separated stages to (re)run: train,prune,distill,export,quantize,"
                                       "quantize_modes,eval,bench,report; the others reuse their last outputs")
    parser.add_argument("--target", help="benchmark on this target profile instead of the file's")
    add_targets_dir(parser)
    add_ssh_options(parser, many=True, host_help="also benchmark on this device over SSH (user@addr[:port], an "
                    "~/.ssh/config alias or an inventory device name)")
    parser.add_argument("--force", action="store_true",
                        help="forget cached stages and training checkpoints, and redo everything")


def execute(config, args: argparse.Namespace, origin: str) -> int:
    """Apply the command-line overrides (checked under their own names), then run the pipeline,
    which checks the whole file before any work."""
    from pathlib import Path

    from edgekit.bench.remote import SshTarget
    from edgekit.cli.common import ssh_options
    from edgekit.pipeline import Pipeline
    from edgekit.pipeline.config import HostConfig
    from edgekit.targets import load_target

    if args.target:
        load_target(args.target, args.targets_dir)
        config.bench.targets = [args.target]
    if args.inventory:
        config.bench.inventory = args.inventory
    for host in args.host or []:
        SshTarget.parse(host)
        config.bench.hosts.append(HostConfig(host=host, target=args.target, remote_python=args.remote_python,
                                             **{k: v for k, v in ssh_options(args).items() if v}))
    run_dir = Path(args.out_dir or f"runs/{config.name}")
    only = {s.strip() for s in args.only.split(",") if s.strip()} if args.only else None
    report = Pipeline(config, run_dir, only=only, origin=origin, targets_dir=args.targets_dir, force=args.force).run()
    from edgekit.report import run_summary

    print(run_summary(report.parent))
    log.info(f"report: {report.resolve()}")
    return 1 if _failed_devices(report.parent) else 0  # as bench: some device could not be measured


def _failed_devices(run_dir) -> list:
    import json

    return json.loads((run_dir / "report.json").read_text()).get("failures", [])


def run(args: argparse.Namespace) -> int:
    from edgekit.pipeline import load_config

    return execute(load_config(args.config), args, args.config)
