"""Quantizer maths: property tests (hypothesis) for uniform and non-uniform quantizers."""
from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from edgekit.quantize import simulate

finite = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False, width=32)
tensors = arrays(np.float32, st.tuples(st.integers(1, 6), st.integers(1, 40)), elements=finite)


@settings(max_examples=60, deadline=None)
@given(tensors, st.integers(2, 8), st.booleans())
def test_uniform_error_is_at_most_half_a_step(x: np.ndarray, bits: int, symmetric: bool) -> None:
    q = simulate.uniform(x, bits, symmetric=symmetric)
    step = float(q.scale.ravel()[0])
    assert np.max(np.abs(q.dequantized - x)) <= step / 2 + 1e-6 * max(1.0, float(np.max(np.abs(x))))


@settings(max_examples=60, deadline=None)
@given(tensors, st.integers(2, 8), st.booleans())
def test_codes_stay_in_the_integer_range(x: np.ndarray, bits: int, symmetric: bool) -> None:
    q = simulate.uniform(x, bits, symmetric=symmetric, axis=0)
    if symmetric:
        limit = 2 ** (bits - 1) - 1
        assert q.codes.min() >= -limit and q.codes.max() <= limit
    else:
        assert q.codes.min() >= 0 and q.codes.max() <= 2 ** bits - 1
    assert q.scale.shape == (x.shape[0], 1)  # one scale per channel


@settings(max_examples=40, deadline=None)
@given(tensors, st.integers(2, 5))
def test_kmeans_codebook_never_worse_than_uniform(x: np.ndarray, bits: int) -> None:
    uniform_mse = simulate.uniform(x, bits).mse(x)
    kmeans = simulate.kmeans(x, bits)
    assert len(kmeans.levels) <= 2 ** bits
    assert kmeans.mse(x) <= uniform_mse * (1 + 1e-9) + 1e-12


def test_power_of_two_levels_and_per_channel_beats_per_tensor() -> None:
    rng = np.random.default_rng(0)
    q = simulate.power_of_two(rng.standard_normal(1000), bits=4)
    nonzero = np.abs(q.levels[q.levels != 0])
    ratios = nonzero[1:] / nonzero[:-1]
    assert np.all(np.isclose(ratios, 2.0) | np.isclose(ratios, 1.0) | np.isclose(ratios, 0.5) | (ratios > 0))
    assert len(q.levels) == 2 ** 4 - 1
    w = rng.standard_normal((8, 64)) * np.logspace(-2, 1, 8)[:, None]  # channels with very different ranges
    per_tensor = simulate.uniform(w, 8, symmetric=True).sqnr_db(w)
    per_channel = simulate.uniform(w, 8, symmetric=True, axis=0).sqnr_db(w)
    assert per_channel > per_tensor + 5


def test_weight_quantization_error_per_layer() -> None:
    from edgekit.zoo import digits_cnn

    rows = simulate.weight_quantization_error(digits_cnn(width=8), bits=8)
    assert len(rows) == 8 and rows == sorted(rows, key=lambda r: r["sqnr_db"])
    assert all(r["sqnr_db"] > 30 for r in rows)
    four_bit = simulate.weight_quantization_error(digits_cnn(width=8), bits=4)
    assert four_bit[0]["sqnr_db"] < rows[0]["sqnr_db"]
