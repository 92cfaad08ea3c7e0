"""Device parity: does the device compute what the host does?

The same INT8 file can compute differently on another CPU (other int8 kernels, another rounding of
the requantization: onnxruntime #5849), and a wrong input scale or layout passes every latency check.
So every benchmark can carry a fixed probe set, made here and sent with the artifacts: seeded
random inputs plus real calibration samples, float NCHW. The runner returns each artifact's first
output on it (exactly, as float32 bytes), and the host compares them with two references:

- ``reference``: the FP32 model run on this host with ONNX Runtime (what the user trained), and
- ``host_same_artifact``: the very same file run on this host with the same runtime (what differs
  is the device, not the quantization).

Each comparison is the mean per-sample output cosine and the top-1 agreement (% of samples whose
argmax is the same), the figures edgekit's fidelity check uses. Against FP32 only the real samples
count when there are any: on random inputs, far outside the calibrated ranges, a faithful INT8
model of the demo scores cosine 0.81 (measured), which says nothing about the device. Against the
host's run of the same file every sample counts: there any difference is the device's.
"""
from __future__ import annotations

import base64
import contextlib
import dataclasses
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from edgekit.errors import EdgekitError, first_line
from edgekit.quantize.fidelity import MIN_COSINE  # below it (or with a flip) a device disagrees
from edgekit.tasks import output_cosine, top1_agreement

RANDOM_SAMPLES = 8  # seeded N(0, 1) inputs: the same on every host and in every run
REAL_SAMPLES = 8    # calibration samples at most: inputs like the ones the model will see
SEED = 20261126


def probe_set(input_shape: list[Any], real: np.ndarray | None = None, seed: int = SEED) -> np.ndarray:
    """Real samples first (at most REAL_SAMPLES), then RANDOM_SAMPLES seeded ones of ``input_shape``
    (NCHW, the batch dimension ignored)."""
    sample = [int(d) if isinstance(d, int) and d > 0 else None for d in input_shape[1:]]
    if None in sample:
        raise EdgekitError(f"device parity needs a fixed input shape (the model's is {input_shape})")
    random = np.random.default_rng(seed).standard_normal((RANDOM_SAMPLES, *sample)).astype(np.float32)
    if real is None or not len(real):
        return random
    real = np.asarray(real, np.float32)[:REAL_SAMPLES]
    if list(real.shape[1:]) != sample:
        raise EdgekitError(f"device parity: the real samples are {list(real.shape[1:])}, the model takes {sample}")
    return np.ascontiguousarray(np.concatenate([real, random]))


def check_reference(reference: Path) -> None:
    """The parity reference is an FP32 .onnx that ONNX Runtime loads: checked before measuring."""
    from edgekit.runtime.verify import check_model_file, verify_model

    if not reference.is_file():
        raise EdgekitError(f"{reference}: parity reference not found")
    if reference.suffix.lower() != ".onnx":
        raise EdgekitError(f"{reference}: the parity reference must be the FP32 .onnx model")
    check_model_file(reference, "parity reference")
    verify_model(reference)


def fp32_reference(artifact: Path, hops: int = 8) -> Path | None:
    """The FP32 .onnx an artifact was made from, by its manifest's ``source.parent`` chain (beside
    it): ``pruned.int8.tflite`` -> ``pruned.fp32.onnx``; an FP32 .onnx is its own. None when unknown."""
    from edgekit.manifest import read_manifest

    current = artifact
    for _ in range(hops):
        manifest = read_manifest(current) if current.is_file() else None
        quantized = any(stage.get("stage") == "quantize" for stage in (manifest or {}).get("stages", []))
        if current.suffix.lower() == ".onnx" and manifest is not None and not quantized:
            return current
        parent = ((manifest or {}).get("source") or {}).get("parent")
        if not parent:
            return None
        current = artifact.parent / Path(parent).name
    return None


def references(artifacts: list[Path], override: str | Path | None = None) -> dict[str, Path]:
    """Artifact name -> its FP32 reference: ``override`` for all, else each one's own (by manifest).
    Every reference is checked before anything is measured."""
    if override is not None:
        check_reference(Path(override))
        return {path.name: Path(override) for path in artifacts}
    found = {path.name: ref for path in artifacts if (ref := fp32_reference(path)) is not None}
    if not found:
        raise EdgekitError(f"--parity: no FP32 .onnx reference is known for {', '.join(p.name for p in artifacts)} "
                           "(no edgekit manifest beside them): name one with --parity-reference FILE")
    for ref in dict.fromkeys(found.values()):
        check_reference(ref)
    return found


def reference_probe_set(reference: str | Path, real: np.ndarray | None = None) -> np.ndarray:
    """The probe set for ``reference``'s (an FP32 .onnx) input shape."""
    from edgekit.runtime import open_runner

    runner = open_runner(str(reference))
    return probe_set(list(runner.inputs[0].shape), real)


def decode(entry: dict[str, Any] | None) -> np.ndarray | None:
    """The runner's ``probe_outputs`` as an array; None when the runner could not compute them."""
    if not entry or "base64" not in entry:
        return None
    return np.frombuffer(base64.b64decode(entry["base64"]), dtype=np.float32).reshape(entry["shape"])


def compare(outputs: np.ndarray, reference: np.ndarray) -> dict[str, Any]:
    """Cosine and top-1 agreement of ``outputs`` against ``reference`` (same samples, same shape)."""
    if outputs.shape != reference.shape:
        return {"error": f"output shape {list(outputs.shape)} differs from the reference's {list(reference.shape)}"}
    cosine, agreement = output_cosine(outputs, reference), top1_agreement(outputs, reference)
    return {"cosine": round(cosine, 6), "top1_agreement": round(agreement, 2), "samples": len(outputs),
            "agrees": bool(cosine >= MIN_COSINE and agreement == 100.0)}


class HostOutputs:
    """Outputs of files run on this host on the probe set, each computed once."""

    def __init__(self, probe: np.ndarray, threads: int | None = None) -> None:
        self.probe, self.threads = probe, threads
        self.cache: dict[tuple[str, str | None], np.ndarray | str] = {}

    def __call__(self, path: str | Path, runtime: str | None = None) -> np.ndarray | str:
        """The first output of ``path`` on ``runtime``, or the reason it could not run here."""
        from edgekit.runtime import open_runner

        key = (str(path), runtime)
        if key not in self.cache:
            try:
                self.cache[key] = open_runner(str(path), self.threads, runtime).predict(self.probe)
            except Exception as exc:  # a runtime missing here, a file of another shape: said in the row
                self.cache[key] = f"not run on this host ({type(exc).__name__}: {first_line(exc)[:160]})"
        return self.cache[key]


def attach(document: dict[str, Any], results: list[dict[str, Any]], references: dict[str, Path],
           host: HostOutputs, real: int = 0) -> None:
    """Each result of ``results`` (bench rows with the runner's ``probe_outputs`` still in them) gets
    ``device_parity`` against its artifact's FP32 reference (``references``, by artifact name); the
    raw outputs are dropped so the document stays small. ``real``: how many of the probe samples
    (the first) are real, the ones the FP32 comparison uses."""
    count = real or len(host.probe)
    where = document.get("host", "?")
    for result in results:
        raw = result.pop("probe_outputs", None)
        outputs = decode(raw)
        reference = references.get(result["artifact"])
        if reference is None:
            result["device_parity"] = {"error": "no FP32 .onnx reference is known for it (no manifest beside it; "
                                                "name one with --parity-reference)", "device": where}
            continue
        if outputs is None:
            why = (raw or {}).get("error", "the runner returned no probe outputs")
            result["device_parity"] = {"error": why, "reference": reference.name, "device": where}
            continue
        expected = host(reference, "onnxruntime")
        parity: dict[str, Any] = {"reference": f"{reference.name} on this host (onnxruntime)", "device": where,
                                  "inputs": "real samples" if real else "seeded random inputs"}
        parity.update(compare(outputs[:count], expected[:count]) if isinstance(expected, np.ndarray)
                      else {"error": expected})
        same = host(result["path"], result.get("runtime"))
        parity["host_same_artifact"] = compare(outputs, same) if isinstance(same, np.ndarray) else {"error": same}
        result["device_parity"] = parity


def line(result: dict[str, Any]) -> str | None:
    """One line about a result whose device output disagrees with the host's, else None."""
    parity = result.get("device_parity")
    if not parity:
        return None
    if "error" in parity:
        return f"device parity of {result['artifact']} ({result['runtime']}) not measured: {parity['error']}"
    same = parity.get("host_same_artifact", {})
    if same.get("agrees") is False:
        return (f"{result['artifact']} ({result['runtime']}) computes differently on {parity['device']} than on this "
                f"host: cosine {same['cosine']:.4f}, top-1 agreement {same['top1_agreement']:.1f}%")
    return None


@dataclasses.dataclass(frozen=True)
class ProbeSet:
    """The probe inputs of one benchmark (saved as ``file`` for the runner) and each artifact's reference."""

    references: dict[str, Path]
    inputs: np.ndarray
    real: int      # the first ``real`` inputs are real samples
    file: Path


@contextlib.contextmanager
def probe_scope(artifacts: list[Path], wanted: bool, reference: str | Path | None = None,
                samples: np.ndarray | None = None) -> Iterator[ProbeSet | None]:
    """The probe set while the benchmark runs (its .npy removed after); None when parity is not wanted."""
    if not wanted:
        yield None
        return
    references_found = references(artifacts, reference)
    inputs = reference_probe_set(next(iter(references_found.values())), samples)
    real = min(len(samples), REAL_SAMPLES) if samples is not None else 0
    with tempfile.TemporaryDirectory(prefix="edgekit-probe-") as folder:
        file = Path(folder) / "probe.npy"
        np.save(file, inputs)
        yield ProbeSet(references_found, inputs, real, file)


def finish(document: dict[str, Any], probe: ProbeSet | None) -> dict[str, Any]:
    """``document`` (an edgekit.bench/1) with ``device_parity`` on every result and a note per
    disagreeing one; unchanged without a probe set."""
    if probe is None:
        return document
    attach(document, document["results"], probe.references,
           HostOutputs(probe.inputs, document["settings"].get("threads")), probe.real)
    document["settings"]["parity"] = {"samples": int(len(probe.inputs)), "real": probe.real}
    notes = [*document.get("notes", []), *(text for text in map(line, document["results"]) if text)]
    if notes:
        document["notes"] = notes
    return document
