"""Layers whose Torch-Pruning dependency search never ends, found with a bound and protected.

Torch-Pruning builds a layer's pruning group by following the dependency graph and mapping the
channel indices through every reshape, permute and concatenation on the way; a dependency already
in the group is skipped only when it comes back with the *same* indices. Through MaxViT's window
and grid partitions (a channel axis moved by view/permute pairs) the indices come back shifted each
time round, so the group grows without end: measured here, a two-block MaxViT at 64x64 (0.1 M
parameters) was still inside ``get_pruning_group`` after 15 minutes, and an attention hybrid of
3.6 M parameters grew to 14-19 GB before the kernel killed it (issue 12).

A real group holds each dependency of the graph at most a few times (once per distinct slice of
its channels), so a group larger than a few times the graph's edge count has diverged. Before the
pruner is built, every root it would visit is probed in the same order with that bound (each probe
costs at most the bound); the roots that diverge are protected, which is what ``--protect`` would
do by hand, and the pruning report names them and counts them out of the prunable MACs.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator, Sequence

EDGE_FACTOR = 4   # a group of more than 4x the graph's dependencies (plus SLACK) has diverged
SLACK = 64


class _Diverged(Exception):
    """A pruning group outgrew the bound."""


@contextlib.contextmanager
def _bounded_groups(limit: int) -> Iterator[None]:
    """Within the block, a Torch-Pruning group raises ``_Diverged`` past ``limit`` dependencies."""
    from torch_pruning.dependency.group import Group

    original = Group.add_dep

    def add_dep(self: Any, dep: Any, idxs: Any) -> None:
        original(self, dep, idxs)
        if len(self._group) > limit:
            raise _Diverged()

    Group.add_dep = add_dep
    try:
        yield
    finally:
        Group.add_dep = original


def diverging_roots(model: Any, example_input: Any, ignored: Sequence[Any], root_types: Sequence[type]) -> list[Any]:
    """The layers (modules) whose pruning group diverges, probed the way ``get_all_groups`` visits
    roots: in graph order, skipping ``ignored`` and every layer an earlier finite group already holds."""
    import torch_pruning as tp

    graph = tp.DependencyGraph().build_dependency(model, example_inputs=example_input)
    edges = sum(len(node.dependencies) for node in graph.module2node.values())
    skipped = set(map(id, ignored)) | set(map(id, graph.IGNORED_LAYERS_IN_TRACING))
    visited: set[int] = set()
    diverged: list[Any] = []
    with _bounded_groups(EDGE_FACTOR * edges + SLACK):
        for module in list(graph.module2node):
            if id(module) in skipped or id(module) in visited or not isinstance(module, tuple(root_types)):
                continue
            pruner = graph.get_pruner_of_module(module)
            if pruner is None or pruner.get_out_channels(module) is None:
                continue
            try:
                group = graph.get_pruning_group(module, pruner.prune_out_channels,
                                                list(range(pruner.get_out_channels(module))))
            except _Diverged:
                diverged.append(module)
                continue
            visited.update(id(dep.target.module) for dep, _ in group if graph.is_out_channel_pruning_fn(dep.handler))
    return diverged
