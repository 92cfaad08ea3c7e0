"""The ``edgekit`` command line: one sub-module per command, each with ``register(subparsers)``.

Heavy libraries are imported by the command handlers, never here, so ``--help`` is instant.
Every user-caused failure is an :class:`~edgekit.errors.EdgekitError`: one line on stderr and
exit code 2. Anything else escaping a command is a bug in edgekit, not bad input: it is reported
as one "internal error" line with exit code 1 (the traceback only with ``EDGEKIT_DEBUG=1``), and
the tests assert that no malformed input ever gets there.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Sequence

from edgekit import __version__
from edgekit.errors import EdgekitError, first_line

INTERNAL_ERROR_EXIT = 1

# In pipeline order; a module that is missing is simply not offered.
COMMANDS = (
    "export", "inspect", "prune", "sparsify", "quantize", "eval", "targets", "bench", "report",
    "run", "demo",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgekit",
        description="Prune, distill, export, quantize and benchmark vision models for edge devices.",
    )
    parser.add_argument("--version", action="version", version=f"edgekit {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"edgekit.cli.{name}_cmd")
        except ModuleNotFoundError as exc:
            if exc.name == f"edgekit.cli.{name}_cmd":
                continue
            raise
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return dispatch(build_parser().parse_args(argv))


def dispatch(args: argparse.Namespace) -> int:
    """Run the chosen command; every failure becomes one line on stderr and an exit code."""
    try:
        result = args.handler(args)
    except EdgekitError as exc:
        print(f"edgekit: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("edgekit: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # last resort: a bug, so say so instead of blaming the input
        if os.environ.get("EDGEKIT_DEBUG"):
            raise
        print(f"edgekit: internal error: {type(exc).__name__}: {first_line(exc, 200)} (this is a bug in edgekit, "
              "not a problem with your input: please report it with the command line; EDGEKIT_DEBUG=1 shows the "
              "traceback)",
              file=sys.stderr)
        return INTERNAL_ERROR_EXIT
    finally:
        from edgekit.atomic import release_all

        release_all()  # the command is over, however it ended: its output locks go with it
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
