"""Data: preprocessing recipes, data sources, sampling, and the calibration-tensor cache."""
from edgekit.data.annotated import AnnotatedDataset, Boxes, SegmentationFolder
from edgekit.data.cache import calibration_tensors, tensors_from_iterable
from edgekit.data.canvas import DigitsCanvas
from edgekit.data.datasets import (Dataset, annotated_task, iter_batches, load_all, natural_recipe, open_dataset,
                                   sample_indices)
from edgekit.data.fingerprint import fingerprint
from edgekit.data.recipes import Recipe, load_recipe
from edgekit.data.yolo_coco import CocoDataset, YoloDataset

__all__ = ["AnnotatedDataset", "Boxes", "CocoDataset", "Dataset", "DigitsCanvas", "Recipe", "SegmentationFolder",
           "YoloDataset", "annotated_task", "calibration_tensors", "fingerprint", "iter_batches", "load_all", "load_recipe",
           "natural_recipe", "open_dataset", "sample_indices", "tensors_from_iterable"]
