"""The ``edgekit`` command line: one sub-module per command, each with ``register(subparsers)``.

Heavy libraries are imported by the command handlers, never here, so ``--help`` is instant and the
light install (no PyTorch, no TensorFlow) runs every command that does not need them; a command
that does says which extra to install, in one line (:mod:`edgekit.extras`). ``-q``/``-v`` work
before or after the command name (:mod:`edgekit.log`).
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
from edgekit.cli.common import show_defaults
from edgekit.errors import EdgekitError, first_line

INTERNAL_ERROR_EXIT = 1

# In pipeline order; a module that is missing is simply not offered.
COMMANDS = (
    "export", "inspect", "prune", "sparsify", "quantize", "eval", "targets", "bench", "report",
    "run", "compare", "demo",
)
# The optional part of edgekit each command needs whatever its arguments (see edgekit.extras);
# a need that depends on the arguments (quantize --runtime tflite) is the command's to check.
COMMAND_EXTRAS = {"export": "torch", "prune": "torch", "sparsify": "torch", "run": "torch", "demo": "torch"}


def add_verbosity(parser: argparse.ArgumentParser, default: object) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("-q", "--quiet", dest="verbosity", action="store_const", const=-1, default=default,
                       help="no status lines or progress bars: the result (tables, JSON), warnings and errors only")
    group.add_argument("-v", "--verbose", dest="verbosity", action="store_const", const=1, default=default,
                       help="also debug lines and other libraries' own output (TensorFlow, ONNX Runtime, ...)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgekit",
        description="Prune, distill, export, quantize and benchmark vision models for edge devices.",
    )
    parser.add_argument("--version", action="version", version=f"edgekit {__version__}")
    add_verbosity(parser, 0)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"edgekit.cli.{name}_cmd")
        except ModuleNotFoundError as exc:
            if exc.name == f"edgekit.cli.{name}_cmd":
                continue
            raise
        module.register(subparsers)
    _add_verbosity_below(subparsers)
    show_defaults(parser)
    return parser


def _add_verbosity_below(subparsers: argparse._SubParsersAction) -> None:
    """-q/-v after the command (and after ``targets list``) too; SUPPRESS keeps one given before it."""
    for sub in subparsers.choices.values():
        add_verbosity(sub, argparse.SUPPRESS)
        for action in sub._actions:
            if isinstance(action, argparse._SubParsersAction):
                _add_verbosity_below(action)


def main(argv: Sequence[str] | None = None) -> int:
    """The command line (``argv``, default ``sys.argv[1:]``). Run as a program (no ``argv``), the
    command runs in a supervised child: a native crash is one line, never a signal (:mod:`edgekit.supervise`)."""
    from edgekit import supervise, worker

    if worker.WORKER_FD in os.environ:
        worker.become_worker()
    elif argv is None and supervise.supervision_wanted():
        return supervise.run_supervised(sys.argv[1:])
    code = dispatch(build_parser().parse_args(argv))
    worker.announce_exit(code)
    return code


def dispatch(args: argparse.Namespace) -> int:
    """Run the chosen command; every failure becomes one line on stderr and an exit code."""
    from edgekit import extras, log

    log.configure(getattr(args, "verbosity", 0))
    try:
        command = getattr(args, "command", None)
        if command in COMMAND_EXTRAS:
            extras.require(COMMAND_EXTRAS[command], f"edgekit {command}")
        result = args.handler(args)
    except ModuleNotFoundError as exc:  # an optional part imported deep inside a command
        extra = extras.extra_providing(exc.name)
        if extra is None:
            return _internal_error(exc)
        what = f"edgekit {getattr(args, 'command', '')}".strip()
        print(f"edgekit: error: {extras.missing_message(what, extra)}", file=sys.stderr)
        return EdgekitError.exit_code
    except EdgekitError as exc:
        print(f"edgekit: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("edgekit: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # last resort: a bug, so say so instead of blaming the input
        return _internal_error(exc)
    finally:
        from edgekit.atomic import release_all

        release_all()  # the command is over, however it ended: its output locks go with it
    return int(result or 0)


def _internal_error(exc: BaseException) -> int:
    if os.environ.get("EDGEKIT_DEBUG"):
        raise exc
    print(f"edgekit: internal error: {type(exc).__name__}: {first_line(exc, 200)} (this is a bug in edgekit, "
          "not a problem with your input: please report it with the command line; EDGEKIT_DEBUG=1 shows the "
          "traceback)", file=sys.stderr)
    return INTERNAL_ERROR_EXIT


if __name__ == "__main__":
    sys.exit(main())
