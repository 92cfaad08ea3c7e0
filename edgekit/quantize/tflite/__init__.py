"""TFLite: ONNX -> onnx2tf Keras graph -> full-integer INT8 ``.tflite`` (plus the FP32 reference)."""
from edgekit.quantize.tflite.quantizer import fp32_path_for, quantize_tflite

__all__ = ["fp32_path_for", "quantize_tflite"]
