"""``edgekit demo``: the whole pipeline on the built-in default (ResNet-18 on the shipped UCI digits)."""
from __future__ import annotations

import argparse

from edgekit.cli.run_cmd import add_run_options, execute
from edgekit.log import log


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo", help="run the whole pipeline on the built-in default (no downloads)",
        description="Run the whole pipeline on the built-in default: ResNet-18 on the shipped UCI digits, "
                    "no downloads; the same options as edgekit run.")
    add_run_options(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from edgekit.pipeline import DEMO_CONFIG, load_config

    log.info(f"edgekit demo: {DEMO_CONFIG}")
    return execute(load_config(DEMO_CONFIG), args, str(DEMO_CONFIG))
