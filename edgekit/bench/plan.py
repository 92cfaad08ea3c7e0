"""Which (artifact, runtime) pairs a benchmark measures, with which threads and delegate.

The decision in one place: ``--runtime`` names one runtime for every artifact (it must run their
suffix); otherwise a target profile's ``runtimes:`` measures an artifact on *each* listed runtime
that runs its suffix (ORT and OpenVINO side by side on one .onnx); otherwise the registry's
default for the suffix. A runtime the profile only suggests is skipped with a note where it is
not installed; one the user asked for (or the only one) is an error naming the install command.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Sequence

from edgekit.errors import EdgekitError
from edgekit.runtime.registry import RuntimeSpec, runtime_for, runtime_named, runtimes_for


@dataclasses.dataclass(frozen=True)
class Job:
    """One measurement: an artifact on one runtime. ``suggested``: chosen from a profile's list."""

    path: Path
    runtime: RuntimeSpec
    threads: int | None = None
    delegate: str | None = None
    suggested: bool = False
    input_shape: tuple[int, ...] | None = None  # where the model's input is dynamic: the size timed


def plan(paths: Sequence[Path], runtime: str | None = None, profile: Any = None,
         threads: int | None = None, input_shape: Sequence[int] | None = None) -> list[Job]:
    """The jobs for ``paths``; ``threads`` (the user's) wins over the profile's per-runtime threads.
    ``input_shape``: what a model with a dynamic input is timed at (static ones ignore it)."""
    asked = runtime_named(runtime) if runtime else None
    jobs = []
    for path in paths:
        if asked:
            chosen, suggested = [runtime_for(path, asked.name)], False
        else:
            listed = [spec for spec in runtimes_for(str(path)) if profile and spec.name in profile.runtimes]
            chosen, suggested = (listed, True) if listed else ([runtime_for(path)], False)
        jobs += [Job(Path(path), spec, _threads(spec, profile, threads), _delegate(spec, profile), suggested,
                     tuple(input_shape) if input_shape else None) for spec in chosen]
    return jobs


def _threads(spec: RuntimeSpec, profile: Any, threads: int | None) -> int | None:
    if threads or not profile:
        return threads
    if spec.name == "tflite" and profile.tflite.threads:
        return profile.tflite.threads
    return profile.threads


def _delegate(spec: RuntimeSpec, profile: Any) -> str | None:
    return profile.tflite.delegate if profile and spec.name == "tflite" else None


def settle(jobs: list[Job], available: dict[str, str], where: str, python: str,
           remote: bool) -> tuple[list[Job], list[str]]:
    """Drop suggested jobs whose runtime ``python`` on ``where`` lacks (a note each); a requested or
    last-resort one is an error with the install command. ``available``: a probe's module -> version."""
    kept, notes = [], []
    for job in jobs:
        if job.runtime.available_in(available):
            kept.append(job)
            continue
        others = [j for j in jobs if j.path == job.path and j is not job and j.runtime.available_in(available)]
        if job.suggested and others:
            notes.append(f"note: {job.runtime.name} is not installed on {where} ({job.runtime.install}); "
                         f"{job.path.name} is measured on {', '.join(j.runtime.name for j in others)} only")
            continue
        raise EdgekitError(f"{where}: {python} has no {job.runtime.name} runtime for {job.path.name}; "
                           f"install it {'on the device' if remote else 'there'}: {job.runtime.install}")
    return kept, list(dict.fromkeys(notes))
