"""Pruning: structured (channels, via torch-pruning) and unstructured (weights, ``sparsify``)."""
from edgekit.prune.report import PruneReport, PruneSettings
from edgekit.prune.structured import IMPORTANCES, count_macs_params, layer_widths, prune, prune_model

__all__ = ["IMPORTANCES", "PruneReport", "PruneSettings", "count_macs_params", "layer_widths", "prune", "prune_model"]
