"""4-D tensors whose layout onnx2tf cannot tell from their shape, named when a translation went wrong.

onnx2tf carries 4-D tensors channels-last and decides op by op whether a tensor it receives is laid out
so yet by comparing its shape with the ONNX one. Where the channels, the height and the width are equal,
the shapes match either way and it guesses. PVT-v2-B0 and EfficientViT-B0 (MIT) at 128 px (their first
stage: 32 channels at 32x32) converted without an error to FP32 TFLites at cosine -0.04 and 0.92 to their
ONNX models; at 224 px (56x56 maps) both translated right (PVT-v2-B0 full-integer; EfficientViT-B0 then
needs --float-fallback for its attention's DIV). So a refused translation names such tensors and an input
size at which the model has none."""
from __future__ import annotations

from pathlib import Path

SIZE_STEP = 32  # the suggested sizes: multiples of the usual total stride
MAX_STEPS = 8


def square_cubes(model_path: str | Path) -> list[tuple[str, list[int]]]:
    """(name, shape) of every 4-D tensor with as many channels as rows and columns (more than one)."""
    return _square_cubes(_shapes_4d(model_path)[1])


def size_without_them(model_path: str | Path) -> int | None:
    """The nearest input size (square, a multiple of 32) at which no square map has as many channels as
    rows, scaling each map with the input; None for an input that is not a square image."""
    return _size_without(*_shapes_4d(model_path))


def hint(model_path: str | Path) -> str:
    """What to say after a refused translation: the ambiguous tensors and a size without them, or ""."""
    input_dims, shapes = _shapes_4d(model_path)  # one shape inference for both
    found = _square_cubes(shapes)
    if not found:
        return ""
    name, shape = found[0]
    size = _size_without(input_dims, shapes)
    where = f"; exported at {size}x{size} it has none" if size else ""
    return (f"; {len(found)} of its tensors have as many channels as rows and columns (first: {name}, "
            f"{'x'.join(map(str, shape))}), whose layout onnx2tf cannot tell from the shape, the likely cause"
            f"{where}")


def _square_cubes(shapes: list[tuple[str, list[int]]]) -> list[tuple[str, list[int]]]:
    return [(name, shape) for name, shape in shapes if shape[1] == shape[2] == shape[3] > 1]


def _size_without(input_dims: list[int], shapes: list[tuple[str, list[int]]]) -> int | None:
    if len(input_dims) != 4 or not input_dims[2] or input_dims[2] != input_dims[3]:
        return None
    size = input_dims[2]
    maps = [(shape[1], size / shape[2]) for _, shape in shapes if shape[2] == shape[3] > 0]
    base = size - size % SIZE_STEP
    for step in range(1, MAX_STEPS + 1):
        for candidate in (base + step * SIZE_STEP, base - step * SIZE_STEP):
            if candidate > 0 and not any(channels == candidate / stride for channels, stride in maps):
                return candidate
    return None


def _shapes_4d(model_path: str | Path) -> tuple[list[int], list[tuple[str, list[int]]]]:
    """The image input's dims and (name, shape) of every static 4-D tensor; nothing where the model's
    shapes cannot be inferred (a hint only)."""
    import onnx

    try:
        model = onnx.shape_inference.infer_shapes(onnx.load(str(model_path), load_external_data=False))
    except Exception:  # noqa: BLE001 - a hint only: no shapes, no hint
        return [], []
    values = list(model.graph.input) + list(model.graph.value_info) + list(model.graph.output)
    shapes = [(v.name, [d.dim_value for d in v.type.tensor_type.shape.dim]) for v in values]
    return shapes[0][1] if shapes else [], [(name, shape) for name, shape in shapes if len(shape) == 4 and all(shape)]
