"""Pruning: structured (channels, via torch-pruning) and unstructured (weights, ``sparsify``)."""
from edgekit.prune.structured import IMPORTANCES, count_macs_params, layer_widths, prune

__all__ = ["IMPORTANCES", "count_macs_params", "layer_widths", "prune"]
