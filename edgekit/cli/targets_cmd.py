"""``edgekit targets list|show``: the target profiles and what they set."""
from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    from edgekit.cli.common import add_targets_dir

    parser = subparsers.add_parser(
        "targets", help="list or show target profiles",
        description="List the target profiles (shipped and your own) or show one in full.")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="all profiles", description="List every target profile.")
    add_targets_dir(listing)
    show = actions.add_parser("show", help="one profile in full", description="Show one target profile in full.")
    show.add_argument("name", help="profile name or a .yaml path")
    add_targets_dir(show)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import yaml
    from tabulate import tabulate

    from edgekit.quantize.ort.settings import OrtQuantSettings
    from edgekit.targets import list_targets, load_target

    if args.action == "list":
        rows = [[p.name, p.arch, ",".join(p.isa_features), p.threads, ",".join(p.runtimes),
                 OrtQuantSettings(**p.ort_settings).label(),
                 p.description] for p in list_targets(args.targets_dir)]
        print(tabulate(rows, headers=["name", "arch", "ISA", "threads", "runtimes", "ORT INT8", "description"]))
        return 0
    profile = load_target(args.name, args.targets_dir)
    print(f"# {profile.source}")
    print(yaml.safe_dump(profile.model_dump(exclude_none=True), sort_keys=False).rstrip())
    return 0
