"""Data: preprocessing recipes, data sources, sampling, and the calibration-tensor cache."""
from edgekit.data.cache import calibration_tensors, tensors_from_iterable
from edgekit.data.datasets import Dataset, iter_batches, load_all, open_dataset, sample_indices
from edgekit.data.fingerprint import fingerprint
from edgekit.data.recipes import Recipe, load_recipe

__all__ = ["Dataset", "Recipe", "calibration_tensors", "fingerprint", "iter_batches", "load_all", "load_recipe", "open_dataset",
           "sample_indices", "tensors_from_iterable"]
