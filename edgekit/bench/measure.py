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

RUNS = 1000      # timed runs per candidate at most: TIME_BUDGET ends them first on all but tiny models
WARMUP = 5
TIME_BUDGET = 2.0  # seconds of timed runs per process (at least 5 runs): a burst of noise cannot fill a window this long


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
    time_budget: float = TIME_BUDGET  # seconds of timed runs per process
    where: str = "this machine"
    on_device: bool = False

    def __post_init__(self) -> None:
        from edgekit.bench.run import destination

        _, label = destination(self.target, self.targets_dir, self.host)
        self.on_device = label != "local"

    def __call__(self, paths: Sequence[Path]) -> list[dict[str, Any]]:
        """One statistics dict per entry of ``paths``, in order (a path may repeat: each entry is its own
        process, so ``[a, b, a, b]`` measures side by side); ``where`` then names the machine."""
        from edgekit.bench.run import benchmark
        from edgekit.runtime.registry import runtime_for

        runtime = self.runtime or runtime_for(Path(paths[0])).name  # one result per entry
        document = benchmark(list(paths), target=self.target, targets_dir=self.targets_dir, host=self.host,
                             runs=self.runs, warmup=WARMUP, threads=self.threads, runtime=runtime,
                             time_budget=self.time_budget, remote_python=self.remote_python,
                             ssh_options=self.ssh_options)
        system = document.get("system", {})
        threads = document["settings"].get("threads")
        emulated = " EMULATED, not the device's speed" if system.get("emulated") else ""
        self.where = (f"{'this machine' if document['host'] == 'local' else document['host']} "
                      f"({system.get('cpu_model') or system.get('machine') or '?'}, "
                      f"{threads or 'default'} threads{emulated})")
        return [_p50(result["latency_ms"]) for result in document["results"]]

    def scope_note(self) -> str:
        """What a choice made from these figures holds for."""
        if self.on_device:
            return f"measured on {self.where}: the choice holds for that device"
        return (f"measured on {self.where}: the choice holds for this machine only; pass --host (or a --target "
                "with an ssh: section) to choose on the device")


def _p50(latency_ms: dict[str, Any]) -> dict[str, Any]:
    """The p50 and its 95% CI (ms): what the choosers compare."""
    return {"p50": latency_ms["p50"], "p50_ci95": list(latency_ms["p50_ci95"]), "runs": latency_ms.get("runs")}
