"""Accuracy of artifacts (.onnx or .tflite) on evaluation data, through the same runner as benchmarks.

Task-agnostic: what the outputs mean and how they are scored belongs to the task
(:mod:`edgekit.tasks`). :func:`evaluate_many` decodes the data once and runs the reference once for
any number of artifacts (the pipeline's eval stage); :func:`evaluate` is the one-artifact form.
For classification, top-1 and top-5 say how good a model is; *agreement* (how often its top-1
equals the reference's) and *cosine* (of its logits with the reference's) say how faithfully a
compressed model reproduces the original, and need no labels. ``per_item`` records which images
each variant got right (:mod:`edgekit.tasks.items`), so differences get paired intervals.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import platform
from pathlib import Path
from typing import Any, Sequence

from edgekit.data import load_recipe
from edgekit.data.fingerprint import fingerprint
from edgekit.errors import EdgekitError, first_line
from edgekit.quantize.ort.settings import host_numerics_warning
from edgekit.runtime.device_runner import isa_flags
from edgekit.runtime.registry import runtime_for, runtimes_for
from edgekit.runtime.verify import check_model_file, verify_tflite
from edgekit.tasks import DEFAULT_TASK, EvalData, Task, get_task
from edgekit.tasks.items import data_id, record

SCHEMA = "edgekit.eval/1"
MAX_THREADS = 1024  # more is a typo, and would make the runtimes try to start that many threads


@dataclasses.dataclass
class EvalResult:
    """One artifact's evaluation; ``as_dict`` is the edgekit.eval/1 document."""

    path: Path
    data: EvalData
    task: Task
    metrics: dict[str, float | None]
    reference: str | None
    warning: str | None
    runtime: str | None = None  # what ran the artifact (the registry name); None: the default for its suffix
    per_item: dict[str, Any] | None = None  # edgekit.tasks.items.record: which images it got right
    created: str = dataclasses.field(
        default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))

    def primary(self) -> tuple[str, float | None, bool]:
        """The figure to rank by (top-1 on labelled data, agreement without): name, value, higher is better."""
        metric = self.task.primary_metric(self.data.labelled)
        return metric.name, self.metrics.get(metric.name), metric.higher_is_better

    def as_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA, "artifact": self.path.name, "path": str(self.path), "data": self.data.source,
            "recipe": self.data.recipe, "task": self.task.name, "num_samples": self.data.num_samples,
            **{k: v for k, v in self.metrics.items() if k not in ("agreement", "cosine")},
            "reference": self.reference, "agreement": self.metrics.get("agreement"), "cosine": self.metrics.get("cosine"),
            "runtime": self.runtime,
            "created": self.created, "measured_on": {"machine": platform.machine(), "isa_flags": isa_flags()},
            "warning": self.warning, "per_item": self.per_item,
        }


def evaluate_many(
    artifacts: Sequence[str | Path],
    data: str,
    recipe: str,
    *,
    reference: str | Path | None = None,
    task: str | Task = DEFAULT_TASK,
    runtime: str | None = None,
    also_on: Sequence[str] = (),
    threads: int | None = None,
    num_samples: int | None = None,
    seed: int = 0,
    skip_bad: bool = False,
    progress: bool = False,
) -> list[EvalResult]:
    """Every artifact on ``data``, decoded once; the reference runs once (an artifact that is the
    reference reuses its outputs). ``runtime`` picks the runtime for the artifacts (the reference
    opens with the one its extension implies). ``also_on``: more runtimes to measure each artifact
    on where they run its format and are installed here (OpenVINO beside ONNX Runtime on an .onnx):
    INT8 arithmetic differs between runtimes, so each runtime's accuracy is its own figure."""
    from edgekit.log import progress as progress_bar

    scorer = get_task(task)
    for artifact in artifacts:  # cheap checks before preparing any data
        check_model_file(artifact, "artifact")
    if reference is not None:
        check_model_file(reference, "reference")
    if threads is not None and not 1 <= threads <= MAX_THREADS:
        raise EdgekitError(f"--threads: must be between 1 and {MAX_THREADS}, got {threads}")
    eval_data = scorer.prepare(data, load_recipe(recipe), num_samples=num_samples, seed=seed, skip_bad=skip_bad)
    identity = data_id(fingerprint(data), num_samples, seed, eval_data.skipped)
    ref_path = Path(reference) if reference is not None else None
    ref_outputs = _predict(ref_path, eval_data, scorer, threads, None) if ref_path is not None else None
    results = []
    jobs = [(Path(a), name) for a in artifacts for name in [runtime, *_other_runtimes(Path(a), runtime, also_on)]]
    for artifact, name in progress_bar(jobs, desc="evaluating", unit="artifact", disable=None if progress else True):
        reuse = ref_path is not None and name is None and artifact.resolve() == ref_path.resolve()
        outputs = ref_outputs if reuse else _predict(artifact, eval_data, scorer, threads, name)
        results.append(EvalResult(artifact, eval_data, scorer, scorer.score(outputs, eval_data, ref_outputs),
                                  ref_path.name if ref_path is not None else None, host_numerics_warning(artifact),
                                  runtime=name or runtime_for(artifact).name,
                                  per_item=record(scorer.outcomes(outputs, eval_data, ref_outputs), identity)))
    return results


def _other_runtimes(path: Path, first: str | None, names: Sequence[str]) -> list[str]:
    """Of ``names``, those that run ``path`` and are installed here, other than the one it runs on first."""
    done = runtime_for(path, first).name
    return [spec.name for spec in runtimes_for(str(path)) if spec.name in names and spec.name != done
            and spec.installed()]


def evaluate(
    artifact: str | Path,
    data: str,
    recipe: str,
    *,
    reference: str | Path | None = None,
    task: str | Task = DEFAULT_TASK,
    runtime: str | None = None,
    num_samples: int | None = None,
    seed: int = 0,
    threads: int | None = None,
    skip_bad: bool = False,
) -> dict[str, Any]:
    """One artifact on ``data`` (with agreement against ``reference``): an edgekit.eval/1 document."""
    return evaluate_many([artifact], data, recipe, reference=reference, task=task, runtime=runtime, threads=threads,
                         num_samples=num_samples, seed=seed, skip_bad=skip_bad)[0].as_dict()


def _predict(path: Path, data: EvalData, task: Task, threads: int | None, runtime: str | None) -> Any:
    """The task's outputs of ``path`` on ``data`` (quantized I/O handled by the runner)."""
    from edgekit.runtime import open_runner

    if not path.is_file():
        raise EdgekitError(f"{path}: artifact not found")
    if path.suffix.lower() == ".tflite":
        verify_tflite(path, invoke=True, any_name=True)  # a corrupt flatbuffer must crash a child, not us
    try:
        runner = open_runner(str(path), threads, runtime=runtime)
    except EdgekitError:
        raise
    except Exception as exc:
        raise EdgekitError(f"{path}: cannot be loaded ({first_line(exc)})") from exc
    task.check_inputs(path, runner)
    task.check_outputs(path, runner)
    expected = runner.inputs[0].shape
    got = list(data.inputs.shape)
    if runner.layout == "NHWC" and len(got) == 4:
        got = [got[0], got[2], got[3], got[1]]
    if any(e is not None and e != g for e, g in zip(expected[1:], got[1:])):
        raise EdgekitError(f"{path}: model input has shape {expected}, the data makes {got} (check --recipe)")
    outputs = task.predict(runner, data)
    task.check_predictions(path, outputs, data)
    return outputs
