"""Structured pruning on torch-pruning's dependency graph: whole channels go, tensors really shrink.

The dependency graph keeps residual additions, depthwise/grouped convolutions, concatenations,
squeeze-excitation blocks and batch norms consistent, so the pruned model is an ordinary, smaller
dense model: its ONNX and TFLite exports have fewer channels and run faster on any runtime.
The classifier's output width never changes; channel counts are rounded to a multiple (8 by
default, the target profile's ``pruning.channel_multiple``) because NEON/AVX2 kernels like it.
"""
from __future__ import annotations

import contextlib
import logging
from typing import Any, Callable, Iterable, Iterator, Sequence

from edgekit.errors import EdgekitError, first_line
from edgekit.modelcopy import copy_model, forget_forward_caches
from edgekit.prune import attention
from edgekit.prune.divergence import diverging_roots
from edgekit.prune.probe import MAPPING_FAILURES, PRUNING_FAILURES, unprunable_roots
from edgekit.prune.report import PruneReport, PruneSettings, first_names
from edgekit.prune.shuffle import boundary_layers, is_shufflenet, opaque_shuffle
from edgekit.prune.unsized import unsized_mappings_left_unmapped

_log = logging.getLogger(__name__)

IMPORTANCES = ("l1", "l2", "bn", "taylor")


def _root_types() -> tuple[type, ...]:
    """The layers Torch-Pruning's groups start from (MetaPruner's default), for the divergence probe too."""
    import torch_pruning as tp

    return (tp.ops.TORCH_CONV, tp.ops.TORCH_LINEAR, tp.ops.TORCH_LSTM)


def _importance(name: str) -> Any:
    import torch_pruning as tp

    if name == "l1":
        return tp.importance.GroupMagnitudeImportance(p=1)
    if name == "l2":
        return tp.importance.GroupMagnitudeImportance(p=2)
    if name == "bn":
        return tp.importance.BNScaleImportance()
    if name == "taylor":
        return tp.importance.GroupTaylorImportance()
    raise EdgekitError(f"--importance: {name!r} is not one of {', '.join(IMPORTANCES)}")


def count_macs_params(model: Any, example_input: Any) -> tuple[int, int]:
    import torch
    import torch_pruning as tp

    forget_forward_caches(model)  # Torch-Pruning counts on a deep copy
    with torch.no_grad():
        macs, params = tp.utils.count_ops_and_params(model, example_input)
    return int(macs), int(params)


def layer_widths(model: Any) -> dict[str, list[int]]:
    """Output (and input) width of every convolution and linear layer, by module name."""
    import torch

    widths = {}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Conv2d):
            widths[name] = [module.out_channels, module.in_channels]
        elif isinstance(module, torch.nn.Linear):
            widths[name] = [module.out_features, module.in_features]
    return widths


def _output_layers(model: Any, example_input: Any, protect: Sequence[str]) -> list[Any]:
    """Layers whose width is the model's output width (the classifier), the head layers (below)
    and the protected ones."""
    import torch

    with torch.no_grad():
        width = model(example_input).shape[1]
    names = dict(model.named_modules())
    missing = [p for p in protect if p not in names]
    if missing:
        raise EdgekitError(f"--protect: no layer named {missing[0]!r} in the model")
    ignored = [m for m in model.modules()
               if (isinstance(m, torch.nn.Linear) and m.out_features == width)
               or (isinstance(m, torch.nn.Conv2d) and m.out_channels == width and m.groups == 1)]
    ignored += [m for m in head_layers(model, example_input) if all(m is not i for i in ignored)]
    return ignored + [names[p] for p in protect]


def head_layers(model: Any, example_input: Any) -> list[Any]:
    """Convolutions and linear layers whose channels reach an output with no other such layer in
    between: a detector's box and class convolutions before an in-graph decode and concat, a
    segmenter's classifier. Their widths are the output's meaning (4 box values, one score per
    class), so pruning them would change what the model says, not how big it is. Found by walking
    the autograd graph back from every output, stopping at the first layer on each path. A layer
    with frozen weights (YOLOv8's DFL: a fixed projection of box-distance bins) is arithmetic, not
    a learned layer: it is protected and the walk goes on past it to the layer whose channel
    groups it reads."""
    import torch

    produced: dict[Any, Any] = {}

    def remember(module: Any, _inputs: Any, output: Any) -> None:
        if isinstance(output, torch.Tensor) and output.grad_fn is not None:
            produced.setdefault(output.grad_fn, module)

    kinds = (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.Linear, torch.nn.ConvTranspose2d)
    handles = [m.register_forward_hook(remember) for m in model.modules() if isinstance(m, kinds)]
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            outputs = model(example_input)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
        forget_forward_caches(model)  # a forward with gradients on left tensors that cannot be deep-copied
    tensors = [outputs] if isinstance(outputs, torch.Tensor) else [
        t for t in (outputs.values() if isinstance(outputs, dict) else outputs) if isinstance(t, torch.Tensor)]
    found: list[Any] = []
    seen: set[int] = set()
    stack = [t.grad_fn for t in tensors if t.grad_fn is not None]
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        if node in produced:
            layer = produced[node]
            if all(layer is not f for f in found):
                found.append(layer)
            if any(p.requires_grad for p in layer.parameters()):
                continue
        stack.extend(next_node for next_node, _ in node.next_functions)
    return found


def prune(
    model: Any,
    example_input: Any,
    *,
    ratio: float | None = None,
    target_macs: float | None = None,
    importance: str = "l1",
    global_pruning: bool = False,
    round_to: int | None = 8,
    protect: Sequence[str] = (),
    steps: int = 1,
    batches: Callable[[], Iterable[tuple[Any, Any]]] | None = None,
    between_steps: Callable[[Any, int], None] | None = None,
    progress: Callable[[str], None] | None = _log.info,
) -> dict[str, Any]:
    """Prune ``model`` in place to ``ratio`` of its channels or to ``target_macs`` of its MACs; the
    manifest stage as a dict (:func:`prune_model` returns the typed report)."""
    settings = PruneSettings(ratio=ratio, target_macs=target_macs, importance=importance, global_pruning=global_pruning,
                             round_to=round_to, protect=tuple(protect), steps=steps)
    return prune_model(model, example_input, settings, batches=batches, between_steps=between_steps,
                       progress=progress).manifest_stage()


def prune_model(
    model: Any,
    example_input: Any,
    settings: PruneSettings,
    *,
    batches: Callable[[], Iterable[tuple[Any, Any]]] | None = None,
    between_steps: Callable[[Any, int], None] | None = None,
    progress: Callable[[str], None] | None = _log.info,
) -> PruneReport:
    """Prune ``model`` in place as ``settings`` say. ``batches`` gives Taylor importance real
    ``(x, y)`` batches (label -1: the model's own prediction); without it, seeded random inputs."""
    import torch_pruning as tp

    s = settings
    if (s.ratio is None) == (s.target_macs is None):
        raise EdgekitError("give exactly one of --ratio and --target-macs")
    if s.ratio is not None and not 0.0 < s.ratio < 1.0:
        raise EdgekitError(f"--ratio: must be between 0 and 1 (exclusive), got {s.ratio}")
    if s.target_macs is not None and not 0.0 < s.target_macs < 1.0:
        raise EdgekitError(f"--target-macs: must be a fraction between 0 and 1, got {s.target_macs}")
    if s.steps < 1:
        raise EdgekitError(f"--steps: must be at least 1, got {s.steps}")
    crit = _importance(s.importance)
    model.eval()
    macs_before, params_before = count_macs_params(model, example_input)
    widths_before = layer_widths(model)
    # a MACs target is approached in small steps and stops as soon as it is reached
    step_count = s.steps if s.target_macs is None else max(s.steps, 20)
    plan = attention.plan_for(model)
    ignored = _output_layers(model, example_input, s.protect) + plan.protected
    round_to = attention.combined_round_to(s.round_to, plan)

    def build(target: Any, layers: list[Any]) -> Any:
        return tp.pruner.MetaPruner(
            target, example_input, importance=crit, global_pruning=s.global_pruning,
            pruning_ratio=s.ratio if s.ratio is not None else 0.95, iterative_steps=step_count,
            ignored_layers=layers, round_to=round_to, root_module_types=list(_root_types()),
        )

    def run(pruner: Any) -> list:
        return _run_steps(model, example_input, pruner, s.importance, step_count, s.target_macs, macs_before,
                          params_before, batches, between_steps, progress)

    shuffle = is_shufflenet(model)
    guard = opaque_shuffle() if shuffle else contextlib.nullcontext()
    unmapped: list[Any] = []
    with guard, unsized_mappings_left_unmapped(), _recovery_failures_as_raised():
        if shuffle:
            ignored += boundary_layers(model)
        try:
            diverged = diverging_roots(model, example_input, ignored, _root_types())
            ignored += diverged
            pruner = build(model, ignored)
        except MAPPING_FAILURES as exc:
            raise EdgekitError(_unmapped_graph(exc)) from exc
        snapshot = _snapshot(model)
        share = _prunable_share(model, example_input, ignored)
        try:
            history = run(pruner)
        except PRUNING_FAILURES as exc:  # an operation Torch-Pruning maps wrongly: protect its layers, once
            broken = _broken_forward(model, example_input, exc)  # located now, in the pruned model
            if snapshot is None:
                raise EdgekitError(broken) from exc
            ignored, diverged = _restore(model, snapshot, ignored, diverged)
            if progress:
                progress(f"pruning failed ({first_line(exc, 100)}): finding the layers Torch-Pruning cannot prune, "
                         "one group at a time on a copy")
            try:
                unmapped = unprunable_roots(model, example_input, ignored, build, round_to or 1, attention.after_pruning)
            except MAPPING_FAILURES:  # Torch-Pruning cannot even rebuild its graph with a layer protected
                unmapped = []
            if not unmapped:
                raise EdgekitError(broken) from exc
            if progress:
                progress(f"Torch-Pruning cannot prune the channels of {len(unmapped)} layer(s) "
                         f"({first_names(_names(model, unmapped))}): "
                         "they keep their widths; pruning again")
            ignored += unmapped
            share = _prunable_share(model, example_input, ignored)
            try:
                history = run(build(model, ignored))
            except PRUNING_FAILURES as again:
                raise EdgekitError(_broken_forward(model, example_input, again)) from again
    model.eval()
    macs_after, params_after = count_macs_params(model, example_input)
    after = layer_widths(model)
    return PruneReport(settings, history, macs_before, macs_after, params_before, params_after,
                       {name: {"before": widths_before[name], "after": after.get(name)} for name in widths_before},
                       prunable_share=share, attention=plan.kind, auto_protected=_names(model, diverged),
                       unmapped_protected=_names(model, unmapped))


class _RecoveryFailed(Exception):
    """The ``between_steps`` callback failed: its exception (``__cause__``) passes the probe untouched."""


def _unmapped_graph(exc: BaseException) -> str:
    """One line for a Torch-Pruning failure while building the dependency graph (swin_t at 128x128 px
    was one, before concat.py): no group exists yet for the probe to protect."""
    import traceback

    frames = traceback.extract_tb(exc.__traceback__)
    where = f" in {frames[-1].name}" if frames else ""
    return (f"Torch-Pruning could not map this model's channels ({type(exc).__name__}{where}: {first_line(exc, 120)}); "
            "prune it at another input size, --protect the blocks around that operation, or skip pruning")


@contextlib.contextmanager
def _recovery_failures_as_raised() -> Iterator[None]:
    try:
        yield
    except _RecoveryFailed as failed:
        raise failed.__cause__ from None  # type: ignore[misc]


def _snapshot(model: Any) -> Any | None:
    """A copy of the unpruned model to start again from; None where the model cannot be copied."""
    try:
        return copy_model(model)
    except Exception:  # noqa: BLE001 - a model holding something uncopyable is pruned without a second try
        return None


def _restore(model: Any, snapshot: Any, *layer_lists: list[Any]) -> list[list[Any]]:
    """Put the unpruned layers back into the caller's ``model`` object (pruning works in place);
    returns each list of layers as the restored model's layers of the same names."""
    lists_by_name = [_names(model, layers) for layers in layer_lists]
    model.__dict__.update(snapshot.__dict__)
    modules = dict(model.named_modules())
    return [[modules[name] for name in names] for names in lists_by_name]


def _broken_forward(model: Any, example_input: Any, exc: BaseException) -> str:
    """One line: the innermost layer whose forward failed after pruning, and what to protect."""
    import torch

    entered: list[str] = []  # the modules whose forward has begun and not returned

    def enter(name: str) -> Callable[..., None]:
        return lambda *_: entered.append(name)

    def leave(*_: Any) -> None:  # returns None: a forward hook's return value would replace the output
        entered.pop()

    named = [(name, m) for name, m in model.named_modules() if name]
    hooks = [m.register_forward_pre_hook(enter(name)) for name, m in named]
    hooks += [m.register_forward_hook(leave) for _, m in named]
    try:
        with torch.no_grad():
            model(example_input)
        failing = None
    except Exception:  # noqa: BLE001 - the failure is what we are locating
        failing = entered[-1] if entered else None
    finally:
        for hook in hooks:
            hook.remove()
    where = f"in layer {failing} " if failing else ""
    return (f"pruning left the model unable to run {where}({first_line(exc, 160)}): its forward() keeps a width "
            "fixed (a reshape or view by a constant number of channels); --protect the layers that feed it, "
            "or prune less")


def _names(model: Any, modules: Sequence[Any]) -> list[str]:
    by_id = {id(m): name for name, m in model.named_modules()}
    return [by_id.get(id(m), type(m).__name__) for m in modules]


def _prunable_share(model: Any, example_input: Any, ignored: Sequence[Any]) -> float | None:
    """Of the MACs in Conv2d/Linear modules, the share in those whose output width may narrow (not
    protected: classifier, --protect, block boundaries, attention internals). Modules called
    functionally (a MultiheadAttention's projections) are not counted."""
    import torch

    frozen = set(map(id, ignored))
    macs: dict[int, int] = {}

    def count(module: Any, _inputs: Any, output: Any) -> None:
        macs[id(module)] = macs.get(id(module), 0) + output.numel() * module.weight[0].numel()

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    try:
        with torch.no_grad():
            model(example_input)
    finally:
        for hook in hooks:
            hook.remove()
    total = sum(macs.values())
    return round(sum(v for k, v in macs.items() if k not in frozen) / total, 4) if total else None


def _run_steps(model: Any, example_input: Any, pruner: Any, importance: str, step_count: int,
               target_macs: float | None, macs_before: int, params_before: int,
               batches: Callable[[], Iterable[tuple[Any, Any]]] | None,
               between_steps: Callable[[Any, int], None] | None, progress: Callable[[str], None] | None) -> list:
    history = []
    for step in range(step_count):
        if importance == "taylor":
            _accumulate_gradients(model, example_input, batches)
        pruner.step()
        attention.after_pruning(model)
        model.zero_grad(set_to_none=True)
        macs, params = count_macs_params(model, example_input)
        history.append({"step": step + 1, "macs": macs, "params": params})
        if progress:
            progress(f"prune step {step + 1}/{step_count}: MACs {macs / macs_before:.1%} of original, "
                     f"params {params / params_before:.1%}")
        if between_steps is not None and (target_macs is None or macs > target_macs * macs_before):
            try:
                between_steps(model, step + 1)
            except Exception as exc:  # recovery training's own failure (out of memory, bad data): not pruning's
                raise _RecoveryFailed() from exc
        if target_macs is not None and macs <= target_macs * macs_before:
            break
    return history


def _accumulate_gradients(model: Any, example_input: Any, batches: Callable[[], Iterable[tuple[Any, Any]]] | None) -> None:
    """First-order Taylor importance needs gradients: real batches when given, else seeded random
    inputs labelled by the model itself."""
    import torch
    import torch.nn.functional as F

    model.zero_grad(set_to_none=True)
    model.eval()
    if batches is None:
        generator = torch.Generator().manual_seed(0)
        x = torch.randn((8, *example_input.shape[1:]), generator=generator)
        with torch.no_grad():
            y = model(x).argmax(1)
        pairs: Iterable[tuple[Any, Any]] = [(x, y)]
    else:
        pairs = batches()
    for x, y in pairs:
        logits = model(x)
        if (y < 0).any():
            with torch.no_grad():
                y = torch.where(y < 0, logits.argmax(1), y)
        F.cross_entropy(logits, y).backward()
