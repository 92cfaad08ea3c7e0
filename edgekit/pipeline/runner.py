"""``edgekit run``: the whole pipeline, stage by stage, each stage cached by the content of its inputs.

model -> (train) -> prune -> distill -> export (baseline and pruned) -> quantize (ORT and TFLite for
each) -> eval -> bench -> report. Every stage writes into one run directory::

    RUN/artifacts/   models and their manifests
    RUN/eval/        one edgekit.eval/1 JSON per artifact
    RUN/bench/       one edgekit.bench/1 JSON per target or host
    RUN/run.json     the resolved configuration, baseline and variant labels
    RUN/report.*     json, md, html
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

from edgekit.atomic import write_text_atomic
from edgekit.errors import EdgekitError
from edgekit.pipeline.config import PipelineConfig
from edgekit.pipeline.stages import StageCache

STAGES = ("train", "prune", "distill", "export", "quantize", "eval", "bench", "report")


class Pipeline:
    """Runs the stages of one configuration into one run directory."""

    def __init__(self, config: PipelineConfig, run_dir: Path, *, only: set[str] | None = None,
                 log: Callable[[str], None] = print) -> None:
        unknown = (only or set()) - set(STAGES)
        if unknown:
            raise EdgekitError(f"--only: unknown stage(s) {', '.join(sorted(unknown))}; stages are {', '.join(STAGES)}")
        self.config = config
        self.run_dir = run_dir
        self.artifacts = run_dir / "artifacts"
        self.only = only
        self.log = log
        self.cache = StageCache(run_dir)

    # -- orchestration --------------------------------------------------------------------------
    def run(self) -> Path:
        self.artifacts.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        baseline_pt = self._stage("train", self._train_settings(), [], self._train)[0]
        student_pt = baseline_pt
        if self.config.prune is not None:
            student_pt = self._stage("prune", self.config.prune.model_dump(), [baseline_pt], self._prune)[0]
            if self.config.distill is not None and self.config.data.train:
                student_pt = self._stage(
                    "distill", self.config.distill.model_dump(), [student_pt, baseline_pt], self._distill
                )[0]
        onnx_files = self._stage("export", {"shape": self.config.model.input_shape}, [baseline_pt, student_pt],
                                 self._export)
        quantized = self._stage("quantize", self.config.quantize.model_dump(), onnx_files, self._quantize)
        variants = [*onnx_files, *quantized]
        self._write_run_json(onnx_files[0], variants)
        self._stage("eval", {"data": self.config.data.model_dump()}, variants, self._eval)
        self._stage("bench", self.config.bench.model_dump(), variants, self._bench)
        report = self._stage("report", {}, sorted([*self.run_dir.glob("eval/*.json"), *self.run_dir.glob("bench/*.json")]),
                             self._report)
        self.log(f"pipeline finished in {time.perf_counter() - started:.0f} s; report: {report[0]}")
        return report[0]

    def _stage(self, name: str, settings: Any, inputs: list[Path], work: Callable[[list[Path]], list[Path]]) -> list[Path]:
        key = self.cache.key(settings, [p for p in inputs if p.is_file()])
        wanted = self.only is None or name in self.only
        if self.cache.is_fresh(name, key) or (not wanted and self.cache.outputs(name)):
            self.log(f"[{name}] up to date")
            return self.cache.outputs(name)
        if not wanted:
            raise EdgekitError(f"--only: stage '{name}' has never run in {self.run_dir}; include it")
        self.log(f"[{name}] running")
        started = time.perf_counter()
        outputs = work(inputs)
        self.cache.record(name, key, outputs)
        self.log(f"[{name}] done in {time.perf_counter() - started:.1f} s")
        return outputs

    def _train_settings(self) -> dict[str, Any]:
        settings: dict[str, Any] = {"model": self.config.model.model_dump()}
        if self.config.train is not None:
            settings["train"] = self.config.train.model_dump()
            settings["data"] = [self.config.data.train, self.config.data.val, self.config.data.recipe]
        return settings

    def _write_run_json(self, baseline: Path, variants: list[Path]) -> None:
        document = {
            "name": self.config.name,
            "baseline": baseline.name,
            "artifacts": [p.name for p in variants],
            "config": self.config.model_dump(),
        }
        write_text_atomic(self.run_dir / "run.json", json.dumps(document, indent=2) + "\n", force=True)

    # -- stages (filled in by edgekit.pipeline.steps) ------------------------------------------
    def _train(self, inputs: list[Path]) -> list[Path]:
        from edgekit.pipeline import steps

        return [steps.train_baseline(self.config, self.artifacts / "baseline.pt")]

    def _prune(self, inputs: list[Path]) -> list[Path]:
        from edgekit.pipeline import steps

        return [steps.prune(self.config, inputs[0], self.artifacts / "pruned.pt")]

    def _distill(self, inputs: list[Path]) -> list[Path]:
        from edgekit.pipeline import steps

        return [steps.distill(self.config, inputs[0], inputs[1], self.artifacts / "pruned_distilled.pt")]

    def _export(self, inputs: list[Path]) -> list[Path]:
        from edgekit.pipeline import steps

        outputs = [steps.export(self.config, inputs[0], self.artifacts / "fp32.onnx")]
        if inputs[1] != inputs[0]:
            outputs.append(steps.export(self.config, inputs[1], self.artifacts / "pruned.fp32.onnx"))
        return outputs

    def _quantize(self, inputs: list[Path]) -> list[Path]:
        from edgekit.pipeline import steps

        return steps.quantize_all(self.config, inputs, self.log)

    def _eval(self, inputs: list[Path]) -> list[Path]:
        from edgekit.pipeline import steps

        return steps.evaluate_all(self.config, inputs, self.run_dir / "eval", reference=inputs[0])

    def _bench(self, inputs: list[Path]) -> list[Path]:
        from edgekit.pipeline import steps

        return steps.bench_all(self.config, inputs, self.run_dir / "bench")

    def _report(self, inputs: list[Path]) -> list[Path]:
        from edgekit.pipeline import steps

        return steps.report(self.run_dir)
