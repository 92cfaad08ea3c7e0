"""Each Keras layer computed once per sample while onnx2tf builds the model.

onnx2tf's strict mode checks what it translates (Mul, Add, MatMul, ... where a broadcast or a layout
could be read two ways) by running the Keras model built so far on one sample and comparing with
ONNX Runtime. Every check builds a new Keras model up to that op and runs it from the input, so a
network of n such ops costs about n²/2 layer calls: 42% of ConvNeXt-Tiny's TFLite stage at 128 px
(py-spy), and more the deeper the net. Within one conversion the sample is fixed and a layer, once
built, computes the same function, so its output is computed once and reused by every later check.
The cache lives for one conversion only; its effect is only speed (the converted model is the same,
byte for byte: tests/test_tflite_layer_memo.py).
"""
from __future__ import annotations

import contextlib
import hashlib
from typing import Any, Iterator

import numpy as np


@contextlib.contextmanager
def layer_outputs_reused() -> Iterator[dict[str, int]]:
    """Within the block, a Keras functional model run eagerly takes each layer's output on the same
    inputs from a cache keyed by the inputs' bytes and the layer's call site (its graph node).
    Yields the counts of layer calls computed and reused, so a test can see the cache work."""
    from tf_keras.src.engine import functional

    original = functional.Functional._run_internal_graph
    cache: dict[tuple[bytes, int], tuple[Any, Any]] = {}  # the node is kept so its id stays unique
    counts = {"computed": 0, "reused": 0}

    def run_internal_graph(self: Any, inputs: Any, training: Any = None, mask: Any = None) -> Any:
        outputs = _run_with_cache(self, inputs, cache, counts) if mask is None else None
        return original(self, inputs, training=training, mask=mask) if outputs is None else outputs

    functional.Functional._run_internal_graph = run_internal_graph
    try:
        yield counts
    finally:
        functional.Functional._run_internal_graph = original
        cache.clear()


def _run_with_cache(model: Any, inputs: Any, cache: dict[tuple[bytes, int], tuple[Any, Any]],
                    counts: dict[str, int]) -> Any:
    """tf_keras's ``Functional._run_internal_graph`` with each layer call looked up first; None where
    the inputs are not concrete values (a traced call), which the original then runs."""
    import tensorflow as tf

    flat = model._flatten_to_reference_inputs(inputs)
    if not tf.executing_eagerly() or not all(isinstance(y, np.ndarray) or hasattr(y, "numpy") for y in flat):
        return None
    tensors: dict[str, _Reusable] = {}
    digest = hashlib.sha1()
    for reference, value in zip(model.inputs, flat):
        value = model._conform_to_reference_input(value, ref_input=reference)
        array = np.ascontiguousarray(value)
        digest.update(f"{id(reference)}:{array.dtype}:{array.shape}".encode())
        digest.update(array.tobytes())
        tensors[str(id(reference))] = _Reusable(value)
    key = digest.digest()
    for depth in sorted(model._nodes_by_depth, reverse=True):
        for node in model._nodes_by_depth[depth]:
            if node.is_input or any(t not in tensors for t in node.flat_input_ids):
                continue
            entry = cache.get((key, id(node)))
            if entry is None or entry[0] is not node:
                args, kwargs = node.map_arguments(tensors)
                entry = cache[(key, id(node))] = (node, node.layer(*args, **kwargs))
                counts["computed"] += 1
            else:
                counts["reused"] += 1
            tensors.update((t, _Reusable(y)) for t, y in zip(node.flat_output_ids, tf.nest.flatten(entry[1])))
    return tf.nest.pack_sequence_as(model._nested_outputs, [tensors[str(id(x))].value for x in model.outputs])


class _Reusable(list):
    """What ``Node.map_arguments`` expects for each tensor: a list it pops one use from (Keras counts
    the uses per model); this one never runs out, as a cached output serves any number of uses."""

    def __init__(self, value: Any) -> None:
        super().__init__([value])
        self.value = value

    def pop(self, *_: Any) -> Any:  # type: ignore[override]
        return self.value
