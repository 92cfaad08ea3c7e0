"""``edgekit demo``: the whole pipeline on a built-in default: ResNet-18 on the shipped UCI digits, or
with ``--task detection|segmentation`` a small detector or segmenter on digits placed on canvases."""
from __future__ import annotations

import argparse

from edgekit.cli.run_cmd import add_run_options, execute
from edgekit.log import log


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo", help="run the whole pipeline on the built-in default (no downloads)",
        description="Run the whole pipeline on a built-in default, no downloads: ResNet-18 on the shipped UCI "
                    "digits (classification), a small detector scored by mAP on builtin:digits-detect, or a small "
                    "U-Net scored by mIoU on builtin:digits-seg; the same options as edgekit run.")
    parser.add_argument("--task", choices=("classification", "detection", "segmentation"), default="classification",
                        help="which built-in pipeline: the task its model does")
    add_run_options(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from edgekit.pipeline import DEMO_CONFIGS, load_config

    config = DEMO_CONFIGS[args.task]
    log.info(f"edgekit demo: {config}")
    return execute(load_config(config), args, str(config))
