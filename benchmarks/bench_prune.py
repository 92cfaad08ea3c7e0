"""Structured pruning: ResNet-18 at ratio 0.5, MACs, ONNX size and FP32 ONNX Runtime latency.

Acceptance (issue 5): MACs <= 30% of the original, ONNX file >= 3x smaller, FP32 latency >= 2.5x
lower, the latency ratio measured side by side in one run.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import torch
import torchvision

from common import interleaved_p50_ms, log, markdown, save_summary
from edgekit.export import export_onnx
from edgekit.prune import prune
from edgekit.runtime import open_runner


def main() -> None:
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as work:
        full = torchvision.models.resnet18().eval()
        x = torch.zeros(1, 3, 224, 224)
        export_onnx(full, x, Path(work) / "full.onnx")
        pruned = torchvision.models.resnet18().eval()
        report = prune(pruned, x, ratio=0.5, progress=None)
        export_onnx(pruned, x, Path(work) / "pruned.onnx")
        runners = {name: open_runner(str(Path(work) / f"{name}.onnx"), threads=2) for name in ("full", "pruned")}
        feeds = {name: r.example_feeds() for name, r in runners.items()}
        log("timing FP32 ONNX Runtime, full vs pruned, interleaved ...")
        p50 = interleaved_p50_ms({name: (lambda r=r, f=feeds[name]: r.run(f)) for name, r in runners.items()})
        sizes = {name: (Path(work) / f"{name}.onnx").stat().st_size for name in runners}
    macs_ratio = report["macs_after"] / report["macs_before"]
    size_ratio = sizes["full"] / sizes["pruned"]
    speedup = p50["full"] / p50["pruned"]
    print("## Structured pruning: ResNet-18, ratio 0.5, 224x224, FP32 ONNX Runtime, 2 threads\n")
    print(markdown([
        ["MACs", f"{report['macs_before'] / 1e9:.2f} G", f"{report['macs_after'] / 1e9:.2f} G", f"{macs_ratio:.1%}", "<= 30%"],
        ["ONNX size", f"{sizes['full'] / 1e6:.1f} MB", f"{sizes['pruned'] / 1e6:.1f} MB", f"{size_ratio:.2f}x smaller", ">= 3x"],
        ["p50 latency", f"{p50['full']:.2f} ms", f"{p50['pruned']:.2f} ms", f"{speedup:.2f}x faster", ">= 2.5x"],
    ], ["", "original", "pruned", "ratio", "target"]))
    save_summary("prune", [
        {"comparison": "ResNet-18 pruned 0.5 vs original (FP32 ORT)", "metric": "MACs kept", "value": f"{macs_ratio:.1%}"},
        {"comparison": "ResNet-18 pruned 0.5 vs original (FP32 ORT)", "metric": "ONNX size", "value": f"{size_ratio:.2f}x smaller"},
        {"comparison": "ResNet-18 pruned 0.5 vs original (FP32 ORT)", "metric": "p50 latency", "value": f"{speedup:.2f}x faster"},
    ])


if __name__ == "__main__":
    main()
