"""``edgekit targets list|show``: the target profiles and what they set."""
from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("targets", help="list or show target profiles")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="all profiles")
    listing.add_argument("--targets-dir", help="a folder of your own profiles (also EDGEKIT_TARGETS_DIR)")
    show = actions.add_parser("show", help="one profile in full")
    show.add_argument("name", help="profile name or a .yaml path")
    show.add_argument("--targets-dir")
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
