"""Check the JSON documents a report is built from, field by field.

Run directories can be assembled by hand or copied between machines, so ``edgekit report`` must
name the file and the field that is missing or of the wrong type instead of failing somewhere in
the rendering with a KeyError.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from edgekit.errors import EdgekitError

NUMBER = "number"
POSITIVE = "positive number"
TEXT = "string"
FLAG = "true or false"
OPTIONAL = "optional"

LATENCY_FIELDS = {"min": NUMBER, "p50": POSITIVE, "p90": NUMBER, "p99": NUMBER, "mean": NUMBER, "std": NUMBER,
                  "cv": NUMBER}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check(value: Any, kind: str) -> bool:
    if kind == NUMBER:
        return _is_number(value)
    if kind == POSITIVE:
        return _is_number(value) and value > 0
    if kind == TEXT:
        return isinstance(value, str)
    if kind == FLAG:
        return isinstance(value, bool)
    raise ValueError(kind)  # pragma: no cover - a typo in this module


def field(document: dict[str, Any], path: Path, name: str, kind: str, required: bool = True) -> Any:
    """``document[name]`` if it is a ``kind`` (None allowed when not ``required``), else a one-line error."""
    if name not in document:
        if required:
            raise EdgekitError(f"{path}: field '{name}' is missing")
        return None
    value = document[name]
    if value is None and not required:
        return None
    if not _check(value, kind):
        raise EdgekitError(f"{path}: field '{name}' must be a {kind}{'' if required else ' or null'}, got {value!r:.60}")
    return value


def _mapping(value: Any, path: Path, name: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise EdgekitError(f"{path}: field '{name}' must be an object, got {type(value).__name__}")
    return value


def _list(value: Any, path: Path, name: str) -> list[Any]:
    if not isinstance(value, list):
        raise EdgekitError(f"{path}: field '{name}' must be a list, got {type(value).__name__}")
    return value


def check_eval(document: dict[str, Any], path: Path) -> None:
    """An ``edgekit.eval/1`` document as the report reads it."""
    field(document, path, "artifact", TEXT)
    for name in ("top1", "top5", "agreement", "cosine"):
        field(document, path, name, NUMBER, required=False)
    for name in ("warning", "task", "runtime"):
        field(document, path, name, TEXT, required=False)
    if document.get("per_item") is not None:
        check_per_item(document, path)


def check_per_item(document: dict[str, Any], path: Path) -> None:
    """``per_item`` (edgekit.tasks.items): the bits must decode to ``count`` items and agree with
    the document's own percentages, or a paired interval would be computed from the wrong images."""
    from edgekit.tasks.items import ENCODING, decode_bits

    items = _mapping(document["per_item"], path, "per_item")
    if items.get("encoding") != ENCODING:
        raise EdgekitError(f"{path}: field 'per_item.encoding' must be {ENCODING!r}, got {items.get('encoding')!r:.60}")
    count = items.get("count")
    if not (isinstance(count, int) and not isinstance(count, bool) and count > 0):
        raise EdgekitError(f"{path}: field 'per_item.count' must be a positive integer, got {count!r:.60}")
    if document.get("num_samples") is not None and document["num_samples"] != count:
        raise EdgekitError(f"{path}: field 'per_item.count' is {count} but 'num_samples' is {document['num_samples']!r:.60}")
    _nested(items, path, "per_item", "data_id", TEXT)
    for name, value in items.items():
        if name in ("encoding", "count", "data_id"):
            continue
        if not isinstance(value, str):
            raise EdgekitError(f"{path}: field 'per_item.{name}' must be a base64 string, got {type(value).__name__}")
        try:
            bits = decode_bits(value, count)
        except ValueError as exc:
            raise EdgekitError(f"{path}: field 'per_item.{name}' is not {count} packed bits ({exc})") from exc
        stated = document.get(name)
        if _is_number(stated) and abs(100.0 * bits.mean() - stated) > 0.01:
            raise EdgekitError(f"{path}: field 'per_item.{name}' gives {100.0 * bits.mean():.3f}% but '{name}' is {stated}")


def check_bench(document: dict[str, Any], path: Path) -> None:
    """An ``edgekit.bench/1`` document as the report reads it."""
    field(document, path, "host", TEXT)
    field(document, path, "target", TEXT, required=False)
    if "error" in document:  # a device that could not be measured: one line in the report
        field(document, path, "error", TEXT)
    system = _mapping(document.get("system", {}), path, "system")
    if "isa_flags" in system and system["isa_flags"] is not None:
        flags = _list(system["isa_flags"], path, "system.isa_flags")
        if not all(isinstance(f, str) for f in flags):
            raise EdgekitError(f"{path}: field 'system.isa_flags' must be a list of strings")
    results = _list(document.get("results"), path, "results") if "results" in document else None
    if results is None:
        raise EdgekitError(f"{path}: field 'results' is missing")
    for index, result in enumerate(results):
        where = f"results[{index}]"
        result = _mapping(result, path, where)
        for name, kind in (("artifact", TEXT), ("runtime", TEXT), ("noisy", FLAG)):
            _nested(result, path, where, name, kind)
        if result.get("size_bytes") is not None and not (_is_number(result["size_bytes"]) and result["size_bytes"] >= 0):
            raise EdgekitError(f"{path}: field '{where}.size_bytes' must be a non-negative number or null")
        latency = _mapping(result.get("latency_ms"), path, f"{where}.latency_ms")
        for name, kind in LATENCY_FIELDS.items():
            _nested(latency, path, f"{where}.latency_ms", name, kind)
        ci = latency.get("p50_ci95")
        if not (isinstance(ci, list) and len(ci) == 2 and all(_is_number(v) for v in ci)):
            raise EdgekitError(f"{path}: field '{where}.latency_ms.p50_ci95' must be a list of two numbers")
        samples = _list(result.get("latencies_ms"), path, f"{where}.latencies_ms")
        if not samples or not all(_is_number(v) for v in samples):
            raise EdgekitError(f"{path}: field '{where}.latencies_ms' must be a non-empty list of numbers")
        reasons = _list(result.get("noise_reasons", []), path, f"{where}.noise_reasons")
        if not all(isinstance(r, str) for r in reasons):
            raise EdgekitError(f"{path}: field '{where}.noise_reasons' must be a list of strings")
        if result.get("profile") is not None:
            check_profile(result["profile"], path, f"{where}.profile")
        if result.get("device_parity") is not None:
            check_parity(result["device_parity"], path, f"{where}.device_parity")


PARITY_FIELDS = {"cosine": NUMBER, "top1_agreement": NUMBER}


def check_parity(value: Any, path: Path, where: str) -> None:
    """A result's optional ``device_parity`` (bench with a parity reference): an error text, or the
    figures against the host FP32 reference and, where measured, against the host's run of the file."""
    parity = _mapping(value, path, where)
    if "error" in parity:
        _nested(parity, path, where, "error", TEXT)
        return
    for name, kind in PARITY_FIELDS.items():
        _nested(parity, path, where, name, kind)
    same = parity.get("host_same_artifact")
    if same is not None and "error" not in _mapping(same, path, f"{where}.host_same_artifact"):
        for name, kind in PARITY_FIELDS.items():
            _nested(same, path, f"{where}.host_same_artifact", name, kind)


OP_FIELDS = {"node": TEXT, "op_type": TEXT, "total_ms": NUMBER, "mean_ms": NUMBER, "share": NUMBER}


def check_profile(value: Any, path: Path, where: str) -> None:
    """A result's optional ``profile`` (``bench --profile``): per-operator times the report tabulates."""
    profile = _mapping(value, path, where)
    available = _nested(profile, path, where, "available", FLAG)
    if profile.get("reason") is not None and not isinstance(profile["reason"], str):
        raise EdgekitError(f"{path}: field '{where}.reason' must be a string or null")
    for name in ("runs", "nodes", "kernel_ms_per_run", "kernel_ms_p50"):
        if profile.get(name) is not None and not (_is_number(profile[name]) and profile[name] >= 0):
            raise EdgekitError(f"{path}: field '{where}.{name}' must be a non-negative number")
    ops = _list(profile.get("ops", []), path, f"{where}.ops")
    if available and not (_is_number(profile.get("runs")) and profile["runs"] > 0):
        raise EdgekitError(f"{path}: field '{where}.runs' must be a positive number when available is true")
    for index, op in enumerate(ops):
        op = _mapping(op, path, f"{where}.ops[{index}]")
        for name, kind in OP_FIELDS.items():
            _nested(op, path, f"{where}.ops[{index}]", name, kind)
        if not 0 <= op["share"] <= 1:
            raise EdgekitError(f"{path}: field '{where}.ops[{index}].share' must be from 0 to 1, got {op['share']!r:.60}")


def check_run_info(document: dict[str, Any], path: Path) -> None:
    """``run.json``: optional name, baseline and variant labels."""
    field(document, path, "name", TEXT, required=False)
    field(document, path, "baseline", TEXT, required=False)
    variants = _mapping(document.get("variants") or {}, path, "variants")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in variants.items()):
        raise EdgekitError(f"{path}: field 'variants' must map artifact names to label strings")


def check_manifest(document: dict[str, Any], path: Path) -> None:
    """A manifest's ``stages`` list (the report reads labels, MACs and parameters from it)."""
    stages = _list(document.get("stages", []), path, "stages")
    for index, stage in enumerate(stages):
        _mapping(stage, path, f"stages[{index}]")
        for name in ("macs", "params"):
            if stage.get(name) is not None and not _is_number(stage[name]):
                raise EdgekitError(f"{path}: field 'stages[{index}].{name}' must be a number")
        if stage.get("sensitivity") is not None:
            _check_sensitivity(stage["sensitivity"], path, f"stages[{index}].sensitivity")
    if document.get("size_bytes") is not None and not _is_number(document["size_bytes"]):
        raise EdgekitError(f"{path}: field 'size_bytes' must be a number")


def _check_sensitivity(value: Any, path: Path, where: str) -> None:
    """The quantize stage's per-layer error ranking, joined with the profile in the report."""
    for index, entry in enumerate(_list(value, path, where)):
        entry = _mapping(entry, path, f"{where}[{index}]")
        for name in ("node", "tensor"):
            if entry.get(name) is not None and not isinstance(entry[name], str):
                raise EdgekitError(f"{path}: field '{where}[{index}].{name}' must be a string or null")
        if entry.get("sqnr_db") is not None and not _is_number(entry["sqnr_db"]):
            raise EdgekitError(f"{path}: field '{where}[{index}].sqnr_db' must be a number or null")


def _nested(document: dict[str, Any], path: Path, where: str, name: str, kind: str) -> Any:
    if name not in document:
        raise EdgekitError(f"{path}: field '{where}.{name}' is missing")
    if not _check(document[name], kind):
        raise EdgekitError(f"{path}: field '{where}.{name}' must be a {kind}, got {document[name]!r:.60}")
    return document[name]
