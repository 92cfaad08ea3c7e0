"""ONNX Runtime static INT8 quantization."""
from edgekit.quantize.ort.settings import OrtQuantSettings, resolve_settings
from edgekit.quantize.ort.workflow import quantize_ort, quantize_ort_workflow

__all__ = ["OrtQuantSettings", "quantize_ort", "quantize_ort_workflow", "resolve_settings"]
