"""The pipeline file (``edgekit run pipeline.yaml``): one YAML, validated before any work starts.

Unknown keys and wrong types are errors naming the file and the key path (``quantize.ort.format``),
because a typo that silently falls back to a default costs a user an hour of wrong numbers.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Callable, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from edgekit.cli.bench_cmd import MAX_PROFILE_TOP, MAX_RUNS
from edgekit.cli.common import MAX_INPUT_ELEMENTS
from edgekit.errors import EdgekitError
from edgekit.evaluate import MAX_THREADS
from edgekit.quantize.ort.settings import OrtQuantSettings
from edgekit.yamlfile import read_yaml_mapping, validate


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _must_be(test: Callable[[Any], bool], wanted: str) -> AfterValidator:
    """A range check whose message says what was wanted and what was given (Field's omits the value)."""
    def check(value: Any) -> Any:
        if not test(value):
            raise PydanticCustomError("out_of_range", f"must be {wanted}, got {{value}}", {"value": value})
        return value

    return AfterValidator(check)


def _at_most(high: float) -> AfterValidator:
    return _must_be(lambda v: v <= high, f"at most {high:,}")


# Upper limits are the command line's own (edgekit prune/quantize/bench): a value past them is a typo
# that would otherwise run for days, exhaust memory or overflow deep inside a library.
AtLeastOne = Annotated[int, _must_be(lambda v: v >= 1, "at least 1")]
NonNegative = Annotated[int, _must_be(lambda v: v >= 0, "at least 0")]
Positive = Annotated[float, _must_be(lambda v: v > 0, "greater than 0")]
OpenFraction = Annotated[float, _must_be(lambda v: 0 < v < 1, "between 0 and 1 (exclusive)")]
MacsFraction = Annotated[float, _must_be(lambda v: 0 < v <= 1, "greater than 0 and at most 1")]
UnitInterval = Annotated[float, _must_be(lambda v: 0 <= v <= 1, "between 0 and 1")]
InputShape = Annotated[list[int], _must_be(lambda v: len(v) == 4 and all(d > 0 for d in v),
                                           "4 positive integers (N, C, H, W)"),
                       _must_be(lambda v: v[0] * v[1] * v[2] * v[3] <= MAX_INPUT_ELEMENTS,
                                f"at most {MAX_INPUT_ELEMENTS:,} elements")]
Seed = Annotated[NonNegative, _at_most(2**32 - 1)]  # numpy's and torch's seeding range
Epochs = Annotated[AtLeastOne, _at_most(100_000)]
BatchSize = Annotated[AtLeastOne, _at_most(65_536)]
LearningRate = Annotated[Positive, _at_most(10)]
Temperature = Annotated[Positive, _at_most(1e4)]
Runs = Annotated[AtLeastOne, _at_most(MAX_RUNS)]
Warmup = Annotated[NonNegative, _at_most(MAX_RUNS)]
Threads = Annotated[AtLeastOne, _at_most(MAX_THREADS)]
TopOnePoints = Annotated[float, _must_be(lambda v: 0 <= v <= 100, "between 0 and 100 top-1 points")]
RunName = Annotated[str, _must_be(lambda v: bool(v) and v not in (".", "..") and "/" not in v and "\\" not in v
                                  and "\0" not in v, "a plain folder name (no path separators), as runs/<name>")]


class ModelConfig(_Strict):
    source: str
    kwargs: dict[str, Any] = Field(default_factory=dict)
    arch: str | None = None
    weights: str | None = None
    input_shape: InputShape


class DataConfig(_Strict):
    recipe: str
    calib: str
    eval: str
    train: str | None = None
    val: str | None = None


class TrainConfig(_Strict):
    """Train the baseline first: for sources without trained weights (the demo)."""

    epochs: Epochs = 5
    lr: LearningRate = 3e-3
    batch_size: BatchSize = 64
    optimizer: Literal["adamw", "sgd"] = "adamw"
    seed: Seed = 0
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"


MAX_SWEEP = 12  # pruned variants in one run: each is distilled, exported, quantized, evaluated, measured


def _distinct_ratios(ratios: list[float]) -> list[float]:
    if not 1 <= len(ratios) <= MAX_SWEEP:
        raise ValueError(f"must list 1 to {MAX_SWEEP} ratios, got {len(ratios)}")
    if len({f"{r:g}" for r in ratios}) != len(ratios):
        raise ValueError(f"lists a ratio twice: {ratios}")
    return ratios


class PruneConfig(_Strict):
    ratio: OpenFraction | None = 0.5
    # a sweep: one pruned (and distilled, exported, quantized, measured) variant per ratio
    ratios: Annotated[list[OpenFraction], AfterValidator(_distinct_ratios)] | None = None
    # the smallest ratio whose latency_of model meets this p50, measured on bench.hosts[0] (else here, with
    # bench.targets[0]'s threads); the ratio/latency curve goes into the manifest
    target_latency_ms: Annotated[float, Field(gt=0, le=3_600_000)] | None = None
    latency_of: Literal["fp32-onnx", "int8-onnx", "int8-tflite"] = "fp32-onnx"
    max_ratio: OpenFraction = 0.9
    target_macs: MacsFraction | None = None
    importance: Literal["l1", "l2", "bn", "taylor"] = "l1"
    round_to: Annotated[AtLeastOne, _at_most(4096)] | None = None
    global_pruning: bool = False
    steps: Annotated[AtLeastOne, _at_most(100)] = 1
    protect: list[str] = Field(default_factory=list)


    @model_validator(mode="after")
    def _one_amount(self) -> "PruneConfig":
        given = [k for k in ("ratio", "ratios", "target_macs", "target_latency_ms")
                 if k in self.model_fields_set and getattr(self, k) is not None]
        if len(given) > 1:
            raise ValueError(f"{' and '.join(given)}: give one of them (a ratio, a sweep of ratios, a MACs target "
                             "or a latency target)")
        return self

    def variants(self) -> list[str | None]:
        """The pruned variants' names: ``r0.3``... for a ``ratios`` sweep, else one unnamed variant."""
        return [f"r{ratio:g}" for ratio in self.ratios] if self.ratios else [None]

    def ratio_of(self, variant: str | None) -> float | None:
        if variant:
            return float(variant[1:])
        return None if self.target_macs is not None or self.target_latency_ms is not None else self.ratio


class DistillConfig(_Strict):
    epochs: Epochs = 5
    lr: LearningRate = 3e-3
    batch_size: BatchSize = 64
    alpha: UnitInterval = 0.7
    temperature: Temperature = 4.0
    optimizer: Literal["adamw", "sgd"] = "adamw"
    seed: Seed = 0
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"


class TfliteQuantConfig(_Strict):
    float_io: bool = False
    float_fallback: bool = False  # ops with no integer kernel stay float; the artifact is labelled not full-integer
    quantize_ops: Literal["all", "compute"] = "all"  # compute: all but Conv/FullyConnected/BatchMatMul in float


def _distinct(modes: list[str]) -> list[str]:
    if not modes:
        raise ValueError("must name at least one mode (static, dynamic, fp16)")
    if len(set(modes)) != len(modes):
        raise ValueError(f"lists a mode twice: {modes}")
    return modes


class QuantizeConfig(_Strict):
    # static: INT8 calibrated on data.calib (int8.onnx, int8.tflite); dynamic and fp16 need no calibration
    # (dynamic.onnx, fp16.tflite...; data.calib images only measure their fidelity), made by their own stage
    modes: Annotated[list[Literal["static", "dynamic", "fp16"]], AfterValidator(_distinct)] = \
        Field(default_factory=lambda: ["static"])
    modes_for: Literal["all", "baseline"] = "all"  # dynamic/fp16 of every exported model, or of fp32.onnx only
    num_samples: AtLeastOne = 200
    seed: Seed = 0
    # the keys it sets override the first bench target's profile (OrtQuantSettings.explicit)
    ort: OrtQuantSettings | None = Field(default_factory=OrtQuantSettings)
    tflite: TfliteQuantConfig | None = Field(default_factory=TfliteQuantConfig)
    accuracy_budget: TopOnePoints | None = None  # ORT: keep the worst layers in float until within it, on data.eval
    auto: bool = False  # ORT: measure the candidate settings on this machine, keep the fastest within budget
    remedies: bool = True  # below the fidelity threshold, try mean min/max ranges (both runtimes); ORT also
    # per-channel, Percentile/Entropy, 7-bit weights and layers in float


class HostConfig(_Strict):
    host: str                           # user@addr[:port], an ssh config alias, or a name in bench.inventory
    target: str | None = None           # these win over the inventory device's own values
    remote_python: str | None = None
    known_hosts: str | None = None
    identity: str | None = None
    ssh_config: str | None = None
    trust_new_host: bool = False
    insecure_no_host_check: bool = False


class BenchConfig(_Strict):
    targets: list[str] = Field(default_factory=lambda: ["x86-64-avx2"])
    hosts: list[HostConfig] = Field(default_factory=list)  # measured at once; one failing is one line in the report
    inventory: str | None = None  # devices YAML that hosts[].host may name (edgekit.bench.inventory)
    runs: Runs = 100
    warmup: Warmup = 10
    threads: Threads | None = None
    profile: bool = False                                     # bench --profile: slowest operators per artifact
    parity: bool = True  # device parity: outputs on a probe set (data.calib samples) vs FP32 and vs this host
    profile_top: Annotated[AtLeastOne, _at_most(MAX_PROFILE_TOP)] = 10


def _known_task(name: str) -> str:
    from edgekit.tasks import TASKS

    if name not in TASKS:
        raise ValueError(f"{name!r} is not one of {', '.join(sorted(TASKS))}")
    return name


class PipelineConfig(_Strict):
    name: RunName = "run"
    task: Annotated[str, AfterValidator(_known_task)] = "classification"  # what eval scores (edgekit.tasks)
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


def check_inputs(config: PipelineConfig, origin: str, targets_dir: str | None = None) -> None:
    """Everything the file points at exists and parses, before any work starts: a missing folder
    or an unknown target found after the training stage costs the user the whole training."""
    _check_model(config.model, origin)
    _check_data(config, origin)
    from edgekit.bench.remote import SshTarget
    from edgekit.targets import load_target

    for i, name in enumerate(config.bench.targets):
        _in_key(origin, f"bench.targets.{i}", lambda: load_target(name, targets_dir))
    if config.bench.inventory:
        from edgekit.bench.inventory import load_inventory

        _in_key(origin, "bench.inventory", lambda: load_inventory(config.bench.inventory))
    for i, host in enumerate(config.bench.hosts):
        device = _in_key(origin, f"bench.hosts.{i}.host", lambda: host_device(config.bench, host))
        _in_key(origin, f"bench.hosts.{i}.host", lambda: SshTarget.parse(device.spec))
        if device.target:
            _in_key(origin, f"bench.hosts.{i}.target", lambda: load_target(device.target, targets_dir))


def host_devices(bench: BenchConfig) -> list[Any]:
    """``bench.hosts`` as :class:`edgekit.bench.inventory.Device` (names looked up in ``bench.inventory``)."""
    return [host_device(bench, host) for host in bench.hosts]


def host_device(bench: BenchConfig, host: HostConfig) -> Any:
    from edgekit.bench.inventory import resolve_host

    options = host.model_dump(include={"known_hosts", "identity", "ssh_config", "trust_new_host",
                                       "insecure_no_host_check"})
    return resolve_host(host.host, bench.inventory, target=host.target, remote_python=host.remote_python,
                        ssh_options=options)


def _check_model(model: ModelConfig, origin: str) -> None:
    location = model.source.rpartition(":")[0] if ":" in model.source else model.source
    if location.endswith((".py", ".pt", ".pth", ".pt2")) and not Path(location).is_file():
        raise EdgekitError(f"{origin}: key 'model.source': {location}: file not found")
    if model.weights and not Path(model.weights).is_file():
        raise EdgekitError(f"{origin}: key 'model.weights': {model.weights}: file not found")
    _check_model_runs(model, origin)


def _check_model_runs(model: ModelConfig, origin: str) -> None:
    """Build the model and run it once on ``input_shape``: a wrong kwarg, a weights file of another
    architecture or a shape the model cannot take is named by its key now, not by a factory's name
    after the stages before it ran."""
    from edgekit.sources import check_runs_on, load_model

    try:
        loaded = load_model(model.source, model.kwargs, arch=model.arch, weights=model.weights)
    except EdgekitError as exc:
        text = str(exc)
        key = ("model.weights" if model.weights and text.startswith(model.weights)
               else "model.kwargs" if model.kwargs and ("factory raised" in text or "could not build" in text)
               else "model.source")
        raise EdgekitError(f"{origin}: key '{key}': {text}") from exc
    check_runs_on(loaded.module, model.input_shape, label=f"{origin}: key 'model.input_shape':")


def _check_data(config: PipelineConfig, origin: str) -> None:
    from edgekit.data import load_recipe, open_dataset

    data = config.data
    recipe = _in_key(origin, "data.recipe", lambda: load_recipe(data.recipe))
    for key in ("calib", "eval", "train", "val"):
        source = getattr(data, key)
        if source:
            _in_key(origin, f"data.{key}", lambda: open_dataset(source, recipe))
    distill_given = "distill" in config.model_fields_set and config.distill is not None
    if (config.train is not None or distill_given) and not data.train:
        raise EdgekitError(f"{origin}: key 'data.train': required when a 'train' or 'distill' section is given")


def _in_key(origin: str, key: str, check: Callable[[], Any]) -> Any:
    """Run ``check``; its one-line error is re-said as ``origin: key 'a.b': reason``."""
    try:
        return check()
    except EdgekitError as exc:
        reason = re.sub(r"^--[a-z-]+: ", "", str(exc))
        raise EdgekitError(f"{origin}: key '{key}': {reason}") from exc
