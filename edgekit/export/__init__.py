"""Export stage: PyTorch -> ONNX with a parity proof and a manifest."""
from edgekit.export.onnx_export import DEFAULT_OPSET, ExportResult, export_onnx, prove_parity
from edgekit.export.parity import ParityReport

__all__ = ["DEFAULT_OPSET", "ExportResult", "ParityReport", "export_onnx", "prove_parity"]
