"""``edgekit export``: a model source -> ONNX, with a parity proof and a manifest."""
from __future__ import annotations

import argparse

from edgekit.cli.common import add_force, add_model_source, add_output_file, check_output, input_shape, positive
from edgekit.export.parity import DEFAULT_NOISE_FACTOR
from edgekit.log import log


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export", help="export a PyTorch model to ONNX and prove parity",
        description="Export a PyTorch model to ONNX, check it and prove it computes what PyTorch computes.",
    )
    add_model_source(parser)
    parser.add_argument("--input-shape", type=input_shape, required=True, help="e.g. 1,3,224,224 (NCHW)")
    add_output_file(parser, "the .onnx file to write")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (default: %(default)s)")
    parser.add_argument("--dynamic-batch", action="store_true", help="make the batch axis dynamic")
    parser.add_argument("--exporter", default="auto", choices=("auto", "torchscript", "dynamo"),
                        help="auto: TorchScript (fast), dynamo when TorchScript cannot trace (default: %(default)s)")
    parser.add_argument("--parity-inputs", type=int, default=8, help="seeded random inputs for the parity proof")
    parser.add_argument("--samples", help="real inputs for the parity proof: a .npy of NCHW float tensors")
    parser.add_argument("--noise-factor", type=float, default=DEFAULT_NOISE_FACTOR,
                        help="parity passes when the ONNX error vs a float64 PyTorch run is within this many times "
                             f"PyTorch float32's own error (default: {DEFAULT_NOISE_FACTOR:g})")
    parser.add_argument("--tolerance", type=float, default=None,
                        help="use the fixed rule instead: max-abs error allowed, as a fraction of the output's "
                             "largest magnitude (the rule also used when the model cannot run in float64, at 1e-4)")
    add_force(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from edgekit.errors import EdgekitError
    from edgekit.export import export_onnx
    from edgekit.sources import load_model, parse_kwargs

    check_output(args.output, args.force, (".onnx",), inputs=[args.model, args.arch, args.weights])  # fail before loading a model
    if not 7 <= args.opset <= 25:
        raise EdgekitError(f"--opset: {args.opset} is not an ONNX opset this exporter can target (7..25)")
    if not 0 <= args.parity_inputs <= 10_000:
        raise EdgekitError(f"--parity-inputs: must be between 0 and 10,000, got {args.parity_inputs}")
    positive("--tolerance", args.tolerance, 1.0)
    loaded = load_model(args.model, parse_kwargs(args.kwargs), arch=args.arch, weights=args.weights)
    samples = _load_samples(args.samples) if args.samples else None
    from pathlib import Path

    from edgekit.manifest import read_manifest

    history = read_manifest(args.model) if Path(args.model).is_file() else None
    result = export_onnx(
        loaded.module, args.input_shape, args.output, opset=args.opset, dynamic_batch=args.dynamic_batch,
        exporter=args.exporter, parity_count=args.parity_inputs, samples=samples, tolerance=args.tolerance,
        noise_factor=args.noise_factor,
        force=args.force, source=loaded.describe(), exported_program=loaded.exported_program,
        prior_stages=(history or {}).get("stages"),
    )
    size_mb = result.path.stat().st_size / 1e6
    log.info(f"wrote {result.path} ({size_mb:.2f} MB, {result.exporter} exporter, {result.seconds:.1f} s)")
    log.info(result.parity.summary())
    return 0


def _load_samples(path: str):
    import numpy as np

    from edgekit.errors import EdgekitError

    try:
        array = np.load(path, allow_pickle=False)
        if not isinstance(array, np.ndarray) or array.dtype.kind not in "fiu":
            raise ValueError(f"expected a numeric .npy array, got {type(array).__name__}")
    except Exception as exc:
        raise EdgekitError(f"{path}: not a readable .npy file ({exc})") from exc
    if getattr(array, "ndim", 0) != 4:
        raise EdgekitError(f"{path}: expected N,C,H,W float tensors, got shape {list(getattr(array, 'shape', []))}")
    return array.astype(np.float32)
