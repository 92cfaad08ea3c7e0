"""``prune --target-latency`` against ``edgekit bench`` afterwards: requested vs measured latency.

ResNet-18 (torchvision, random weights) at 224x224 on this machine: the unpruned FP32 ONNX model is
benchmarked first, then for each requested fraction of its latency ``edgekit prune --target-latency``
searches the ratio (every candidate exported and timed), the chosen model is exported and timed
again by ``edgekit bench`` (three processes alternating with the unpruned model). Printed per target:
requested, measured, the measured/requested ratio (the acceptance: within 10%), the machine's drift
(the unpruned model's p50 then against during the search: this shared machine moves by 20-30%
between minutes), the measurement corrected for it, and the ratio chosen. Usage::

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


def side_by_side(unpruned: Path, chosen: Path, work: Path, runs: int, rounds: int = 3) -> tuple[float, float]:
    """Median p50s of ``unpruned`` and ``chosen`` from one ``edgekit bench`` call that alternates them
    (``rounds`` processes each): the machine's drift between minutes shows in both alike."""
    import statistics

    out = work / f"{chosen.stem}.side.json"
    edgekit("bench", *[str(p) for _ in range(rounds) for p in (unpruned, chosen)], "--runs", str(runs),
            "--warmup", "10", "--json", str(out), "--force")
    results = json.loads(out.read_text())["results"]
    p50 = [r["latency_ms"]["p50"] for r in results]
    return statistics.median(p50[0::2]), statistics.median(p50[1::2])


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
            base_now, measured = side_by_side(base, onnx, work, args.runs)
            drift = base_now / search["unpruned_p50_ms"]
            rows.append((target, measured, measured / drift, drift, search["chosen_ratio"], len(search["curve"]),
                         search_s))
        print("measured: edgekit bench afterwards, median of 3 processes alternating with the unpruned model; "
              "drift: the unpruned model's p50 then / during the search; corrected: measured / drift")
        print(f"{'requested ms':>13} {'measured ms':>12} {'measured/req':>13} {'drift':>6} {'corrected/req':>14} "
              f"{'ratio':>6} {'trials':>6} {'search s':>9}")
        for target, measured, corrected, drift, ratio, trials, seconds in rows:
            print(f"{target:13.2f} {measured:12.2f} {measured / target:13.3f} {drift:6.2f} {corrected / target:14.3f} "
                  f"{ratio:6.3f} {trials:6d} {seconds:9.0f}")
        worst = max(abs(m / t - 1) for t, m, *_ in rows)
        print(f"summary: worst |measured/requested - 1| = {worst:.1%} (acceptance: <= 10%); machine drift "
              f"{min(r[3] for r in rows):.2f}-{max(r[3] for r in rows):.2f}")
        return 0 if worst <= 0.10 else 1


if __name__ == "__main__":
    raise SystemExit(main())
