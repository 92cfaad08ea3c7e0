"""The whole pipeline from one YAML file (``edgekit run``), and the built-in demo (``edgekit demo``)."""
from __future__ import annotations

from pathlib import Path

from edgekit.pipeline.config import PipelineConfig, load_config, parse_config
from edgekit.pipeline.runner import STAGES, Pipeline

DEMO_CONFIG = Path(__file__).resolve().parent / "demo.yaml"
DEMO_CONFIGS = {"classification": DEMO_CONFIG, "detection": DEMO_CONFIG.with_name("demo-detection.yaml"),
                "segmentation": DEMO_CONFIG.with_name("demo-segmentation.yaml")}  # edgekit demo --task

__all__ = ["DEMO_CONFIG", "DEMO_CONFIGS", "STAGES", "Pipeline", "PipelineConfig", "load_config", "parse_config"]
