"""``make bench``: every comparison against the field, then one Markdown summary table.

Each script prints its own detailed tables and leaves a summary in benchmarks/results/. They run
one after another (never in parallel: timings on a 2-core machine would interfere).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from common import RESULTS, markdown

SCRIPTS = ["bench_prune.py", "bench_quantize_ort.py", "bench_tflite_conversion.py", "bench_harness.py", "bench_demo.py",
           "bench_install.py"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", help="comma-separated benchmarks, e.g. prune,tflite_conversion")
    parser.add_argument("--quick", action="store_true", help="skip onnx2tf's slow own path (minutes per model)")
    args = parser.parse_args()
    here = Path(__file__).resolve().parent
    wanted = {name.removeprefix("bench_").removesuffix(".py") for name in (args.only or "").split(",") if name}
    chosen = [s for s in SCRIPTS if not wanted or s[len("bench_"):-3] in wanted]
    env = dict(os.environ, PYTHONPATH=str(here))
    for script in chosen:
        extra = ["--skip-onnx2tf"] if args.quick and script == "bench_tflite_conversion.py" else []
        print(f"\n<!-- {script} -->", flush=True)
        subprocess.run([sys.executable, str(here / script), *extra], check=True, env=env)
    rows = []
    for script in chosen:
        path = RESULTS / f"{script[len('bench_'):-3]}.json"
        if path.exists():
            rows += [[r["comparison"], r["metric"], r["value"]] for r in json.loads(path.read_text())["rows"]]
    print("\n## Summary\n")
    print(markdown(rows, ["comparison", "metric", "measured here"]))


if __name__ == "__main__":
    main()
