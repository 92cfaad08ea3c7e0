"""``edgekit inspect``: inputs, outputs, ops, size and quantization of an .onnx or .tflite file."""
from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("inspect", help="describe an .onnx or .tflite file")
    parser.add_argument("file", help="an .onnx or .tflite file")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from edgekit.inspect import inspect_file

    info = inspect_file(args.file)
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print(render(info))
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
