"""Unstructured (weight) magnitude pruning, reported honestly.

Zeroing individual weights keeps every tensor's shape, so dense CPU runtimes (ONNX Runtime,
TFLite/XNNPACK) run exactly as many multiply-adds as before: **no speed-up**. What it buys is
compressibility: a zipped or gzipped model shrinks with sparsity, which matters for download size
and over-the-air updates. For speed, prune structurally (``edgekit prune``).
"""
from __future__ import annotations

import gzip
import io
from typing import Any

from edgekit.errors import EdgekitError


def _prunable(model: Any) -> list[tuple[str, Any]]:
    import torch

    return [(name, m) for name, m in model.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]


def compressed_size(model: Any) -> tuple[int, int]:
    """(raw, gzip) bytes of the model's state dict as torch.save writes it."""
    import torch

    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    raw = buffer.getvalue()
    return len(raw), len(gzip.compress(raw, compresslevel=6))


def sparsify(model: Any, sparsity: float, scope: str = "global") -> dict[str, Any]:
    """Zero the smallest-magnitude weights of every conv/linear layer, permanently (in place)."""
    import torch.nn.utils.prune as torch_prune

    if not 0.0 < sparsity < 1.0:
        raise EdgekitError(f"--sparsity: must be between 0 and 1 (exclusive), got {sparsity}")
    if scope not in ("global", "layer"):
        raise EdgekitError(f"--scope: {scope!r} is not global or layer")
    layers = _prunable(model)
    if not layers:
        raise EdgekitError("the model has no convolution or linear layers to sparsify")
    size_before = compressed_size(model)
    if scope == "global":
        torch_prune.global_unstructured([(m, "weight") for _, m in layers], pruning_method=torch_prune.L1Unstructured,
                                        amount=sparsity)
    else:
        for _, module in layers:
            torch_prune.l1_unstructured(module, "weight", amount=sparsity)
    for _, module in layers:
        torch_prune.remove(module, "weight")  # make it permanent: a plain tensor with zeros
    per_layer = {name: round(float((m.weight == 0).float().mean()), 4) for name, m in layers}
    total = sum(m.weight.numel() for _, m in layers)
    zeros = sum(int((m.weight == 0).sum()) for _, m in layers)
    size_after = compressed_size(model)
    return {
        "stage": "sparsify", "sparsity_target": sparsity, "scope": scope, "sparsity": zeros / total,
        "per_layer": per_layer, "size_bytes": size_after[0], "gzip_bytes_before": size_before[1],
        "gzip_bytes_after": size_after[1],
        "note": "dense CPU runtimes gain no speed from weight sparsity; it only makes the file compress better",
    }
