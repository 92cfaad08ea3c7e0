"""``edgekit run``: the whole pipeline, stage by stage, each stage cached by the content of its inputs.

model -> (train) -> prune -> distill -> export (baseline and pruned) -> quantize (ORT and TFLite for
each) -> quantize_modes (dynamic/fp16, when ``quantize.modes`` lists them) -> eval -> bench -> report. Every stage writes into one run directory::

    RUN/artifacts/   models and their manifests
    RUN/eval/        one edgekit.eval/1 JSON per artifact
    RUN/bench/       one edgekit.bench/1 JSON per target or host
    RUN/run.json     the resolved configuration, baseline and variant labels
    RUN/report.*     json, md, html
"""
from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Callable

from edgekit.atomic import claim, release, write_text_atomic
from edgekit.errors import EdgekitError
from edgekit.pipeline.config import PipelineConfig, check_inputs
from edgekit.pipeline.stages import StageCache, StepContext, checkpoint_dir, remove_stale_checkpoints

STAGES = ("train", "prune", "distill", "export", "quantize", "quantize_modes", "eval", "bench", "report")


class Pipeline:
    """Runs the stages of one configuration into one run directory."""

    def __init__(self, config: PipelineConfig, run_dir: Path, *, only: set[str] | None = None,
                 log: Callable[[str], None] = logging.getLogger(__name__).info, origin: str = "pipeline", targets_dir: str | None = None,
                 force: bool = False) -> None:
        unknown = (only or set()) - set(STAGES)
        if unknown:
            raise EdgekitError(f"--only: unknown stage(s) {', '.join(sorted(unknown))}; stages are {', '.join(STAGES)}")
        self.config = config
        self.run_dir = Path(run_dir).resolve()
        self.artifacts = self.run_dir / "artifacts"
        self.only = only
        self.log = log
        self.origin = origin
        self.force = force
        self.context = StepContext(config, self.run_dir, log, targets_dir)

    # -- orchestration --------------------------------------------------------------------------
    def run(self) -> Path:
        """Check the whole configuration, then run (or reuse) each stage; returns the HTML report."""
        check_inputs(self.config, self.origin, self.context.targets_dir)
        self._claim_run_dir()
        created = not self.run_dir.exists()
        try:
            return self._run()
        except BaseException:
            if created:
                _remove_empty_folders(self.run_dir)  # a run that failed before writing anything leaves nothing
            raise
        finally:
            release(self.run_dir)

    def _claim_run_dir(self) -> None:
        """The run folder is a folder edgekit can write, and this process its only writer: a second
        ``edgekit run`` on it would redo the same stages and race on ``stages.json``, so it is refused."""
        from edgekit.cli.common import check_folder_for

        if self.run_dir.exists() and not self.run_dir.is_dir():
            raise EdgekitError(f"{self.run_dir}: is a file, not a run folder")
        check_folder_for(self.run_dir)
        claim(self.run_dir, wait=False)

    def _run(self) -> Path:
        self.cache = StageCache(self.run_dir)
        self.incomplete: list[str] = []  # stages with a failure recorded (a device): redone next run
        if self.force:
            self.cache.clear()
        self.artifacts.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        baseline_pt = self._stage("train", [])[0]
        students = []
        for variant in self.config.prune.variants() if self.config.prune is not None else []:
            student_pt = self._stage("prune", [baseline_pt], variant)[0]
            if self.config.distill is not None and self.config.data.train:
                student_pt = self._stage("distill", [student_pt, baseline_pt], variant)[0]
            students.append(student_pt)
        onnx_files = self._stage("export", [baseline_pt, *students])
        quantized = self._stage("quantize", onnx_files)
        if any(mode != "static" for mode in self.config.quantize.modes):  # their own stage: no re-calibration
            from edgekit.pipeline.steps import modes_inputs

            quantized += self._stage("quantize_modes", modes_inputs(self.config, onnx_files))
        variants = [*onnx_files, *quantized]
        run_json = self._write_run_json(onnx_files[0], variants)
        evals = self._stage("eval", variants)
        benches = self._stage("bench", variants)
        report = self._stage("report", [*evals, *benches, run_json])
        self.log(f"pipeline finished in {time.perf_counter() - started:.0f} s; report: {report[0]}")
        return report[0]

    def _stage(self, name: str, inputs: list[Path], variant: str | None = None) -> list[Path]:
        """Reuse the stage's outputs when its key (derived from what its step reads) is unchanged.
        ``variant``: one pruned variant of a sweep, cached on its own (``prune@r0.3``)."""
        from edgekit.pipeline.steps import STEPS

        step = STEPS[name]
        context = dataclasses.replace(self.context, variant=variant)
        entry = f"{name}@{variant}" if variant else name
        key = self.cache.key(step.reads(context), inputs)
        wanted = self.only is None or name in self.only
        if self.cache.is_fresh(entry, key) or (not wanted and self.cache.has_run(entry)):
            self.log(f"[{entry}] up to date")
            return self.cache.outputs(entry)
        if not wanted:
            raise EdgekitError(f"--only: stage '{name}' has never run in {self.run_dir}; include it")
        self.log(f"[{entry}] running")
        started = time.perf_counter()
        checkpoints = checkpoint_dir(self.run_dir, entry, key)
        outputs = step.work(dataclasses.replace(context, checkpoints=checkpoints), inputs)
        complete = step.complete(outputs)
        self.cache.record(entry, key, outputs, complete)
        if not complete:
            self.incomplete.append(entry)
        remove_stale_checkpoints(self.run_dir, entry, keep=checkpoints)
        self.log(f"[{entry}] done in {time.perf_counter() - started:.1f} s")
        return outputs

    def _write_run_json(self, baseline: Path, variants: list[Path]) -> Path:
        document = {
            "name": self.config.name,
            "baseline": baseline.name,
            "artifacts": [p.name for p in variants],
            "config": self.config.model_dump(),
        }
        path, text = self.run_dir / "run.json", json.dumps(document, indent=2) + "\n"
        if not path.is_file() or path.read_text() != text:
            write_text_atomic(path, text, force=True)
        return path


def _remove_empty_folders(root: Path) -> None:
    """Remove ``root`` and the folders under it that hold no file (checkpoints and finished stages stay)."""
    import os

    if not root.is_dir():
        return
    for folder, _, _ in sorted(os.walk(root), key=lambda entry: -len(entry[0])):
        try:
            os.rmdir(folder)
        except OSError:
            pass
