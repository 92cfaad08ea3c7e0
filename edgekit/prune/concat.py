"""Torch-Pruning 1.6's concat mapping, for a concatenation whose inputs it cannot size.

Building the dependency graph, Torch-Pruning sizes every input of a concatenation to map channel
indices across it. Where an input's width cannot be inferred (slices: Swin's patch merging,
``x[..., 0::2, 0::2, :]``; a ``chunk`` of the channels concatenated back) but the output's can, it
adds ``None`` to an int and the whole graph fails (``TypeError`` in ``update_concat_index_mapping``;
measured: torchvision's swin_t at 128x128 px). Its own code leaves such a concat unmapped a line
later; within this block it does so before the sum. A group that crosses the unmapped concat is
then found by the probe (``probe.py``) if pruning it goes wrong, and protected.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator


@contextlib.contextmanager
def unsized_concats_left_unmapped() -> Iterator[None]:
    from torch_pruning import ops
    from torch_pruning.dependency import index_mapping, shape_infer

    original = index_mapping.update_concat_index_mapping

    def update(graph: Any, node: Any) -> None:
        if node.type == ops.OPTYPE.CONCAT and node.module.concat_sizes is None:
            sizes = [shape_infer.infer_channels_between(graph, n, node) for n in node.inputs]
            if any(size is None for size in sizes):
                return
        original(graph, node)

    index_mapping.update_concat_index_mapping = update
    try:
        yield
    finally:
        index_mapping.update_concat_index_mapping = original
