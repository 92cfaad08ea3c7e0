"""The demo's promise, measured: FP32 against pruned+distilled INT8 (speed, size, accuracy) for both
runtimes, from a fresh ``edgekit demo`` run (or an existing one with ``--run-dir``)."""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from common import markdown, row_labelled, save_summary


def demo_summary(table: list[list[str]], artifact: str) -> dict[str, str]:
    """One summary line quoting the table row of ``artifact`` ([variant, artifact, p50 ms, speed-up,
    CI verdict, MB, smaller, top-1 %, Δ top-1]): the speed-up with its verdict, never a bare "faster"."""
    row = row_labelled(table, artifact, column=1)
    return {"comparison": f"demo: FP32 ONNX vs {row[0]}", "metric": "p50 / size / top-1",
            "value": f"{row[3]} ({row[4]}), {row[6]} smaller, {row[8]} points"}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run-dir", help="reuse this demo run instead of running a fresh one")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        run_dir = Path(args.run_dir or Path(folder) / "demo")
        if not (run_dir / "report.json").exists():
            subprocess.run([sys.executable, "-m", "edgekit", "demo", "--output", str(run_dir)], check=True,
                           stdout=subprocess.DEVNULL)
        report = json.loads((run_dir / "report.json").read_text())
    rows = {r["artifact"]: r for r in report["rows"]}
    base = rows["fp32.onnx"]
    table = []
    for name in ("fp32.onnx", "fp32.tflite", "int8.onnx", "int8.tflite", "pruned.fp32.onnx", "pruned.int8.onnx",
                 "pruned.int8.tflite"):
        r = rows.get(name)
        if not r:
            continue
        speed = base["latency_ms"]["p50"] / r["latency_ms"]["p50"]
        table.append([r["label"], name, f"{r['latency_ms']['p50']:.3f}", f"{speed:.2f}x", r["vs_baseline"],
                      f"{r['size_bytes'] / 1e6:.2f}", f"{base['size_bytes'] / r['size_bytes']:.1f}x",
                      f"{r['top1']:.2f}", f"{r['top1_delta']:+.2f}"])
    summary = [demo_summary(table, name) for name in ("pruned.int8.onnx", "pruned.int8.tflite")]
    print("## Demo: FP32 against pruned+distilled INT8 (ResNet-18 small-input stem on digits, this machine)\n")
    print(markdown(table, ["variant", "artifact", "p50 ms", "speed-up", "CI verdict", "MB", "smaller", "top-1 %", "Δ top-1"]))
    save_summary("demo", summary)


if __name__ == "__main__":
    main()
