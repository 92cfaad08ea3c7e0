"""ONNX Runtime static INT8 quantization."""
from edgekit.quantize.ort.quantizer import check_calibration_shape, quantize_ort
from edgekit.quantize.ort.settings import OrtQuantSettings, resolve_settings

__all__ = ["OrtQuantSettings", "check_calibration_shape", "quantize_ort", "resolve_settings"]
