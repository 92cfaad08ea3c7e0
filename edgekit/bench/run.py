"""One benchmark document (schema ``edgekit.bench/1``) for a set of artifacts on one target or host.

Schema::

    schema    "edgekit.bench/1"
    created   ISO-8601 UTC
    target    profile name or null
    host      "local" or "user@host:port"
    notes     (when any) lines about the measurement: runtimes skipped, fewer CPUs than threads, artifacts
              that could not run there
    failed    (when any) [{"artifact", "runtime", "error"}]: artifacts the machine could not run (a runtime too
              old for the file's ops); the others' results stand, and with none left it is an error
    host_key_checked  (SSH only) false when --insecure-no-host-check skipped the host-key check
    upload    (SSH only) "sftp", or "exec" where the device has no SFTP subsystem (``cat > FILE``, checked by SHA-256)
    error     (a device of a fleet that could not be measured) one line; ``results`` is then empty
    system    the runner's system_info(): CPU model, ISA flags, governor, temperature, load, runtimes,
              "emulated" ("qemu-user" or null: then no timing here is the emulated CPU's) and "emulation_host"
    settings  {"runs", "warmup", "threads", "time_budget", "parity": {"samples", "real"} (with parity)}
    results   [{"artifact", "path", "sha256", "size_bytes", "runtime", "runtime_package", "runtime_version",
                "threads", "delegate" (TFLite),
                "load_s", "first_inference_s", "peak_rss_bytes",
                "latency_ms": {"min","p50","p90","p99","mean","std","cv","p50_ci95":[lo,hi],"runs"},
                "throughput_ips", "noisy", "noise_reasons": [...], "latencies_ms": [...],
                "profile" (with --profile): {"available", "reason", "runs", "nodes", "kernel_ms_per_run" (mean),
                  "kernel_ms_p50" (median over runs of a run's summed kernel time),
                  "ops": [{"node", "op_type", "total_ms", "mean_ms", "share", "provider"?}, ... slowest
                  first, the top N, then {"node": "(other)", "other": true, "nodes": k, ...}]},
                "device_parity" (with parity, see edgekit.bench.parity): {"cosine", "top1_agreement", "samples",
                  "agrees", "inputs", "reference", "device", "host_same_artifact": {...}} or {"error", ...}}]

One artifact can have several results, one per runtime (a profile listing onnxruntime and openvino
measures an .onnx on both); ``runtime`` tells them apart.
"""
from __future__ import annotations

import asyncio
import datetime as _dt
from pathlib import Path
from typing import Any, Sequence

from edgekit.bench import parity as parity_mod
from edgekit.bench.local import bench_local
from edgekit.bench.plan import plan
from edgekit.bench.remote import SshTarget, bench_remote_async
from edgekit.bench.stats import noise_reasons, summarize
from edgekit.errors import EdgekitError
from edgekit.manifest import sha256_file
from edgekit.runtime.verify import check_model_file, verify_model

SCHEMA = "edgekit.bench/1"


def benchmark(
    artifacts: Sequence[str | Path],
    *,
    target: str | None = None,
    targets_dir: str | None = None,
    host: str | None = None,
    runs: int = 100,
    warmup: int = 10,
    threads: int | None = None,
    runtime: str | None = None,
    time_budget: float | None = None,
    remote_python: str | None = None,
    ssh_options: dict[str, Any] | None = None,
    timeout: float = 1800.0,
    local_python: str | None = None,
    profile_top: int | None = None,
    parity: bool = False,
    parity_reference: str | Path | None = None,
    parity_samples: Any = None,
    input_shape: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Measure every artifact (locally, or on ``host`` over one SSH connection); a bench document.
    ``profile_top``: also a profiled pass per artifact, keeping its slowest ``profile_top`` operators.
    ``parity``: each result also gets ``device_parity``, its outputs on a probe set (seeded inputs and
    ``parity_samples``, real float NCHW samples) against its FP32 model's (``parity_reference``, else
    the one its manifest names) and the same file's on this host (see :mod:`edgekit.bench.parity`).
    ``input_shape``: the size a model with dynamic input dimensions is timed at (``--input-shape``)."""
    paths = check_artifacts(artifacts, runs, warmup, profile_top)
    profile = load_profile(target, targets_dir)
    with parity_mod.probe_scope(paths, parity, parity_reference, parity_samples) as probe:
        if host_spec(profile, host):
            return asyncio.run(benchmark_async(
                paths, target=target, targets_dir=targets_dir, host=host, runs=runs, warmup=warmup, threads=threads,
                runtime=runtime, time_budget=time_budget, remote_python=remote_python, ssh_options=ssh_options,
                timeout=timeout, profile_top=profile_top, checked=True, probe=probe, input_shape=input_shape))
        jobs = plan(paths, runtime, profile, threads, input_shape)
        document = bench_local(jobs, runs, warmup, time_budget, profile is not None, timeout, local_python,
                               profile_top=profile_top, probe_set=probe.file if probe else None)
        return parity_mod.finish(_document(document, profile, "local", runs, warmup, threads, time_budget,
                                           profile_top), probe)


async def benchmark_async(
    artifacts: Sequence[str | Path], *, target: str | None = None, targets_dir: str | None = None,
    host: str | None = None, runs: int = 100, warmup: int = 10, threads: int | None = None,
    runtime: str | None = None, time_budget: float | None = None, remote_python: str | None = None,
    ssh_options: dict[str, Any] | None = None, timeout: float = 1800.0, profile_top: int | None = None,
    checked: bool = False, probe: parity_mod.ProbeSet | None = None, input_shape: Sequence[int] | None = None,
) -> dict[str, Any]:
    """:func:`benchmark` on one device over SSH, awaitable: a fleet measures its devices at once
    (:mod:`edgekit.bench.fleet`). ``checked``: the artifacts were already checked; ``probe``: the
    device-parity probe set (:func:`edgekit.bench.parity.probe_scope`)."""
    paths = [Path(a) for a in artifacts] if checked else check_artifacts(artifacts, runs, warmup, profile_top)
    profile = load_profile(target, targets_dir)
    spec = host_spec(profile, host)
    if not spec:
        raise EdgekitError("no --host, and the target profile has no ssh.host")
    jobs = plan(paths, runtime, profile, threads, input_shape)
    python = remote_python or (profile.ssh.python if profile and profile.ssh else "python3")
    workdir = profile.ssh.workdir if profile and profile.ssh else None
    ssh_target = SshTarget.parse(spec, **(ssh_options or {}))
    document = await bench_remote_async(ssh_target, jobs, runs, warmup, time_budget=time_budget,
                                        remote_python=python, workdir=workdir, timeout=timeout,
                                        profile_top=profile_top, probe_set=probe.file if probe else None)
    return parity_mod.finish(_document(document, profile, ssh_target.label(), runs, warmup, threads, time_budget,
                                       profile_top), probe)


def check_artifacts(artifacts: Sequence[str | Path], runs: int, warmup: int, profile_top: int | None) -> list[Path]:
    """The settings and every artifact, checked here before any upload: a corrupt file is named,
    not a runner crash on the device."""
    if runs < 1 or warmup < 0:
        raise EdgekitError(f"--runs must be >= 1 and --warmup >= 0 (got {runs}, {warmup})")
    if profile_top is not None and profile_top < 1:
        raise EdgekitError(f"--profile-top must be >= 1 (got {profile_top})")
    paths = [Path(a) for a in artifacts]
    for path in paths:
        if not path.exists():
            raise EdgekitError(f"{path}: artifact not found")
        check_model_file(path, "artifact")
        verify_model(path)
    return paths


def _document(document: dict[str, Any], profile: Any, where: str, runs: int, warmup: int, threads: int | None,
              time_budget: float | None, profile_top: int | None) -> dict[str, Any]:
    """The runner's merged output -> an ``edgekit.bench/1`` document."""
    threads = threads or (profile.threads if profile else None)
    results, failed = [], []
    for job, raw in zip(document.pop("jobs"), document["results"]):
        if "error" in raw:  # this artifact only (a runtime too old for its ops): the others' figures stand
            failed.append({"artifact": job.path.name, "runtime": job.runtime.name, "error": raw["error"][:300]})
            continue
        results.append(_result(job.path, raw, document["system"]))
    if failed and not results:
        first = failed[0]
        raise EdgekitError(f"{first['artifact']}: could not be benchmarked on {where} with {first['runtime']} "
                           f"({first['error'][:200]})")
    notes = [*document.pop("notes"), *cores_note(profile, results, document["system"], where),
             *(f"note: {f['artifact']} could not be run on {where} with {f['runtime']}: {f['error'][:200]}"
               for f in failed)]
    return {
        "schema": SCHEMA, "created": _now(),
        "target": profile.name if profile else None, "host": where, "system": document["system"],
        "settings": {"runs": runs, "warmup": warmup, "threads": threads, "time_budget": time_budget,
                     **({"profile_top": profile_top} if profile_top is not None else {})},
        "results": results, **({"notes": notes} if notes else {}),
        **({"host_key_checked": document["host_key_checked"]} if "host_key_checked" in document else {}),
        **({"upload": document["upload"]} if "upload" in document else {}),
        **({"failed": failed} if failed else {}),
    }


def failure_document(target: str | None, host: str, error: str) -> dict[str, Any]:
    """A device that could not be measured, as a bench document with no results: the report shows
    it as one line, and a pipeline re-run retries it (:func:`is_failure`)."""
    return {"schema": SCHEMA, "created": _now(), "target": target, "host": host, "error": error, "results": []}


def is_failure(document: dict[str, Any]) -> bool:
    return "error" in document


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def cores_note(profile: Any, results: list[dict[str, Any]], system: dict[str, Any], where: str) -> list[str]:
    """A profile's threads are meant for its ``cores``; on a host with fewer CPUs they contend."""
    threads = max((r["threads"] or 0 for r in results), default=0)
    cpus = system.get("cpu_count")
    if not profile or not cpus or threads <= cpus:
        return []
    return [f"note: target {profile.name} has {profile.cores} cores and runs {threads} threads; {where} has "
            f"{cpus} CPUs, so the threads share them and latencies are not the device's"]


def load_profile(target: str | None, targets_dir: str | None) -> Any:
    """The target profile named ``target`` (or None)."""
    if not target:
        return None
    from edgekit.targets import load_target

    return load_target(target, targets_dir)


def host_spec(profile: Any, host: str | None) -> str | None:
    """``host``, else the profile's ``ssh`` section as ``user@host:port``; None means this machine."""
    if host is None and profile and profile.ssh and profile.ssh.host:
        ssh = profile.ssh
        return f"{ssh.user + '@' if ssh.user else ''}{ssh.host}{':' + str(ssh.port) if ssh.port else ''}"
    return host


def destination(target: str | None, targets_dir: str | None, host: str | None) -> tuple[str | None, str]:
    """(profile name, host label) a benchmark document will carry: known before measuring, so the
    output file name can be checked first."""
    profile = load_profile(target, targets_dir)
    spec = host_spec(profile, host)
    return (profile.name if profile else None), (SshTarget.parse(spec).label() if spec else "local")


def _result(path: Path, raw: dict[str, Any], system: dict[str, Any]) -> dict[str, Any]:
    stats = summarize(raw["latencies_s"])
    inputs = raw["model"]["inputs"]  # a model may have none (a constant graph): one "image" per run then
    timed = raw.get("input_shape") or (inputs[0]["shape"] if inputs else None) or [1]  # the shape timed (runner 3+)
    batch = timed[0] or 1
    reasons = noise_reasons(stats, raw.get("cpu_busy_before"), raw.get("temperature_before_c"), raw.get("temperature_after_c"))
    return {
        "artifact": path.name, "path": str(path), "sha256": sha256_file(path), "size_bytes": path.stat().st_size,
        "runtime": raw["runtime"], "runtime_package": raw.get("runtime_package"),
        "runtime_version": raw.get("runtime_version"), "threads": raw.get("threads"),
        **({"delegate": raw["delegate"]} if "delegate" in raw else {}),
        "load_s": raw["load_s"], "first_inference_s": raw["first_inference_s"],
        "peak_rss_bytes": raw.get("peak_rss_bytes"), "latency_ms": stats,
        **({"input_shape": raw["input_shape"]} if raw.get("input_shape") else {}),
        "throughput_ips": 1000.0 * batch / stats["p50"] if stats["p50"] else None,
        "cpu_busy_before": raw.get("cpu_busy_before"), "temperature_before_c": raw.get("temperature_before_c"), "temperature_after_c": raw.get("temperature_after_c"),
        "noisy": bool(reasons), "noise_reasons": reasons,
        "latencies_ms": [round(s * 1000.0, 4) for s in raw["latencies_s"]],
        **({"profile": raw["profile"]} if "profile" in raw else {}),
        **({"probe_outputs": raw["probe_outputs"]} if "probe_outputs" in raw else {}),
    }


def render_table(document: dict[str, Any]) -> str:
    from tabulate import tabulate

    from edgekit.bench.stats import compare

    rows = []
    first = document["results"][0]["latency_ms"]
    for index, r in enumerate(document["results"]):
        s = r["latency_ms"]
        versus = "reference" if index == 0 else f"{first['p50'] / s['p50']:.2f}x, {compare(s, first)}"
        rows.append([r["artifact"], r["runtime"], f"{r['size_bytes'] / 1e6:.2f}", f"{s['p50']:.3f}",
                     f"[{s['p50_ci95'][0]:.3f}, {s['p50_ci95'][1]:.3f}]", f"{s['p90']:.3f}", f"{s['p99']:.3f}",
                     f"{s['cv']:.1%}", f"{r['throughput_ips']:.1f}", f"{(r['peak_rss_bytes'] or 0) / 1e6:.0f}",
                     versus, "NOISY: " + "; ".join(r["noise_reasons"]) if r["noisy"] else ""])
    system = document["system"]
    emulated = (f", EMULATED ({system['emulated']}): these timings are not {system.get('machine')} performance"
                if system.get("emulated") else "")
    header = (f"{document['host']} ({system.get('cpu_model', '?')}{emulated}, {system.get('cpu_count')} cores, "
              f"{document['settings']['threads'] or 'default'} threads, target {document['target'] or '-'})")
    return header + "\n" + tabulate(rows, headers=["artifact", "runtime", "MB", "p50 ms", "p50 95% CI", "p90 ms",
                                                   "p99 ms", "CV", "img/s", "peak MB", "vs first", "notes"])


def render_profiles(document: dict[str, Any]) -> str:
    """One table per profiled result: its slowest operators (``bench --profile``); "" without any."""
    from tabulate import tabulate

    from edgekit.report.profile_table import op_rows

    parts = []
    for r in document["results"]:
        profile = r.get("profile")
        if not profile:
            continue
        title = f"slowest operators: {r['artifact']} on {r['runtime']}"
        if not profile["available"]:
            parts.append(f"{title}: not available ({profile['reason']})")
            continue
        parts.append(f"{title} ({profile['runs']} profiled runs; kernel time per run: median {profile['kernel_ms_p50']:.3f} "
                     f"ms, mean {profile['kernel_ms_per_run']:.3f} ms; timed p50 {r['latency_ms']['p50']:.3f} ms)\n"
                     + tabulate(op_rows(profile, False), headers=["node", "op", "mean ms", "share"]))
    return "\n\n".join(parts)


def render_parity(document: dict[str, Any]) -> str:
    """Device parity per result: against the FP32 reference and against the same file on this host."""
    from tabulate import tabulate

    rows = []
    for r in document["results"]:
        parity = r.get("device_parity") or {"error": "not measured"}
        if "error" in parity:
            rows.append([r["artifact"], r["runtime"], parity.get("reference", "-"), "not measured: " + parity["error"][:80], ""])
            continue
        same = parity.get("host_same_artifact", {})
        versus_host = (same["error"][:60] if "error" in same
                       else f"{same['cosine']:.4f} / {same['top1_agreement']:.0f}%{'' if same['agrees'] else '  DIFFERS'}")
        versus_fp32 = f"{parity['cosine']:.4f} / {parity['top1_agreement']:.0f}%{'' if parity['agrees'] else '  DIFFERS'}"
        rows.append([r["artifact"], r["runtime"], parity["reference"].split(" ")[0], versus_fp32, versus_host])
    inputs = document["results"][0].get("device_parity", {}).get("inputs", "probe inputs") if document["results"] else ""
    return (f"device parity on {document['host']} (cosine / top-1 agreement; vs FP32 on {inputs})\n"
            + tabulate(rows, headers=["artifact", "runtime", "FP32 reference", "vs FP32 on this host", "vs same file on this host"]))
