"""The whole pipeline from one YAML file (``edgekit run``), and the built-in demo (``edgekit demo``)."""
from __future__ import annotations

from pathlib import Path

from edgekit.pipeline.config import PipelineConfig, load_config, parse_config
from edgekit.pipeline.runner import STAGES, Pipeline

DEMO_CONFIG = Path(__file__).resolve().parent / "demo.yaml"

__all__ = ["DEMO_CONFIG", "STAGES", "Pipeline", "PipelineConfig", "load_config", "parse_config"]
