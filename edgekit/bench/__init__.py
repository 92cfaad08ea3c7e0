"""Benchmarking: locally or on a device over SSH, with honest statistics (schema edgekit.bench/1)."""
from edgekit.bench.run import SCHEMA, benchmark, render_table
from edgekit.bench.stats import compare, summarize

__all__ = ["SCHEMA", "benchmark", "compare", "render_table", "summarize"]
