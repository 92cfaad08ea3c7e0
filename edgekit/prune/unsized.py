"""Torch-Pruning 1.6's index mappings, for a concatenation or a reshape whose widths it cannot size.

Building the dependency graph, Torch-Pruning sizes every input of a concatenation to map channel
indices across it. Where an input's width cannot be inferred (slices: Swin's patch merging,
``x[..., 0::2, 0::2, :]``; a ``chunk`` of the channels concatenated back) but the output's can, it
adds ``None`` to an int and the whole graph fails (``TypeError`` in ``update_concat_index_mapping``;
measured: torchvision's swin_t at 128x128 px). Its own code leaves such a concat unmapped a line
later; within this block it does so before the sum.

A reshape (flatten/view) is mapped by the ratio of its output and input widths, and a width inferred
as 0 (Torch-Pruning's answer where a path reaches the model input through a residual connection, or
through a ``split`` it cannot size) divided by zero: timm's SHViT-S1, whose single-head attention
splits its channels and flattens them, failed to build its graph at all ("ZeroDivisionError in
update_reshape_index_mapping"). Such a reshape is left unmapped too, as Torch-Pruning leaves one whose
width is unknown.

A group that crosses an unmapped concat or reshape is then found by the probe (``probe.py``) if
pruning it goes wrong, and protected.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator


@contextlib.contextmanager
def unsized_mappings_left_unmapped() -> Iterator[None]:
    from torch_pruning import ops
    from torch_pruning.dependency import index_mapping, shape_infer

    original_concat = index_mapping.update_concat_index_mapping
    original_reshape = index_mapping.update_reshape_index_mapping

    def update_concat(graph: Any, node: Any) -> None:
        if node.type == ops.OPTYPE.CONCAT and node.module.concat_sizes is None:
            sizes = [shape_infer.infer_channels_between(graph, n, node) for n in node.inputs]
            if any(size is None for size in sizes):
                return
        original_concat(graph, node)

    def update_reshape(graph: Any, node: Any) -> None:
        try:
            original_reshape(graph, node)
        except ZeroDivisionError:  # a width inferred as 0: left unmapped (it raised before mapping anything)
            return

    index_mapping.update_concat_index_mapping = update_concat
    index_mapping.update_reshape_index_mapping = update_reshape
    try:
        yield
    finally:
        index_mapping.update_concat_index_mapping = original_concat
        index_mapping.update_reshape_index_mapping = original_reshape
