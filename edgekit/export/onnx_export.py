"""PyTorch -> ONNX, checked (onnx.checker, shape inference) and proven (parity against PyTorch).

Exporter choice, measured here on torchvision models: the TorchScript exporter took 0.7-0.9 s for
ResNet-18 and the dynamo (torch.export) exporter 2.3-13 s, with the same parity (max-abs ~3e-6).
So ``exporter="auto"`` uses TorchScript and falls back to dynamo when TorchScript cannot trace the
model; an ExportedProgram (``.pt2``) always goes through dynamo, which is made for it.

A model that returns a tuple, list or dict of tensors exports as that many named ONNX outputs (the
dict's keys, else ``output``, ``output_1``, ...), each proven on its own parity figures.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import time
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgekit.atomic import atomic_path, check_can_write
from edgekit.errors import EdgekitError, ParityError, first_line
from edgekit.export.parity import (DEFAULT_NOISE_FACTOR, OutputsParity, ParityReport, compare, compare_outputs,
                                   failure_line, parity_inputs)
from edgekit.manifest import new_manifest, write_manifest
from edgekit.modelcopy import copy_model

DEFAULT_OPSET = 17
EXPORTERS = ("auto", "torchscript", "dynamo")


@dataclasses.dataclass
class ExportResult:
    path: Path
    parity: ParityReport | OutputsParity  # OutputsParity: one report per output of a multi-output model
    exporter: str
    seconds: float
    manifest: dict[str, Any]


def export_onnx(
    model: Any,
    example_input: Any,
    output: str | Path,
    *,
    opset: int = DEFAULT_OPSET,
    input_name: str = "input",
    output_name: str = "output",
    dynamic_batch: bool = False,
    exporter: str = "auto",
    parity_count: int = 8,
    samples: np.ndarray | None = None,
    tolerance: float | None = None,
    noise_factor: float = DEFAULT_NOISE_FACTOR,
    force: bool = False,
    source: dict[str, Any] | None = None,
    preprocessing: dict[str, Any] | None = None,
    exported_program: Any = None,
    extra_stage: dict[str, Any] | None = None,
    prior_stages: list[dict[str, Any]] | None = None,
) -> ExportResult:
    """Export ``model`` to ``output`` and prove parity; nothing is left at ``output`` on failure.

    Parity (see :mod:`edgekit.export.parity`): by default the ONNX error against a float64 PyTorch run
    must be within ``noise_factor`` times PyTorch float32's own; ``tolerance`` picks the fixed rule instead.
    """
    import torch

    if exporter not in EXPORTERS:
        raise EdgekitError(f"--exporter: {exporter!r} is not one of {', '.join(EXPORTERS)}")
    for flag, value in (("--noise-factor", noise_factor), ("--tolerance", tolerance)):
        if value is not None and not value > 0:
            raise EdgekitError(f"{flag}: must be positive, got {value:g}")
    output = check_can_write(output, force)
    if exported_program is None:  # an ExportedProgram's module refuses .eval(); it is traced in eval form
        model = model.eval()
    example = _as_tensor(example_input)
    with torch.no_grad():
        try:
            reference_out = model(example)
        except Exception as exc:
            raise EdgekitError(
                f"input shape {list(example.shape)}: the model cannot run on it ({type(exc).__name__}: {first_line(exc)})"
            ) from exc
    output_names = _output_names(reference_out, output_name, input_name)
    if samples is not None and tuple(samples.shape[1:]) != tuple(example.shape[1:]):
        raise EdgekitError(
            f"parity samples have shape {list(samples.shape[1:])} per item, the model input is {list(example.shape[1:])}"
        )

    started = time.perf_counter()
    with atomic_path(output, force) as tmp:
        used = _run_exporter(model, example, tmp, opset, input_name, output_names, dynamic_batch, exporter,
                             exported_program)
        _check_and_infer(tmp, output, output_names)
        seconds = time.perf_counter() - started
        report = prove_parity(model, tmp, example.shape, parity_count, samples, tolerance, noise_factor)
        if not report.passed:
            raise ParityError(f"{output}: {failure_line(report)}")

    stage = {
        "stage": "export", "exporter": used, "opset": opset, "seconds": round(seconds, 3),
        "parity": report.as_dict(), "params": int(sum(p.numel() for p in model.parameters())),
    }
    from edgekit.inspect import onnx_macs

    stage["macs"] = onnx_macs(output)
    stage.update(extra_stage or {})
    manifest = new_manifest(
        output,
        source=source or {"spec": type(model).__name__},
        input_spec={
            "name": input_name, "shape": list(example.shape), "dtype": "float32", "layout": "NCHW",
            "dynamic_batch": dynamic_batch, "preprocessing": preprocessing,
        },
        outputs=_manifest_outputs(reference_out, output_names),
        stages=[*(prior_stages or []), stage],  # a pruned model's history travels with its export
    )
    write_manifest(output, manifest)
    return ExportResult(output, report, used, seconds, manifest)


def prove_parity(
    model: Any,
    onnx_path: str | Path,
    shape: Sequence[int],
    count: int = 8,
    samples: np.ndarray | None = None,
    tolerance: float | None = None,
    noise_factor: float = DEFAULT_NOISE_FACTOR,
) -> ParityReport | OutputsParity:
    """Compare PyTorch and ONNX Runtime on ``count`` seeded inputs plus the real ``samples``.

    A float64 copy of the model measures float32's own rounding noise on the same inputs, the yardstick
    of the default rule; a model that cannot run in float64 falls back to the fixed rule. A model with
    several outputs gets one report per output (:class:`OutputsParity`), in the ONNX model's output
    order (the order the model returns them: export checks that they are the same).
    """
    import onnxruntime as ort
    import torch

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    onnx_names = [o.name for o in session.get_outputs()]

    def torch_fn(x: np.ndarray) -> list[np.ndarray]:
        with torch.no_grad():
            return [t.numpy() for t in flat_outputs(model(torch.from_numpy(x)))]

    def onnx_fn(x: np.ndarray) -> list[np.ndarray]:
        return session.run(None, {name: x})

    inputs = parity_inputs(shape, count, samples=samples)
    real = 0 if samples is None else len(samples)
    exact = float64_all_outputs(model, inputs) if tolerance is None else None
    if len(onnx_names) == 1:
        return compare(lambda x: torch_fn(x)[0], lambda x: onnx_fn(x)[0], inputs, tolerance, real_samples=real,
                       exact=None if exact is None else [e[0] for e in exact], noise_factor=noise_factor)
    return compare_outputs(torch_fn, onnx_fn, inputs, onnx_names, tolerance, real_samples=real, exact=exact,
                           noise_factor=noise_factor)


def flat_outputs(out: Any) -> list[Any]:
    """A model's output as a list of tensors: the tensor itself, a tuple's/list's items, a dict's values
    (in the order the exporters flatten them)."""
    if isinstance(out, dict):
        return list(out.values())
    if isinstance(out, (tuple, list)):
        return list(out)
    return [out]


def _output_names(out: Any, output_name: str, input_name: str) -> list[str]:
    """The ONNX output names for a model's output: ``output_name`` for one tensor, the keys of a dict,
    else ``output_name``, ``output_name_1``, ...; anything else is one line."""
    import torch

    what = type(out).__name__
    if isinstance(out, torch.Tensor):
        return [output_name]
    if isinstance(out, dict):
        names = [str(k) for k in out]
        if not all(isinstance(k, str) and k for k in out) or input_name in names:
            raise EdgekitError(f"model output is a dict with keys {list(out)}; ONNX output names must be non-empty "
                               f"strings other than the input's name {input_name!r}")
    elif isinstance(out, (tuple, list)):
        names = [output_name] + [f"{output_name}_{i}" for i in range(1, len(out))]
    else:
        raise EdgekitError(f"model output is a {what}; edgekit exports a tensor, or a tuple, list or dict of tensors")
    values = flat_outputs(out)
    if not values:
        raise EdgekitError(f"model output is an empty {what}; there is nothing to export")
    for name, value in zip(names, values):
        if not isinstance(value, torch.Tensor):
            raise EdgekitError(f"model output {name!r} is a {type(value).__name__}; edgekit exports a tensor, or a "
                               "tuple, list or dict of tensors (not nested)")
    return names


def _manifest_outputs(out: Any, names: list[str]) -> list[dict[str, Any]]:
    """The manifest's ``outputs``: name, shape and dtype of each, in the ONNX model's order."""
    import torch

    if isinstance(out, torch.Tensor):
        return [{"name": names[0], "shape": list(out.shape), "dtype": "float32"}]  # as edgekit has always written it
    return [{"name": name, "shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch.")}
            for name, t in zip(names, flat_outputs(out))]


def float64_outputs(model: Any, inputs: Sequence[np.ndarray]) -> list[np.ndarray] | None:
    """A float64 copy of a single-output ``model``'s outputs on ``inputs``, or None when the model does
    not run in float64 (see :func:`float64_all_outputs`, which this reads the first output of)."""
    exact = float64_all_outputs(model, inputs)
    return None if exact is None else [e[0] for e in exact]


def float64_all_outputs(model: Any, inputs: Sequence[np.ndarray]) -> list[list[np.ndarray]] | None:
    """A float64 copy of ``model``'s outputs on ``inputs`` (per input, one array per output), or None
    when the model does not run in float64.

    A model that casts to float32 inside would give a reference as noisy as the float32 run, so the
    output dtype is checked. The copy sees the inputs in the same order as the float32 run will, so
    a stateful model (a call counter) stays in step with it.
    """
    import torch

    try:
        exact = copy_model(model).double()
        with torch.no_grad():
            outputs = [flat_outputs(exact(torch.from_numpy(x.astype(np.float64)))) for x in inputs]
    except Exception:  # any failure means: no float64 yardstick, use the fixed rule
        return None
    if not all(isinstance(t, torch.Tensor) and t.dtype == torch.float64 for out in outputs for t in out):
        return None
    return [[t.numpy() for t in out] for out in outputs]


def _run_exporter(model, example, path, opset, input_name, output_names, dynamic_batch, exporter, program) -> str:
    order = ["dynamo"] if program is not None or exporter == "dynamo" else (
        ["torchscript"] if exporter == "torchscript" else ["torchscript", "dynamo"]
    )
    errors = []
    for name in order:
        try:
            _export_with(name, model, example, path, opset, input_name, output_names, dynamic_batch, program)
            return name
        except Exception as exc:  # try the next exporter, report all if none works
            errors.append(f"{name}: {type(exc).__name__}: {first_line(exc)}")
    raise EdgekitError("ONNX export failed (" + "; ".join(errors) + ")")


def _export_with(name, model, example, path, opset, input_name, output_names, dynamic_batch, program) -> None:
    import torch

    quiet = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(quiet):
        warnings.simplefilter("ignore")
        if name == "torchscript":
            torch.onnx.export(
                model, (example,), str(path), dynamo=False, opset_version=opset, do_constant_folding=True,
                input_names=[input_name], output_names=list(output_names),
                dynamic_axes={name: {0: "batch"} for name in [input_name, *output_names]} if dynamic_batch else None,
            )
        else:
            target = program if program is not None else model
            dynamic_shapes = ({"x": {0: torch.export.Dim("batch")}},) if dynamic_batch and program is None else None
            onnx_program = torch.onnx.export(
                target, (example,), dynamo=True, opset_version=max(opset, 18), input_names=[input_name],
                output_names=list(output_names), dynamic_shapes=dynamic_shapes, optimize=True, verbose=False,
            )
            onnx_program.save(str(path))


def _check_and_infer(tmp: Path, output: Path, output_names: Sequence[str]) -> None:
    import onnx

    model = onnx.load(str(tmp))
    written = [o.name for o in model.graph.output]
    if written != list(output_names):  # e.g. the same tensor returned twice, which an exporter writes once
        raise EdgekitError(f"{output}: the exported graph's outputs are {written}, the model returns "
                           f"{list(output_names)}; return each output tensor once")
    try:
        onnx.checker.check_model(model)
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception as exc:
        raise EdgekitError(f"{output}: exported graph fails onnx.checker ({first_line(exc)})") from exc
    onnx.save(inferred, str(tmp))


def _as_tensor(example_input: Any) -> Any:
    import torch

    if isinstance(example_input, torch.Tensor):
        return example_input.detach().float()
    if isinstance(example_input, np.ndarray):
        return torch.from_numpy(example_input.astype(np.float32))
    if isinstance(example_input, (tuple, list)) and all(isinstance(d, int) for d in example_input):
        return torch.randn(*example_input)
    raise EdgekitError(f"example input must be a tensor, an array or a shape, not {type(example_input).__name__}")
