"""Layers whose pruning Torch-Pruning cannot carry out, found by pruning each group once on a copy.

Torch-Pruning maps channel indices through every operation between coupled layers. Some it maps
wrongly or not at all: ``pixel_shuffle``/``pixel_unshuffle`` (a channel becomes a pixel), a
``chunk``/slice of the channels concatenated back (its concat mapping cannot size the slices),
reshapes by a constant channel count. Pruning then raises inside Torch-Pruning (``IndexError``)
or leaves a model whose forward fails. Measured on small models with each of those operations:
a traceback (pixel_shuffle) or a one-line refusal of the whole model (the others), where only the
layers around that one operation had to keep their widths.

When pruning fails, the model is restored and every group is pruned once on a copy, by as many
channels as pruning may take (the pruner's final ratio, in the channel multiple pruning uses), the
least important ones with the last among them: a ``narrow`` of the channels breaks only once the
width falls below what it reads, which removing one channel never shows, and a strided slice is
mapped right for a contiguous tail of channels but wrong for scattered ones. A group that raises or
breaks the forward is protected (its root layer goes to ``ignored_layers``, as ``--protect`` would
do by hand) and the copy is rebuilt. The probe runs only after a failure, so a model that prunes
today prunes exactly as before.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

from edgekit.modelcopy import copy_model

# what Torch-Pruning raises when it cannot map a model's channels (building its graph, or its index mapping)
MAPPING_FAILURES = (TypeError, ValueError, IndexError, KeyError, AttributeError, ZeroDivisionError)
# ... and what a forward raises after a wrong mapping (a shape mismatch), once pruning has begun
PRUNING_FAILURES = MAPPING_FAILURES + (RuntimeError,)


def unprunable_roots(model: Any, example_input: Any, ignored: Sequence[Any], build_pruner: Callable[[Any, list[Any]], Any],
                     channel_multiple: int, after_pruning: Callable[[Any], None]) -> list[Any]:
    """The layers of ``model`` (untouched) whose group cannot be pruned: ``build_pruner(copy, ignored)``
    gives a MetaPruner on a copy; each group in its order loses what pruning may take from it (see
    the module's docstring) and the copy must still run. At most one rebuild per layer found."""
    names = {id(m): name for name, m in model.named_modules()}
    protected_names = [names[id(m)] for m in ignored if id(m) in names]
    found: list[str] = []
    while True:
        trial = copy_model(model)
        modules = dict(trial.named_modules())
        pruner = build_pruner(trial, [modules[n] for n in protected_names + found])
        failed = _first_failing_root(trial, example_input, pruner, channel_multiple, after_pruning)
        if failed is None:
            original = dict(model.named_modules())
            return [original[n] for n in found]
        found.append({id(m): n for n, m in trial.named_modules()}[id(failed)])


def _first_failing_root(trial: Any, example_input: Any, pruner: Any, channel_multiple: int,
                        after_pruning: Callable[[Any], None]) -> Any | None:
    import torch

    graph = pruner.DG
    for group in graph.get_all_groups(ignored_layers=pruner.ignored_layers, root_module_types=pruner.root_module_types):
        if not pruner._check_pruning_ratio(group) or pruner._is_atten_group(group)[0]:
            continue  # too narrow to prune, or attention (MetaPruner's own head handling)
        root = group[0].dep.target.module
        width, channel_groups = graph.get_out_channels(root), pruner._get_channel_groups(group)
        idxs = _last_channels(width, channel_groups,
                              _final_amount(width, pruner.get_target_pruning_ratio(root, step=pruner.iterative_steps),
                                            channel_multiple))
        try:
            # its index mapping runs here first, for every group the pruner will score: also one too
            # finely grouped for the probe to prune (FastViT's depthwise convolution with a channel multiplier)
            importance = pruner.estimate_importance(group)
            if not idxs:
                continue
            group.prune(_as_pruning_picks(idxs, importance, width, channel_groups))
            after_pruning(trial)
            with torch.no_grad():
                trial(example_input)
        except PRUNING_FAILURES:
            return root
    return None


def _final_amount(width: int | None, ratio: float, multiple: int) -> int:
    """The channels pruning may take from a group of ``width`` at ``ratio``, in ``multiple``s (one at least)."""
    return max(multiple, int((width or 0) * ratio) // multiple * multiple)


def _as_pruning_picks(tail: list[int], importance: Any, width: int, channel_groups: int) -> list[int]:
    """As many channels as ``tail``, picked as pruning picks them (the least important) but with the
    last channel among them: a strided slice of the channels is mapped right for a contiguous tail
    and wrong for scattered channels, and the end of a range is where a wrong index mapping runs out
    of bounds. Grouped channels keep the tail (each group must lose as many)."""
    if channel_groups != 1 or importance is None or len(importance) != width or len(tail) < 2:
        return tail
    ranked = [int(i) for i in importance.argsort().tolist() if int(i) != width - 1]
    return sorted(ranked[: len(tail) - 1] + [width - 1])


def _last_channels(width: int | None, channel_groups: int, multiple: int) -> list[int]:
    """The highest channel indices of each channel group, ``multiple`` in all (at least one per
    group), or nothing where that would leave a group empty: the end of a range is where a wrong
    index mapping runs out of bounds."""
    if not width or width % channel_groups:
        return []
    size = width // channel_groups
    per_group = max(1, multiple // channel_groups)
    if per_group >= size:
        return []
    return [g * size + j for g in range(channel_groups) for j in range(size - per_group, size)]
