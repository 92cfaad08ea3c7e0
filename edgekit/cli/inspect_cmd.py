"""``edgekit inspect``: inputs, outputs, ops, size and quantization of an .onnx or .tflite file."""
from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:
    from edgekit.cli.common import add_force, add_json_output

    parser = subparsers.add_parser(
        "inspect", help="describe an .onnx or .tflite file",
        description="Describe a model file: inputs, outputs, operators, size, parameters, MACs and quantization.")
    parser.add_argument("file", help="an .onnx or .tflite file")
    # nargs="?": a bare --json (the old switch) still prints JSON to stdout
    add_json_output(parser, "write the description as JSON to this file instead of the text ('-': stdout)",
                    nargs="?", const="-")
    add_force(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from edgekit.atomic import write_text_atomic
    from edgekit.cli.common import check_output
    from edgekit.inspect import inspect_file

    to_file = args.json not in (None, "-")
    if to_file:
        check_output(args.json, args.force, inputs=[args.file])  # before reading a model
    info = inspect_file(args.file)
    if args.json is None:
        print(render(info))
    elif to_file:
        write_text_atomic(args.json, json.dumps(info, indent=2) + "\n", force=args.force)
    else:
        print(json.dumps(info, indent=2))
    return 0


def render(info: dict) -> str:
    """Human-readable summary, tables by tabulate."""
    from tabulate import tabulate

    def io_rows(items: list[dict]) -> list[list]:
        rows = []
        for item in items:
            quant = item.get("quantization")
            rows.append([item["name"], item["shape"], item["dtype"],
                         f"scale={quant['scale']:.6g} zero_point={quant['zero_point']}" if quant else ""])
        return rows

    macs = info.get("macs")
    lines = [
        f"{info['file']}  ({info['format']}, {info['size_bytes'] / 1e6:.2f} MB)",
        f"quantization: {info['quantization']}",
        f"parameters:   {info['params']:,}",
        f"MACs:         {macs:,}" if macs else "MACs:         unknown",
        "",
        tabulate(io_rows(info["inputs"]), headers=["input", "shape", "dtype", "quantization"]),
        "",
        tabulate(io_rows(info["outputs"]), headers=["output", "shape", "dtype", "quantization"]),
        "",
        tabulate(sorted(info["ops"].items(), key=lambda kv: -kv[1]), headers=["op", "count"]),
    ]
    return "\n".join(lines)
