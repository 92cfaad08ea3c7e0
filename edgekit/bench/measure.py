"""Where a decision's latencies come from: this machine, or the device it is for.

``quantize --auto`` and ``prune --target-latency`` choose by measured latency, and the right
choice depends on the CPU that runs the model (the same ResNet-18 QDQ U8S8 ran 1.8x FP32 on an AVX2
EPYC and 2.5-3.0x on an AVX-512 VNNI one). A :class:`Measurer` measures a list of model files in
one go (on a device: one connection, one upload) and says where it measured, so every table and
choice can name the machine its figures hold for.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Sequence

RUNS = 40        # timed runs per candidate
WARMUP = 5
TIME_BUDGET = 20.0  # seconds per candidate at most (a slow board stops early, at 5 runs at least)


@dataclasses.dataclass
class Measurer:
    """Latency statistics (``edgekit.bench.stats.summarize``) of model files, here or on ``host``.
    ``target``: a profile whose threads (and ``ssh:``) apply; ``runtime``: the runtime to time on."""

    host: str | None = None
    target: str | None = None
    targets_dir: str | None = None
    threads: int | None = None
    runtime: str | None = None
    remote_python: str | None = None
    ssh_options: dict[str, Any] | None = None
    runs: int = RUNS
    where: str = "this machine"
    on_device: bool = False

    def __post_init__(self) -> None:
        from edgekit.bench.run import destination

        _, label = destination(self.target, self.targets_dir, self.host)
        self.on_device = label != "local"

    def __call__(self, paths: Sequence[Path]) -> list[dict[str, Any]]:
        """One statistics dict per path, in order; ``where`` then names the machine and its threads."""
        from edgekit.bench.run import benchmark

        document = benchmark(list(paths), target=self.target, targets_dir=self.targets_dir, host=self.host,
                             runs=self.runs, warmup=WARMUP, threads=self.threads, runtime=self.runtime,
                             time_budget=TIME_BUDGET, remote_python=self.remote_python,
                             ssh_options=self.ssh_options)
        system = document.get("system", {})
        threads = document["settings"].get("threads")
        emulated = " EMULATED, not the device's speed" if system.get("emulated") else ""
        self.where = (f"{'this machine' if document['host'] == 'local' else document['host']} "
                      f"({system.get('cpu_model') or system.get('machine') or '?'}, "
                      f"{threads or 'default'} threads{emulated})")
        by_path: dict[str, dict[str, Any]] = {}
        for result in document["results"]:
            by_path.setdefault(result["path"], result["latency_ms"])
        return [_p50(by_path[str(path)]) for path in paths]

    def scope_note(self) -> str:
        """What a choice made from these figures holds for."""
        if self.on_device:
            return f"measured on {self.where}: the choice holds for that device"
        return (f"measured on {self.where}: the choice holds for this machine only; pass --host (or a --target "
                "with an ssh: section) to choose on the device")


def _p50(latency_ms: dict[str, Any]) -> dict[str, Any]:
    """The p50 and its 95% CI (ms): what the choosers compare."""
    return {"p50": latency_ms["p50"], "p50_ci95": list(latency_ms["p50_ci95"]), "runs": latency_ms.get("runs")}
