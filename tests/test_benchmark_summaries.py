"""`make bench`'s summary lines quote the rows they summarise (a summary once picked the 8-bit-weights
row by position and called it ORT's defaults)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from bench_quantize_ort import EDGEKIT_DEFAULT, ORT_DEFAULT, defaults_summary  # noqa: E402
from common import row_labelled  # noqa: E402


def test_defaults_summary_quotes_the_ort_default_row_whatever_the_table_order() -> None:
    chosen = "QDQ U8S8 per-channel"
    table = [["FP32", "99.63", "1.000", "1.00x"],
             [EDGEKIT_DEFAULT.format(chosen), "99.63", "0.370", "2.72x"],
             ["QDQ U8S8 per-channel, 8-bit weights", "99.63", "0.366", "2.73x"],
             [ORT_DEFAULT, "99.26", "1.266", "0.79x"]]
    for order in (table, table[::-1]):
        value = defaults_summary(order, chosen)["value"]
        assert value == f"edgekit 99.63% 2.72x ({chosen}), ORT default 99.26% 0.79x"


def test_a_summary_of_a_missing_or_ambiguous_row_fails_instead_of_quoting_another() -> None:
    table = [["FP32", "1"], ["FP32", "2"]]
    with pytest.raises(KeyError, match="2 rows labelled 'FP32'"):
        row_labelled(table, "FP32")
    with pytest.raises(KeyError, match="0 rows labelled"):
        defaults_summary([["FP32", "99", "1", "1x"]], "x")


def test_demo_summary_says_slower_where_the_row_is_slower() -> None:
    from bench_demo import demo_summary

    table = [["FP32 ONNX", "fp32.onnx", "1.787", "1.00x", "baseline", "44.69", "1.0x", "99.63", "+0.00"],
             ["pruned+distilled INT8 TFLite", "pruned.int8.tflite", "2.100", "0.85x", "slower", "1.73", "25.8x",
              "99.26", "-0.37"]]
    line = demo_summary(table, "pruned.int8.tflite")
    assert line["value"] == "0.85x (slower), 25.8x smaller, -0.37 points"
    assert "faster" not in line["value"]
