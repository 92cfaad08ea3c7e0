"""The pipeline file (``edgekit run pipeline.yaml``): one YAML, validated before any work starts.

Unknown keys and wrong types are errors naming the file and the key path (``quantize.ort.format``),
because a typo that silently falls back to a default costs a user an hour of wrong numbers.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from edgekit.errors import EdgekitError
from edgekit.yamlfile import read_yaml_mapping, validate


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelConfig(_Strict):
    source: str
    kwargs: dict[str, Any] = Field(default_factory=dict)
    arch: str | None = None
    weights: str | None = None
    input_shape: list[int]


class DataConfig(_Strict):
    recipe: str
    calib: str
    eval: str
    train: str | None = None
    val: str | None = None


class TrainConfig(_Strict):
    """Train the baseline first: for sources without trained weights (the demo)."""

    epochs: int = 5
    lr: float = 3e-3
    batch_size: int = 64
    optimizer: Literal["adamw", "sgd"] = "adamw"
    seed: int = 0
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"


class PruneConfig(_Strict):
    ratio: float | None = 0.5
    target_macs: float | None = None
    importance: Literal["l1", "l2", "bn", "taylor"] = "l1"
    round_to: int | None = None
    global_pruning: bool = False
    steps: int = 1
    protect: list[str] = Field(default_factory=list)


class DistillConfig(_Strict):
    epochs: int = 5
    lr: float = 3e-3
    batch_size: int = 64
    alpha: float = 0.7
    temperature: float = 4.0
    optimizer: Literal["adamw", "sgd"] = "adamw"
    seed: int = 0
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"


class OrtQuantConfig(_Strict):
    format: Literal["QDQ", "QOperator"] | None = None
    activation_type: Literal["uint8", "int8"] | None = None
    weight_type: Literal["int8", "uint8"] | None = None
    per_channel: bool | None = None
    reduce_range: bool | None = None
    calibrate_method: Literal["MinMax", "Entropy", "Percentile"] | None = None


class TfliteQuantConfig(_Strict):
    float_io: bool = False


class QuantizeConfig(_Strict):
    num_samples: int = 200
    seed: int = 0
    ort: OrtQuantConfig | None = Field(default_factory=OrtQuantConfig)
    tflite: TfliteQuantConfig | None = Field(default_factory=TfliteQuantConfig)


class HostConfig(_Strict):
    host: str
    target: str | None = None
    remote_python: str | None = None
    known_hosts: str | None = None
    identity: str | None = None


class BenchConfig(_Strict):
    targets: list[str] = Field(default_factory=lambda: ["x86-64-avx2"])
    hosts: list[HostConfig] = Field(default_factory=list)
    runs: int = 100
    warmup: int = 10
    threads: int | None = None


class PipelineConfig(_Strict):
    name: str = "run"
    model: ModelConfig
    data: DataConfig
    train: TrainConfig | None = None
    prune: PruneConfig | None = Field(default_factory=PruneConfig)
    distill: DistillConfig | None = Field(default_factory=DistillConfig)
    quantize: QuantizeConfig = Field(default_factory=QuantizeConfig)
    bench: BenchConfig = Field(default_factory=BenchConfig)


def parse_config(data: Any, origin: str) -> PipelineConfig:
    """Validate a parsed YAML document; the first problem becomes a one-line error."""
    if not isinstance(data, dict):
        raise EdgekitError(f"{origin}: expected a mapping at the top level")
    return validate(PipelineConfig, data, origin)


def load_config(path: str | Path) -> PipelineConfig:
    return validate(PipelineConfig, read_yaml_mapping(path, "pipeline file"), str(path))
