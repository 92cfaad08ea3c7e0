"""Post-training INT8 quantization: ONNX Runtime static (``quantize.ort``) and TFLite full-integer
(``quantize.tflite``), both calibrated on the same prepared tensors (``edgekit.data.cache``), both
returning a ``QuantizeResult``; ``quantize.registry`` names the backends."""
