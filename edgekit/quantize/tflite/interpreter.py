"""TensorFlow's TFLite interpreter with the builtin kernels only, for edgekit's own passes over a model."""
from __future__ import annotations

from typing import Any

from edgekit.quantize.tflite.keras_build import quiet_tensorflow


def builtin_interpreter(flatbuffer: bytes, **options: Any) -> Any:
    """TensorFlow's interpreter of ``flatbuffer`` without XNNPACK, which would fold the ops (and their
    intermediate tensors) into one DELEGATE node; ``options`` go to the interpreter."""
    with quiet_tensorflow():
        import tensorflow as tf

        return tf.lite.Interpreter(
            model_content=flatbuffer, **options,
            experimental_op_resolver_type=tf.lite.experimental.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
