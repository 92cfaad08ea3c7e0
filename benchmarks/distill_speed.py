"""Distillation throughput (images/s) per configuration, side by side in one run, as one table.

Configurations: CPU in 1 process, CPU in N processes under torchrun (gloo), and, where CUDA is
present, fp32, AMP, AMP + channels_last, AMP + channels_last + the teacher cache, and all GPUs
under torchrun (nccl) when there are several. Each runs :func:`edgekit.distill.train` in its own
process (a pruned student distilled from the unpruned teacher) on synthetic tensors, so it needs no
data and no network; the last epoch is reported (the first warms up).

    python benchmarks/distill_speed.py                         # CPU, small: a couple of minutes
    python benchmarks/distill_speed.py --device cuda --model torchvision:resnet18 --input-size 224 \\
        --batch-size 256 --steps 30 --cpu-steps 2 --cpu-batch-size 32 --workers 4 --json speed.json
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


class Synthetic:
    """``size`` seeded random CHW tensors (a pool of 64, reused), labels cycling through the classes."""

    name = "synthetic"

    def __init__(self, size: int, shape: tuple[int, int, int], classes: int) -> None:
        import torch

        self.size, self.classes = size, classes
        self.pool = torch.randn(64, *shape, generator=torch.Generator().manual_seed(0))

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> tuple[Any, int]:
        return self.pool[index % len(self.pool)], index % self.classes


def configurations(args: argparse.Namespace) -> list[dict[str, Any]]:
    """What to measure: always the CPU pair, CUDA variants when asked for (or auto and present)."""
    import torch

    cpu = {"device": "cpu", "amp": False, "channels_last": False, "cache_teacher": False,
           "steps": args.cpu_steps or args.steps, "batch_size": args.cpu_batch_size or args.batch_size}
    threads = args.cpu_threads or max(1, (os.cpu_count() or 1))
    rows = [{**cpu, "name": "cpu, 1 process", "procs": 1, "threads": threads},
            {**cpu, "name": f"cpu, {args.cpu_procs} processes (gloo)", "procs": args.cpu_procs,
             "threads": max(1, threads // args.cpu_procs)}]
    if args.device == "cpu":
        return rows
    if not torch.cuda.is_available():
        if args.device == "cuda":
            raise SystemExit("distill_speed: --device cuda but torch sees no CUDA GPU")
        return rows
    gpu = {"device": "cuda", "procs": 1, "threads": threads, "steps": args.steps, "batch_size": args.batch_size,
           "cache_teacher": False}
    rows += [{**gpu, "name": "cuda fp32", "amp": False, "channels_last": False},
             {**gpu, "name": "cuda amp", "amp": True, "channels_last": False},
             {**gpu, "name": "cuda amp + channels_last", "amp": True, "channels_last": True},
             {**gpu, "name": "cuda amp + channels_last + cached teacher", "amp": True, "channels_last": True,
              "cache_teacher": True}]
    if torch.cuda.device_count() > 1:
        n = torch.cuda.device_count()
        rows.append({**gpu, "name": f"cuda amp + channels_last, {n} GPUs (nccl)", "amp": True,
                     "channels_last": True, "procs": n, "threads": max(1, threads // n)})
    return rows


def prepare(args: argparse.Namespace, work: Path) -> None:
    """The teacher (``--model``) and a student pruned from it, saved for the worker processes."""
    import copy

    import torch

    from edgekit.prune import prune
    from edgekit.sources import load_model, parse_kwargs

    torch.manual_seed(0)
    teacher = load_model(args.model, parse_kwargs(args.kwargs)).module.eval()
    student = copy.deepcopy(teacher)
    if args.ratio > 0:
        prune(student, torch.zeros(1, 3, args.input_size, args.input_size), ratio=args.ratio, progress=None)
    torch.save(teacher, work / "teacher.pt")
    torch.save(student, work / "student.pt")
    with torch.no_grad():
        classes = int(teacher(torch.zeros(1, 3, args.input_size, args.input_size)).shape[1])
    (work / "classes").write_text(str(classes))


def worker(args: argparse.Namespace) -> None:
    """One configuration, in this process (or in each torchrun rank); rank 0 writes the figures."""
    import torch

    from edgekit.distill import train
    from edgekit.distill.distributed import is_main_process

    config = json.loads(args.config)
    torch.set_num_threads(config["threads"])
    work = Path(args.work)
    teacher = torch.load(work / "teacher.pt", weights_only=False)
    student = torch.load(work / "student.pt", weights_only=False)
    classes = int((work / "classes").read_text())
    data = Synthetic(config["steps"] * config["batch_size"], (3, args.input_size, args.input_size), classes)
    history = train(student, data, None, teacher=teacher, epochs=args.epochs, batch_size=config["batch_size"],
                    device=config["device"], amp=config["amp"], channels_last=config["channels_last"],
                    workers=args.workers, cache_teacher=config["cache_teacher"], progress=False, log=lambda _: None)
    if is_main_process():
        last = history["epochs"][-1]
        Path(args.result).write_text(json.dumps({"images_per_s": last["images_per_s"],
                                                 "epoch_time_s": last["epoch_time_s"], "amp": history["amp"]}))


def measure(config: dict[str, Any], args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Run one configuration in fresh process(es) and read back rank 0's figures."""
    result = work / f"result-{abs(hash(config['name']))}.json"
    script = [str(Path(__file__).resolve()), "--worker", "--work", str(work), "--result", str(result),
              "--config", json.dumps(config), "--epochs", str(args.epochs), "--input-size", str(args.input_size),
              "--workers", str(args.workers)]
    if config["procs"] > 1:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
                   str(config["procs"]), *script]
    else:
        command = [sys.executable, *script]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": str(config["threads"])}
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=args.timeout)
    if done.returncode != 0 or not result.exists():
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        return {**config, "error": " | ".join(tail) or f"exit {done.returncode}"}
    return {**config, **json.loads(result.read_text()), "wall_s": time.perf_counter() - start}


def table(rows: list[dict[str, Any]]) -> str:
    header = ["configuration", "procs", "threads", "amp", "channels_last", "batch", "images/s", "epoch s", "vs first"]
    base = next((r["images_per_s"] for r in rows if "images_per_s" in r), None)
    lines = [header]
    for r in rows:
        if "error" in r:
            lines.append([r["name"], str(r["procs"]), str(r["threads"]), "-", "-", str(r["batch_size"]),
                          "failed: " + r["error"][:80], "", ""])
            continue
        lines.append([r["name"], str(r["procs"]), str(r["threads"]), r["amp"] or "off",
                      "on" if r["channels_last"] else "off", str(r["batch_size"]), f"{r['images_per_s']:.0f}",
                      f"{r['epoch_time_s']:.2f}", f"{r['images_per_s'] / base:.2f}x" if base else ""])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = [" | ".join(cell.ljust(w) for cell, w in zip(line, widths)) for line in lines]
    text.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(text)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                        help="cpu: the CPU rows only; cuda: fail without a GPU; auto: CUDA rows when present")
    parser.add_argument("--model", default="edgekit.zoo:digits_cnn", help="teacher model source (any edgekit source)")
    parser.add_argument("--kwargs", help='factory keyword arguments as JSON, e.g. \'{"num_classes": 100}\'')
    parser.add_argument("--input-size", type=int, default=32, help="square input side (3 channels)")
    parser.add_argument("--ratio", type=float, default=0.5, help="prune ratio of the student (0: same as teacher)")
    parser.add_argument("--batch-size", type=int, default=64, help="global batch per step")
    parser.add_argument("--steps", type=int, default=20, help="steps per epoch")
    parser.add_argument("--epochs", type=int, default=2, help="the last one is reported")
    parser.add_argument("--cpu-steps", type=int, help="steps per epoch on the CPU rows (default: --steps)")
    parser.add_argument("--cpu-batch-size", type=int, help="batch on the CPU rows (default: --batch-size)")
    parser.add_argument("--cpu-procs", type=int, default=2, help="processes of the gloo row")
    parser.add_argument("--cpu-threads", type=int,
                        help="threads in all for the CPU rows (default: every core; split over the gloo processes)")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers per process")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per configuration")
    parser.add_argument("--json", help="also write the rows to this file")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main() -> None:
    args = parse()
    if args.worker:
        worker(args)
        return
    rows = []
    with tempfile.TemporaryDirectory(prefix="distill-speed-") as folder:
        work = Path(folder)
        prepare(args, work)
        for config in configurations(args):
            print(f"measuring {config['name']} ...", file=sys.stderr, flush=True)
            rows.append(measure(config, args, work))
    print(f"distillation throughput: {args.model} at {args.input_size}x{args.input_size}, student pruned "
          f"{args.ratio:.0%}, {args.epochs} epochs (last reported), {os.cpu_count()} CPU cores")
    print(table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps({"args": {k: v for k, v in vars(args).items() if k not in
                                                        ("worker", "work", "result", "config")}, "rows": rows},
                                              indent=1) + "\n")
    if any("error" in r for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
