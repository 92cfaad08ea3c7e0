"""``edgekit sparsify``: unstructured magnitude pruning (smaller when compressed; no faster on CPUs)."""
from __future__ import annotations

import argparse

from edgekit.cli.common import add_force, add_model_source, add_output_file
from edgekit.log import log


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "sparsify", help="zero the smallest weights (compresses better; dense CPU runtimes gain no speed)",
        description="Zero the smallest weights of a PyTorch model (unstructured): the file compresses better, "
                    "but dense CPU runtimes run it no faster; use prune for speed.")
    add_model_source(parser)
    parser.add_argument("--sparsity", type=float, required=True, help="fraction of weights to zero, e.g. 0.7")
    parser.add_argument("--scope", choices=("global", "layer"), default="global",
                        help="rank weights across all layers or within each layer")
    add_output_file(parser, ".pt file (torch.save of the whole model)")
    add_force(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    from edgekit.cli.common import check_output, fraction
    from edgekit.manifest import new_manifest, write_manifest
    from edgekit.prune.sparsify import sparsify
    from edgekit.sources import load_model, parse_kwargs, save_module

    # .pt2 (an ExportedProgram) would need an example input; sparsify takes none
    check_output(args.output, args.force, (".pt", ".pth"), inputs=[args.model, args.arch, args.weights])
    fraction("--sparsity", args.sparsity, low_open=False)
    loaded = load_model(args.model, parse_kwargs(args.kwargs), arch=args.arch, weights=args.weights)
    report = sparsify(loaded.module, args.sparsity, args.scope)
    save_module(loaded.module, args.output, None, force=args.force)
    write_manifest(args.output, new_manifest(args.output, source=loaded.describe(), stages=[report]))
    print(tabulate(sorted(report["per_layer"].items()), headers=["layer", "sparsity"]))
    log.info(f"wrote {args.output}: {report['sparsity']:.1%} of conv/linear weights are zero; gzip size "
          f"{report['gzip_bytes_before'] / 1e6:.2f} MB -> {report['gzip_bytes_after'] / 1e6:.2f} MB")
    log.info("note: ONNX Runtime and TFLite run dense kernels, so this model is NOT faster; "
          "use `edgekit prune` (structured) for speed.")
    return 0
