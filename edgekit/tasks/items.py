"""Per-item outcomes in an eval document: one bit per evaluated image, in the data's order.

A difference of two accuracies is only as trustworthy as its interval, and the tight (paired)
interval needs to know *which* images each variant got right, not just how many. One bit per image
and outcome, packed and base64-encoded, keeps 50,000 images at about 8 kB per outcome. ``data_id``
says which images in which order (the data's content fingerprint plus the sample taken from it):
two documents with the same ``data_id`` and ``count`` can be compared image by image.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
from typing import Any

import numpy as np

ENCODING = "packbits-base64"  # numpy.packbits, most significant bit first, then standard base64


def encode_bits(bits: np.ndarray) -> str:
    return base64.b64encode(np.packbits(np.asarray(bits, dtype=bool)).tobytes()).decode("ascii")


def decode_bits(text: str, count: int) -> np.ndarray:
    """The ``count`` booleans of ``text``; ValueError when it is not base64 of exactly that many bits."""
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise ValueError("not base64") from exc
    if len(raw) != (count + 7) // 8:
        raise ValueError(f"{len(raw)} bytes, {count} items need {(count + 7) // 8}")
    bits = np.unpackbits(np.frombuffer(raw, dtype=np.uint8))
    if bits[count:].any():
        raise ValueError("bits set past the last item")
    return bits[:count].astype(bool)


def data_id(fingerprint: dict[str, Any], num_samples: int | None, seed: int, skipped: tuple[str, ...]) -> str:
    """Which images, in which order: the same for two evaluations exactly when they saw the same
    images in the same order (the preprocessing recipe is the variant's business, not the images')."""
    selection = {"data": fingerprint, "num_samples": num_samples, "seed": seed if num_samples else None,
                 "skipped": list(skipped)}
    return hashlib.sha256(json.dumps(selection, sort_keys=True).encode()).hexdigest()


def record(outcomes: dict[str, np.ndarray], identity: str) -> dict[str, Any] | None:
    """The ``per_item`` field of an eval document (None when the task records no outcomes)."""
    if not outcomes:
        return None
    count = len(next(iter(outcomes.values())))
    return {"encoding": ENCODING, "count": count, "data_id": identity,
            **{name: encode_bits(bits) for name, bits in outcomes.items()}}
