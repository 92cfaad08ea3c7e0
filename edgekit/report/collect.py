"""Read a run directory into report rows: one per (artifact, runtime, target/host) measurement.

Run directory layout (what ``edgekit run`` writes; users can assemble one by hand)::

    RUN/artifacts/  *.onnx, *.tflite, ... (+ <artifact>.json manifests)
    RUN/eval/       *.json, schema edgekit.eval/1
    RUN/bench/      *.json, schema edgekit.bench/1
    RUN/run.json    optional: {"name", "baseline": "<artifact>", "variants": {"<artifact>": "label"}}
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgekit.bench.stats import compare
from edgekit.errors import EdgekitError, first_line
from edgekit.manifest import format_of
from edgekit.report.intervals import ratio_of_medians, score_difference, verdict
from edgekit.report.profile_table import attach_sensitivity
from edgekit.report.validate import check_bench, check_eval, check_manifest, check_run_info
from edgekit.runtime.registry import format_label, runtime_label


def _load(path: Path, schema: str | None) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise EdgekitError(f"{path}: not readable JSON ({first_line(exc)})") from exc
    if not isinstance(data, dict):
        raise EdgekitError(f"{path}: expected a JSON object at the top level, got {type(data).__name__}")
    if schema and data.get("schema") != schema:
        raise EdgekitError(f"{path}: field 'schema' is {data.get('schema')!r:.60}, expected {schema!r}")
    return data


def _last(stages: list[dict[str, Any]], key: str) -> Any:
    for stage in reversed(stages):
        if key in stage:
            return stage[key]
    return None


def _precision(quant: dict[str, Any] | None) -> str:
    """FP32 without a quantize stage, else its mode's (``INT8``, ``INT8 dynamic``, ``FP16``; no mode: static)."""
    if not quant:
        return "FP32"
    from edgekit.quantize.registry import MODES

    mode = MODES.get(quant.get("mode") or "static")
    return mode.precision if mode else str(quant.get("mode"))


def describe_variant(manifest: dict[str, Any] | None, artifact: str) -> dict[str, Any]:
    stages = (manifest or {}).get("stages", [])
    quant = next((s for s in reversed(stages) if s.get("stage") == "quantize"), None)
    pruned = any(s.get("stage") == "prune" for s in stages)
    distilled = any(s.get("stage") == "distill" for s in stages)
    precision = _precision(quant)
    variant = next((s.get("variant") for s in stages if s.get("stage") == "prune" and s.get("variant")), None)
    pruned_as = f"pruned {variant}" if variant else "pruned"  # a sweep's variants, told apart by ratio
    kind = (f"{pruned_as}+distilled " if pruned and distilled else f"{pruned_as} " if pruned else "") + precision
    return {
        "label": f"{kind} {format_label(artifact)}", "precision": precision, "pruned": pruned, "distilled": distilled,
        "quantization": quant.get("label") if quant else None, "macs": _last(stages, "macs"),
        "quantize_fidelity": quant.get("fidelity") if quant else None,          # INT8 vs FP32 at quantize time
        "quantize_speed": quant.get("int8_vs_fp32_speed") if quant else None,   # ORT: INT8 vs FP32 p50 there
        "quantize_builtin_kernels": quant.get("fidelity_builtin_kernels") if quant else None,  # TFLite, XNNPACK unfaithful
        "params": _last(stages, "params"),
        "sensitivity": quant.get("sensitivity") if quant else None,             # per-layer INT8 error, worst first
    }


def collect(run_dir: str | Path, baseline: str | None = None) -> dict[str, Any]:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise EdgekitError(f"{run_dir}: run directory not found")
    run_info = {}
    if (run_dir / "run.json").exists():
        run_info = _load(run_dir / "run.json", None)
        check_run_info(run_info, run_dir / "run.json")
    manifests = {}
    for path in _json_files(run_dir / "artifacts"):
        data = _load(path, None)
        if data.get("schema") == "edgekit.manifest/1":
            check_manifest(data, path)
            manifests[path.name[: -len(".json")]] = data  # by file name: a copied artifact keeps its manifest
    evals: dict[str, Any] = {}
    evals_on: dict[tuple[str, str], Any] = {}
    for path in _json_files(run_dir / "eval"):
        data = _load(path, "edgekit.eval/1")
        check_eval(data, path)
        if path.name == f"{data['artifact']}.json" or data["artifact"] not in evals:
            evals[data["artifact"]] = data  # on the artifact's default runtime: <artifact>.json
        if data.get("runtime"):
            evals_on[(data["artifact"], data["runtime"])] = data  # per runtime: <artifact>.<runtime>.json
    benches, failures = [], []
    for path in _json_files(run_dir / "bench"):
        data = _load(path, "edgekit.bench/1")
        check_bench(data, path)
        if "error" in data:
            failures.append({"host": machine_name(data), "error": data["error"]})
        else:
            benches.append((path, data))
            failures += [{"host": machine_name(data), "error": f"{f['artifact']} on {f['runtime']}: {f['error']}"}
                         for f in data.get("failed", [])]
    if not benches and not evals:
        raise EdgekitError(f"{run_dir}: no bench/*.json and no eval/*.json to report on")
    baseline = baseline or run_info.get("baseline") or _default_baseline(manifests, evals, benches)
    labels = run_info.get("variants", {})
    rows: list[dict[str, Any]] = []
    hosts: dict[str, Any] = {}
    measured = set()
    for path, bench in benches:
        host_key = machine_name(bench)
        hosts[host_key] = bench.get("system", {})
        for result in bench["results"]:
            evaluation = evals_on.get((result["artifact"], result.get("runtime"))) or evals.get(result["artifact"], {})
            rows.append(_row(result["artifact"], manifests, evaluation, labels, host_key, result)
                        | {"emulated": bool((bench.get("system") or {}).get("emulated"))})
            measured.add(result["artifact"])
    for name in evals:
        if name not in measured:
            rows.append(_row(name, manifests, evals[name], labels, None, None))
    attach_sensitivity(rows, run_dir / "artifacts")
    _relate_to_baseline(rows, baseline)
    _mark_pareto(rows)
    return {"name": run_info.get("name", run_dir.name), "baseline": baseline, "hosts": hosts, "rows": rows,
            "failures": failures}


def machine_name(bench: dict[str, Any]) -> str:
    """``TARGET @ HOST`` of a bench document, with `` [EMULATED aarch64: not ARM speed]`` for a machine the
    runner found emulated (qemu-user): part of the name, so no table, plot or ship line shows its
    timings as a board's."""
    system = bench.get("system") or {}
    emulated = f" [EMULATED {system.get('machine', '?')}: not ARM speed]" if system.get("emulated") else ""
    return f"{bench.get('target') or '-'} @ {bench['host']}{emulated}"


def _json_files(folder: Path) -> list[Path]:
    """The *.json files of ``folder`` (none when it is missing or not a folder)."""
    return sorted(p for p in folder.glob("*.json") if not p.is_dir()) if folder.is_dir() else []


def _default_baseline(manifests: dict, evals: dict, benches: list) -> str | None:
    names = list(manifests) or list(evals) or [r["artifact"] for _, b in benches for r in b["results"]]
    for name in names:
        if format_label(name) == "ONNX":
            info = describe_variant(manifests.get(name), name)
            if info["precision"] == "FP32" and not info["pruned"]:
                return name
    return names[0] if names else None


def _row(name: str, manifests: dict, evaluation: dict, labels: dict, host: str | None, result: dict | None) -> dict[str, Any]:
    """One (artifact, runtime, host) row; ``evaluation``: its eval document on that runtime, if any."""
    manifest = manifests.get(name)
    info = describe_variant(manifest, name)
    row = {
        "artifact": name, "label": labels.get(name, info["label"]), "host": host,
        "format": format_of(name),
        "runtime": result["runtime"] if result else None, "runtime_label": runtime_label((result or {}).get("runtime")), "size_bytes": (result or {}).get("size_bytes") or (manifest or {}).get("size_bytes"), "sha256": (result or {}).get("sha256"), "threads": (result or {}).get("threads"),
        "macs": info["macs"], "params": info["params"], "precision": info["precision"], "pruned": info["pruned"],
        "distilled": info["distilled"], "quantization": info["quantization"],
        "top1": evaluation.get("top1"), "top5": evaluation.get("top5"), "agreement": evaluation.get("agreement"),
        "cosine": evaluation.get("cosine"), **ranked_by(evaluation),
        "accuracy_warning": evaluation.get("warning"), "num_samples": evaluation.get("num_samples"),
        "per_item": evaluation.get("per_item"),
        "quantize_fidelity": info["quantize_fidelity"], "quantize_speed": info["quantize_speed"],
        "quantize_builtin_kernels": info["quantize_builtin_kernels"],
        "latency_ms": result["latency_ms"] if result else None,
        "latencies_ms": result["latencies_ms"] if result else None,
        "noisy": result["noisy"] if result else False, "noise_reasons": result.get("noise_reasons", []) if result else [],
        "profile": (result or {}).get("profile"), "quantize_sensitivity": info["sensitivity"],
        "device_parity": (result or {}).get("device_parity"),
    }
    return row


def ranked_by(evaluation: dict[str, Any]) -> dict[str, Any]:
    """The figure a report ranks a variant by: its task's primary metric (top-1 for classification)
    when the data is labelled, else the task's fidelity metric (agreement with the reference)."""
    from edgekit.tasks import TASKS

    task = TASKS.get(evaluation.get("task") or "classification")
    if task is None or not evaluation:
        return {"task": evaluation.get("task"), "metric": None, "higher_is_better": True, "score": None}
    metric = task.primary if evaluation.get(task.primary.name) is not None else task.fidelity
    return {"task": task.name, "metric": metric.name, "higher_is_better": metric.higher_is_better,
            "score": evaluation.get(metric.name)}


def _relate_to_baseline(rows: list[dict[str, Any]], baseline: str | None) -> None:
    """Every row against one baseline row per host: the baseline artifact on the first runtime
    measured there, so the same .onnx on another runtime shows that runtime's speed-up. Each
    difference gets its 95% interval (:mod:`edgekit.report.intervals`): a difference whose interval
    spans no change is reported as "no measurable difference", not ranked by noise."""
    base_by_host: dict[Any, dict[str, Any]] = {}
    for row in rows:
        if row["artifact"] == baseline:
            base_by_host.setdefault(row["host"], row)
    base_any = next((r for r in rows if r["artifact"] == baseline), None)
    for row in rows:
        base = base_by_host.get(row["host"]) or base_any
        row["is_baseline"] = row is base
        row["top1_delta"] = _difference(row, base, "top1")
        row["score_delta"] = _difference(row, base, "score") if base and base["metric"] == row["metric"] else None
        difference = score_difference(base, row) if base and not row["is_baseline"] else None
        row["score_delta_ci95"] = difference["ci95"] if difference else None
        row["score_verdict"] = ("baseline" if row["is_baseline"] and row["score"] is not None
                                else verdict(row["score_delta_ci95"], row["higher_is_better"]))
        row["speedup_ci95"] = None
        if base and row["latency_ms"] and base.get("latency_ms"):
            row["speedup"] = base["latency_ms"]["p50"] / row["latency_ms"]["p50"]
            latency_verdict = compare(row["latency_ms"], base["latency_ms"])
            row["vs_baseline"] = "baseline" if row["is_baseline"] else latency_verdict
            if not row["is_baseline"]:
                row["speedup_ci95"] = ratio_of_medians(base["latencies_ms"], row["latencies_ms"])[1]
        else:
            row["speedup"], row["vs_baseline"] = None, None


def _difference(row: dict[str, Any], base: dict[str, Any] | None, key: str) -> float | None:
    return row[key] - base[key] if base and row[key] is not None and base[key] is not None else None


def _mark_pareto(rows: list[dict[str, Any]]) -> None:
    """Pareto-optimal within each host: no other variant is both faster (p50) and better on the
    ranking metric (the task's primary metric, in its own direction)."""
    for row in rows:
        row["pareto"] = False
    for host in {r["host"] for r in rows}:
        points = [r for r in rows if r["host"] == host and r["latency_ms"] and r["score"] is not None]
        metrics = {r["metric"] for r in points}
        if len(metrics) != 1:  # top-1 for some, agreement for others: no common scale
            continue
        for row in points:
            p, a = row["latency_ms"]["p50"], goodness(row)
            row["pareto"] = not any(
                o is not row and o["latency_ms"]["p50"] <= p and goodness(o) >= a
                and (o["latency_ms"]["p50"] < p or goodness(o) > a)
                for o in points
            )


def goodness(row: dict[str, Any]) -> float:
    """The ranking metric, larger is better."""
    return row["score"] if row["higher_is_better"] else -row["score"]
