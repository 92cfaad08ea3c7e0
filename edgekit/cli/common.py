"""Argument types and options shared by several commands."""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any, Iterable


MAX_INPUT_ELEMENTS = 1 << 28  # a 1 GB float32 example tensor; more is a typo, not a model


def input_shape(text: str) -> tuple[int, ...]:
    """``1,3,224,224`` -> (1, 3, 224, 224); argparse turns the ValueError into a usage error."""
    try:
        dims = tuple(int(part) for part in text.replace("x", ",").split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers") from None
    if not dims or any(d <= 0 for d in dims):
        raise argparse.ArgumentTypeError(f"{text!r}: every dimension must be a positive integer")
    elements = 1
    for d in dims:
        elements *= d
    if elements > MAX_INPUT_ELEMENTS:
        raise argparse.ArgumentTypeError(f"{text!r}: {elements:,} elements, more than the {MAX_INPUT_ELEMENTS:,} "
                                         "an example input may have")
    return dims


def add_force(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--force", action="store_true", help="overwrite existing output files")


def add_model_source(parser: argparse.ArgumentParser) -> None:
    """The model-source options understood by :func:`edgekit.sources.load_model`."""
    parser.add_argument(
        "model",
        help="torchvision:NAME, module:factory, file.py:factory, model.pt (edgekit's own, a state dict with "
             "--arch, or a whole-model torch.save pickle: unpickling runs code, load only files you trust) "
             "or model.pt2",
    )
    parser.add_argument("--kwargs", help="JSON object of keyword arguments for the factory")
    parser.add_argument("--arch", help="architecture (a source as above) for a state-dict file, or for an edgekit "
                                       ".pt whose recorded architecture is not torchvision's or edgekit.zoo's")
    parser.add_argument("--weights", help="state-dict file to load into the model (never unpickled)")


def check_output(path: str | os.PathLike[str], force: bool, suffixes: tuple[str, ...] = (),
                 inputs: Iterable[str | os.PathLike[str] | None] = ()) -> Path:
    """Everything about an output path that can be checked before hours of work: the suffix, the
    ``--force`` rule, and a folder to put it in (not a file, writable)."""
    from edgekit.atomic import check_can_write
    from edgekit.errors import EdgekitError

    target = Path(path)
    if suffixes and target.suffix.lower() not in suffixes:
        raise EdgekitError(f"{target}: the output must end in {' or '.join(suffixes)}")
    check_can_write(target, force, inputs)
    check_folder_for(target.parent)
    return target


def check_folder_for(folder: Path) -> None:
    """``folder`` exists as a writable directory, or can be created (no file in the way)."""
    from edgekit.errors import EdgekitError

    folder = Path(folder) if str(folder) else Path(".")
    for ancestor in (folder, *folder.parents):
        if ancestor.exists():
            if not ancestor.is_dir():
                if ancestor == folder:
                    raise EdgekitError(f"{folder}: is a file, not a folder to write the output into")
                raise EdgekitError(f"{ancestor}: is a file, so the output folder {folder} cannot be created")
            if not os.access(ancestor, os.W_OK | os.X_OK):
                raise EdgekitError(f"{ancestor}: folder is not writable")
            return


def positive(name: str, value: float | int | None, maximum: float | None = None) -> None:
    """A count, a duration or a ratio that must be a finite number > 0 (and <= maximum)."""
    import math

    from edgekit.errors import EdgekitError

    if value is None:
        return
    if not math.isfinite(value) or value <= 0 or (maximum is not None and value > maximum):
        limit = f" and at most {maximum:g}" if maximum is not None else ""
        raise EdgekitError(f"{name}: must be a number above 0{limit}, got {value}")


def fraction(name: str, value: float | None, *, low_open: bool = True, high_open: bool = True) -> None:
    """A ratio inside (0, 1) (ends included where ``*_open`` is False)."""
    import math

    from edgekit.errors import EdgekitError

    if value is None:
        return
    ok = math.isfinite(value) and (0 < value if low_open else 0 <= value) and (value < 1 if high_open else value <= 1)
    if not ok:
        interval = f"{'(' if low_open else '['}0, 1{')' if high_open else ']'}"
        raise EdgekitError(f"{name}: must be in {interval}, got {value}")


# The shared vocabulary (issue 15): one spelling per idea in every command, so a flag learnt in
# one command means the same in the next. tests/test_cli_vocabulary.py walks the parser to hold it.

def runtime_name(text: str) -> str:
    """An alias (``ort``, ``litert``) -> the registry's name; anything else is left for ``choices`` to refuse."""
    from edgekit.runtime.device_runner.registry import runtime

    try:
        return runtime(text).name
    except ValueError:
        return text


def add_runtime(parser: argparse.ArgumentParser | argparse._ArgumentGroup, help: str, **kwargs: object) -> None:
    """``--runtime NAME``: the runtime registry's names (aliases accepted) in every command."""
    from edgekit.runtime.device_runner.registry import NAMES

    parser.add_argument("--runtime", type=runtime_name, choices=NAMES, help=help, **kwargs)


def add_json_output(parser: argparse.ArgumentParser, help: str, **kwargs: object) -> None:
    """``--json FILE``: where a command writes its JSON result (``-`` for stdout where the command allows it)."""
    parser.add_argument("--json", metavar="FILE", help=help, **kwargs)


def add_output_file(parser: argparse.ArgumentParser, help: str, required: bool = True) -> None:
    """``-o/--output FILE``: one artifact; a folder is ``--out-dir DIR``."""
    parser.add_argument("-o", "--output", metavar="FILE", required=required, help=help)


def add_out_dir(parser: argparse.ArgumentParser, help: str, old_spelling: str | None = None) -> None:
    """``--out-dir DIR``; ``old_spelling`` stays accepted, hidden, for scripts written before."""
    parser.add_argument("--out-dir", metavar="DIR", help=help)
    if old_spelling:
        parser.add_argument(old_spelling, dest="out_dir", metavar="DIR", help=argparse.SUPPRESS)


def add_targets_dir(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """``--targets-dir DIR`` wherever a target profile is read."""
    parser.add_argument("--targets-dir", metavar="DIR",
                        help="a folder of your own target profiles (also EDGEKIT_TARGETS_DIR)")


def is_switch(action: argparse.Action) -> bool:
    """A flag without a value (store_true, store_const, --x/--no-x): its default is just 'not given'."""
    return action.nargs == 0


def shows_default(action: argparse.Action) -> bool:
    """Whether ``--help`` should state this option's default: a value option with a real default."""
    default = action.default
    return (bool(action.option_strings) and not is_switch(action) and action.help is not argparse.SUPPRESS
            and default is not None and default is not argparse.SUPPRESS and default != [])


def show_defaults(parser: argparse.ArgumentParser) -> None:
    """Append ``(default: X)`` to every option whose help does not already say its default, in this
    parser and every sub-command below it: one rule, also for options added later."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                show_defaults(sub)
        elif shows_default(action) and "default" not in (action.help or ""):
            action.help = f"{action.help} (default: %(default)s)" if action.help else "(default: %(default)s)"


def add_ssh_options(parser: argparse.ArgumentParser, many: bool = False,
                    host_help: str = "user@addr[:port], an ~/.ssh/config alias or an inventory device name") -> None:
    """The SSH options of every command that measures on a device: one spelling, one meaning.
    ``many``: ``--host`` may be repeated (a fleet, measured concurrently)."""
    ssh = parser.add_argument_group("device over SSH")
    if many:
        ssh.add_argument("--host", action="append", metavar="HOST", help=host_help + "; repeat for several devices")
    else:
        ssh.add_argument("--host", metavar="HOST", help=host_help)
    ssh.add_argument("--inventory", metavar="FILE", help="YAML of devices (name, host, target, python, known_hosts, "
                     "identity) that --host may name (also EDGEKIT_INVENTORY)")
    ssh.add_argument("--remote-python", help="the device's Python (default python3, or the inventory's or profile's)")
    ssh.add_argument("--known-hosts", metavar="FILE", help="known_hosts file (default ~/.ssh/known_hosts)")
    ssh.add_argument("--trust-new-host", action="store_true", help="accept and record an unknown host key")
    ssh.add_argument("--insecure-no-host-check", action="store_true",
                     help="do not check the host key at all (recorded in the result as host_key_checked: false)")
    ssh.add_argument("--identity", metavar="FILE", help="private key file")
    ssh.add_argument("--ssh-config", metavar="FILE", help="ssh config file (default ~/.ssh/config)")


def ssh_options(args: argparse.Namespace) -> dict[str, object]:
    """What :class:`edgekit.bench.remote.SshTarget` takes, from :func:`add_ssh_options`' arguments."""
    return {"known_hosts": args.known_hosts, "trust_new_host": args.trust_new_host,
            "insecure_no_host_check": args.insecure_no_host_check, "identity": args.identity,
            "ssh_config": args.ssh_config}


def devices(args: argparse.Namespace, target: str | None = None) -> list:
    """``--host`` (once or repeated) resolved through ``--inventory``: a list of
    :class:`edgekit.bench.inventory.Device`, empty without ``--host``."""
    from edgekit.bench.inventory import resolve_hosts

    hosts = args.host if isinstance(args.host, list) else [args.host] if args.host else []
    return resolve_hosts(hosts, args.inventory, target=target, remote_python=args.remote_python,
                         ssh_options=ssh_options(args))


def device_measurer(args: argparse.Namespace, runtime: str) -> Any:
    """Where a command that chooses by latency measures (``quantize --auto``, ``prune --target-latency``):
    ``--host`` (an inventory name too), else the ``--target`` profile's ssh: device, else this machine
    with the profile's threads; an ``edgekit.bench.measure.Measurer`` timing on ``runtime``."""
    from edgekit.bench.measure import Measurer

    found = devices(args, args.target)
    device = found[0] if found else None
    return Measurer(host=device.spec if device else None, target=(device.target if device else None) or args.target,
                    targets_dir=args.targets_dir, remote_python=device.remote_python if device else None,
                    ssh_options=device.ssh_options if device else None, runtime=runtime,
                    **({"time_budget": args.window} if getattr(args, "window", None) else {}))
