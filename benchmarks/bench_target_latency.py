"""``prune --target-latency`` against ``edgekit bench`` afterwards: requested vs measured latency.

ResNet-18 (torchvision, random weights) at 224x224 on this machine: the unpruned FP32 ONNX model is
benchmarked first, then for each requested fraction of its latency ``edgekit prune --target-latency``
searches the ratio (every candidate exported and timed), the chosen model is exported and timed
again by ``edgekit bench`` in a fresh process. Printed per target: requested, measured, the
measured/requested ratio (the acceptance: within 10%) and the ratio chosen. Usage::

    PYTHONPATH=. python benchmarks/bench_target_latency.py [--fractions 0.7 0.5] [--arch resnet18] [--size 224]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import ROOT

EDGEKIT = [sys.executable, "-m", "edgekit"]


def edgekit(*args: str) -> str:
    done = subprocess.run([*EDGEKIT, *args], capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"edgekit {' '.join(args)} failed: {done.stderr.strip()[-400:]}")
    return done.stdout


def bench_p50(onnx: Path, work: Path, runs: int) -> float:
    out = work / f"{onnx.stem}.bench.json"
    edgekit("bench", str(onnx), "--runs", str(runs), "--warmup", "10", "--json", str(out), "--force")
    return json.loads(out.read_text())["results"][0]["latency_ms"]["p50"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.7, 0.5])
    parser.add_argument("--runs", type=int, default=60)
    args = parser.parse_args()
    shape = f"1,3,{args.size},{args.size}"
    with tempfile.TemporaryDirectory(prefix="edgekit-target-latency-") as folder:
        work = Path(folder)
        base = work / "unpruned.onnx"
        edgekit("export", f"torchvision:{args.arch}", "--input-shape", shape, "-o", str(base))
        unpruned = bench_p50(base, work, args.runs)
        print(f"{args.arch} {args.size}px FP32 ONNX unpruned: p50 {unpruned:.2f} ms (edgekit bench)")
        rows = []
        for fraction in args.fractions:
            target = round(unpruned * fraction, 2)
            pruned = work / f"pruned-{fraction:g}.pt"
            started = time.perf_counter()
            edgekit("prune", f"torchvision:{args.arch}", "--input-shape", shape, "--target-latency", str(target),
                    "-o", str(pruned))
            search_s = time.perf_counter() - started
            manifest = json.loads((pruned.parent / f"{pruned.name}.json").read_text())
            search = next(s for s in manifest["stages"] if s.get("stage") == "prune")["latency_search"]
            onnx = work / f"pruned-{fraction:g}.onnx"
            edgekit("export", str(pruned), "--input-shape", shape, "-o", str(onnx))
            measured = bench_p50(onnx, work, args.runs)
            rows.append((target, measured, search["chosen_ratio"], len(search["curve"]), search_s))
        print(f"{'requested ms':>13} {'measured ms':>12} {'measured/requested':>19} {'ratio':>6} {'trials':>6} {'search s':>9}")
        for target, measured, ratio, trials, seconds in rows:
            print(f"{target:13.2f} {measured:12.2f} {measured / target:19.3f} {ratio:6.3f} {trials:6d} {seconds:9.0f}")
        worst = max(abs(m / t - 1) for t, m, *_ in rows)
        print(f"summary: worst |measured/requested - 1| = {worst:.1%} (acceptance: <= 10%)")
        return 0 if worst <= 0.10 else 1


if __name__ == "__main__":
    raise SystemExit(main())
