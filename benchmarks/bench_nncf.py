"""edgekit's ONNX Runtime INT8 beside NNCF's post-training quantization, one torchvision model per family.

Per model, in one child process (zoo.py's helpers: seeded random weights, BatchNorm statistics set
on the calibration images, the export with its parity gate):
  * edgekit: ``quantize_ort_workflow`` as zoo.py and the CLI run it (sensitivity ranking, remedies on);
  * NNCF: ``nncf.quantize`` of the *same* FP32 ONNX with the *same* calibration images, in its own
    virtualenv (.venv-nncf, made here when missing; benchmarks/nncf_runner.py), preset PERFORMANCE,
    subset_size = every calibration image, NNCF's other defaults (fast bias correction on);
  * fidelity of both INT8 models against the FP32 ONNX logits on held-out images (mean per-sample
    cosine, top-1 agreement) and ORT p50 latency of FP32 and both INT8 models, timed interleaved in
    one process (``common.interleaved_p50_ms``, ``--threads`` intra-op threads, default 1: the
    machine is shared, and one thread is what another job's load disturbs least);
  * the QDQ structure of both INT8 models (QuantizeLinear count, per-channel weights, which op types
    read float activations), to explain a fidelity gap.

edgekit holds a quarter of the calibration images out for its own fidelity check (its default,
``fidelity.split_holdout``), so it calibrates on fewer of them than NNCF; the row records how many.

Rows go to benchmarks/results/nncf.jsonl (a re-run skips models already there unless --force); the
table is also summarised by ``common.save_summary("nncf", ...)``.

    PYTHONPATH=. python benchmarks/bench_nncf.py --only resnet18,convnext_tiny
    PYTHONPATH=. python benchmarks/bench_nncf.py --table      # the stored rows as Markdown
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, ROOT, interleaved_p50_ms, load_rows, log, markdown, save_row, save_summary  # noqa: E402

ROWS = RESULTS / "nncf.jsonl"
VENV = ROOT / ".venv-nncf"
RUNNER = Path(__file__).resolve().parent / "nncf_runner.py"
PINS = ["nncf==3.4.0", "onnx==1.19.1", "onnxruntime==1.23.0", "numpy==1.26.4"]
FAMILIES = {"resnet18": "residual", "mobilenet_v3_large": "hardswish+SE", "efficientnet_b0": "SiLU+SE",
            "shufflenet_v2_x1_0": "channel shuffle", "convnext_tiny": "LayerNorm+GELU", "densenet121": "dense concat"}
DEFAULT = "resnet18,mobilenet_v3_large,efficientnet_b0,shufflenet_v2_x1_0,convnext_tiny"
QUANTIZE_THREADS = 2  # edgekit's own checks while quantizing, as zoo.py runs it
COMPUTE = ("Conv", "Gemm", "MatMul")
MOVES = ("Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "MaxPool", "Identity", "Slice", "Split", "Gather")


# --- NNCF's virtualenv -------------------------------------------------------------------------------

def ensure_venv() -> dict[str, str]:
    """Make .venv-nncf when missing (the pins, or, if pip cannot satisfy them together, nncf 3.4.0 with
    whatever versions of the others pip picks) and return the versions installed there."""
    python = VENV / "bin" / "python"
    if not python.exists():
        log(f"making {VENV} ({' '.join(PINS)}) ...")
        subprocess.run([sys.executable if sys.version_info[:2] == (3, 11) else "python3.11", "-m", "venv", str(VENV)],
                       check=True)
        pip = [str(python), "-m", "pip", "install", "--quiet"]
        subprocess.run([*pip, "--upgrade", "pip"], check=True)
        if subprocess.run([*pip, *PINS]).returncode != 0:
            log("the pins conflict: nncf==3.4.0 with pip's choice of the others")
            subprocess.run([*pip, PINS[0], "onnx", "onnxruntime", "numpy"], check=True)
    code = "import json, nncf, onnx, onnxruntime, numpy; print(json.dumps({m.__name__: m.__version__ for m in (nncf, onnx, onnxruntime, numpy)}))"
    return json.loads(subprocess.run([str(python), "-c", code], check=True, capture_output=True, text=True).stdout)


def nncf_quantize(fp32: Path, calib: np.ndarray, out: Path, timeout: float) -> dict[str, Any]:
    """benchmarks/nncf_runner.py in .venv-nncf; its info (versions, options, seconds)."""
    calib_path, info = out.with_suffix(".calib.npy"), out.with_suffix(".info.json")
    np.save(calib_path, calib)
    with open(out.with_suffix(".log"), "w") as output:
        proc = subprocess.run([str(VENV / "bin" / "python"), str(RUNNER), str(fp32), str(calib_path), str(out), str(info)],
                              stdout=output, stderr=subprocess.STDOUT, timeout=timeout,
                              env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    if proc.returncode != 0:
        lines = [line for line in out.with_suffix(".log").read_text(errors="replace").splitlines() if line.strip()]
        raise RuntimeError(f"nncf_runner exit {proc.returncode}: {lines[-1][:240] if lines else 'no output'}")
    return json.loads(info.read_text())


# --- child: one model --------------------------------------------------------------------------------

def child(name: str, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    import zoo

    zoo.IMAGES = args.images
    size = zoo.input_size(name)
    calib, held_out = zoo.images(size)
    state = zoo.State(work / "export.json")
    zoo.export_child(name, state, work)  # build (BatchNorm on calib), export with parity gate, reference logits
    row: dict[str, Any] = {"input": size, "calib": len(calib), "held_out": len(held_out), "export": state.stages}
    if not (work / zoo.REFERENCE).exists():
        return {**row, "error": "no FP32 export"}
    fp32, reference = work / zoo.FP32, np.load(work / zoo.REFERENCE)
    paths = {"fp32": fp32}
    try:
        row["edgekit"] = edgekit_quantize(fp32, work / "edgekit.onnx", calib)
        paths["edgekit"] = work / "edgekit.onnx"
    except Exception as exc:  # noqa: BLE001 - a failure is the row's entry, NNCF still runs
        row["edgekit"] = {"error": zoo.error_text(exc)}
    try:
        row["nncf"] = nncf_quantize(fp32, calib, work / "nncf.onnx", args.timeout)
        paths["nncf"] = work / "nncf.onnx"
    except Exception as exc:  # noqa: BLE001
        row["nncf"] = {"error": zoo.error_text(exc)}
    figures = measure(paths, held_out, reference, args.threads)
    row["fp32_ms"] = figures.pop("fp32")["ms"]
    for tool, values in figures.items():
        row[tool].update(values, qdq=qdq_structure(paths[tool]))
    return row


def edgekit_quantize(fp32: Path, out: Path, calib: np.ndarray) -> dict[str, Any]:
    """edgekit's default: quantize_ort_workflow as zoo.py's ort_stage calls it; what it chose and why."""
    from edgekit.quantize.ort import quantize_ort_workflow

    lines: list[str] = []
    result = quantize_ort_workflow(fp32, out, calib, threads=QUANTIZE_THREADS, force=True, progress=False,
                                   log=lines.append)
    remedies = result.details.get("remedies")
    return {"label": result.label, "settings": result.settings, "remedy": remedy_text(remedies),
            "remedies_tried": [r["remedy"] for r in (remedies or {}).get("tried", [])],
            "nodes_excluded": list(result.nodes_excluded), "calibrated_on": result.calibration["num_samples"],
            "own_check": result.fidelity.as_dict() if result.fidelity else None,
            "seconds": round(result.timings.get("total_s", 0.0), 1), "log": [line for line in lines if "remedy" in line]}


def remedy_text(remedies: dict[str, Any] | None) -> str:
    """What edgekit's remedies chose, from the manifest's ``remedies`` entry (None: the first INT8 was faithful)."""
    if remedies is None:
        return "none needed"
    pick = remedies["chosen"]
    chosen = "none helped" if pick["remedy"] == "as configured" else pick["remedy"]
    if pick["calibrate_method"] != "MinMax" and pick["calibrate_method"] not in chosen:
        chosen += f", {pick['calibrate_method']} calibration"
    return chosen + f" (of {len(remedies['tried']) - 1} tried)"


def measure(paths: dict[str, Path], held_out: np.ndarray, reference: np.ndarray, threads: int) -> dict[str, dict[str, Any]]:
    """Fidelity against the FP32 ONNX logits and p50 latency, every model timed interleaved (zoo.fidelity's way)."""
    from edgekit.runtime import open_runner
    from edgekit.tasks.base import output_cosine

    runners = {k: open_runner(str(p), threads=threads) for k, p in paths.items()}
    feeds = {k: r.example_feeds() for k, r in runners.items()}
    p50 = interleaved_p50_ms({k: (lambda r=r, f=feeds[k]: r.run(f)) for k, r in runners.items()},
                             rounds=5, per_round=4, warmup=3)
    figures: dict[str, dict[str, Any]] = {"fp32": {"ms": round(p50["fp32"], 2)}}
    for key in paths:
        if key == "fp32":
            continue
        got = runners[key].predict(held_out)
        figures[key] = {"cosine": round(output_cosine(got, reference), 5),
                        "agree": round(float(np.mean(got.argmax(1) == reference.argmax(1))), 3),
                        "ms": round(p50[key], 2), "mb": round(paths[key].stat().st_size / 1e6, 1)}
    return figures


def qdq_structure(path: Path) -> dict[str, Any]:
    """QuantizeLinear/DequantizeLinear counts, weights per-channel or per-tensor (biases apart), activation
    types and, per op type, how many nodes read every float input from a DequantizeLinear, directly or
    through ops that only move data (``MOVES``, or a Concat of such inputs), and for Conv/Gemm/MatMul their
    weight too: ``[in INT8, total]``."""
    import onnx

    graph = onnx.shape_inference.infer_shapes(onnx.load(str(path))).graph
    elem_type = {v.name: v.type.tensor_type.elem_type for v in [*graph.value_info, *graph.input, *graph.output]}
    initializers = {i.name: i for i in graph.initializer}
    constants = set(initializers) | {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    for node in graph.node:  # the exporter hands some biases through an Identity: still a constant
        if node.op_type == "Identity" and node.input[0] in constants:
            constants.add(node.output[0])
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list[tuple[Any, int]]] = {}
    for node in graph.node:
        for slot, name in enumerate(node.input):
            consumers.setdefault(name, []).append((node, slot))

    def elements(name: str) -> int:
        tensor = initializers.get(name)
        if tensor is None and name in producer:  # a Constant node
            tensor = next((a.t for a in producer[name].attribute if a.name == "value"), None)
        return int(np.prod(tensor.dims)) if tensor is not None else 1

    def zero_point_type(node: Any) -> str:
        tensor = initializers.get(node.input[2]) if len(node.input) > 2 else None
        return {2: "u8", 3: "s8"}.get(tensor.data_type, str(tensor.data_type)) if tensor is not None else "u8"

    def quantized(name: str) -> bool:
        node = producer.get(name)
        if node is None:
            return False
        if node.op_type == "Concat":  # NNCF quantizes a Concat's inputs, not its output
            return all(quantized(i) for i in node.input)
        return node.op_type == "DequantizeLinear" or (node.op_type in MOVES and quantized(node.input[0]))

    def constant_fed(node: Any) -> bool:  # NNCF folds the weights' QuantizeLinear away, ORT keeps it
        source = producer.get(node.input[0])
        return node.input[0] in constants or (source is not None and source.op_type == "QuantizeLinear"
                                               and source.input[0] in constants)

    quantize = [n for n in graph.node if n.op_type == "QuantizeLinear" and n.input[0] not in constants]
    dequantize = [n for n in graph.node if n.op_type == "DequantizeLinear"]
    fixed = [n for n in dequantize if constant_fed(n)]
    biases = [n for n in fixed if any(c.op_type in ("Conv", "Gemm") and slot == 2 for c, slot in consumers.get(n.output[0], []))]
    weights = [n for n in fixed if n not in biases]
    ops: dict[str, list[int]] = {}
    for node in graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear", "Constant", "Shape"):
            continue
        floats = [i for i in node.input if i and i not in constants  # shape arithmetic (int64) is no float
                  and elem_type.get(i, onnx.TensorProto.FLOAT) == onnx.TensorProto.FLOAT]
        if not floats:
            continue
        entry = ops.setdefault(node.op_type, [0, 0])
        weight_in_float = node.op_type in COMPUTE and len(node.input) > 1 and node.input[1] in constants
        entry[0] += all(quantized(i) for i in floats) and not weight_in_float
        entry[1] += 1
    return {"quantize_linear": len(quantize), "dequantize_linear": len(dequantize),
            "weights_per_channel": sum(elements(n.input[1]) > 1 for n in weights),
            "weights_per_tensor": sum(elements(n.input[1]) == 1 for n in weights), "biases_int": len(biases),
            "activation_types": dict(Counter(zero_point_type(n) for n in quantize)),
            "activations_per_channel": sum(elements(n.input[1]) > 1 for n in quantize),
            "ops": {k: v for k, v in sorted(ops.items())}}


def child_main(args: argparse.Namespace) -> None:
    import logging

    import torch

    logging.disable(logging.WARNING)
    torch.set_num_threads(QUANTIZE_THREADS)
    work = Path(args.work)
    try:
        row = child(args.child, work, args)
    except Exception as exc:  # noqa: BLE001
        row = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-2000:]}
    (work / "row.json").write_text(json.dumps(row))


# --- parent ------------------------------------------------------------------------------------------

def run_model(name: str, args: argparse.Namespace, versions: dict[str, str]) -> dict[str, Any]:
    """One model in a child process (its own scratch folder, or --keep DIR/NAME), killed past --timeout."""
    started = time.time()
    with tempfile.TemporaryDirectory(prefix=f"nncf-{name}-") as scratch:
        work = Path(args.keep) / name if args.keep else Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, __file__, "--child", name, "--work", str(work), "--images", str(args.images),
                   "--threads", str(args.threads), "--timeout", str(args.timeout)]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        with open(work / "child.stderr", "wb") as stderr:
            proc = subprocess.Popen(command, cwd=work, stdout=subprocess.DEVNULL, stderr=stderr, env=env,
                                    start_new_session=True)
            try:
                proc.wait(timeout=args.timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        path = work / "row.json"
        if path.exists():
            row = json.loads(path.read_text())
        else:
            lines = [line for line in (work / "child.stderr").read_text(errors="replace").splitlines() if line.strip()]
            why = "timeout" if proc.returncode == -signal.SIGKILL else f"exit {proc.returncode}"
            row = {"error": f"child died ({why}): {lines[-1][:240] if lines else 'no output'}"}
    return {"model": name, "family": FAMILIES.get(name, ""), **row, "threads": args.threads, "nncf_venv": versions,
            "total_s": round(time.time() - started, 1), "finished": time.strftime("%Y-%m-%d %H:%M:%S")}


def machine() -> dict[str, Any]:
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "?")
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    return {"cpu": model, "cores": os.cpu_count(), "avx512_vnni": "avx512_vnni" in flags}


HEADERS = ["model", "family", "FP32 p50 ms", "edgekit cos", "edgekit agree", "edgekit p50 ms", "edgekit remedy",
           "NNCF cos", "NNCF agree", "NNCF p50 ms"]
STRUCTURE = ["model", "tool", "activation Q nodes (u8/s8; per-channel)", "weights per-ch/per-t (+int biases)", "Conv+Gemm+MatMul in INT8",
             "op types reading float (float/total)"]


def cell(entry: dict[str, Any], key: str, fmt: str) -> str:
    return "" if entry.get(key) is None else format(entry[key], fmt)


def table_row(row: dict[str, Any]) -> list[str]:
    e, n = row.get("edgekit", {}), row.get("nncf", {})
    remedy = e.get("remedy", "FAIL" if "error" in e else "")
    return [row["model"], row.get("family", ""), cell(row, "fp32_ms", ".1f"),
            cell(e, "cosine", ".4f") or ("FAIL" if "error" in e else ""), cell(e, "agree", ".0%"), cell(e, "ms", ".1f"),
            f"{remedy} ({e['label']})" if "label" in e else remedy,
            cell(n, "cosine", ".4f") or ("FAIL" if "error" in n else ""), cell(n, "agree", ".0%"), cell(n, "ms", ".1f")]


def structure_rows(row: dict[str, Any]) -> list[list[str]]:
    rows = []
    for tool in ("edgekit", "nncf"):
        q = row.get(tool, {}).get("qdq")
        if not q:
            continue
        ops = q["ops"]
        compute = [sum(ops.get(k, [0, 0])[i] for k in COMPUTE) for i in (0, 1)]
        floating = ", ".join(f"{k} {v[1] - v[0]}/{v[1]}" for k, v in ops.items() if v[0] < v[1])
        acts = q["activation_types"]
        rows.append([row["model"], tool, f"{q['quantize_linear']} ({acts.get('u8', 0)}/{acts.get('s8', 0)}; "
                                         f"{q.get('activations_per_channel', 0)})",
                     f"{q['weights_per_channel']}/{q['weights_per_tensor']} (+{q['biases_int']})",
                     f"{compute[0]}/{compute[1]}", floating])
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    host = machine()
    threads = sorted({r.get("threads") for r in rows})
    print(f"\nMachine: {host['cpu']}, {host['cores']} cores, avx512_vnni: {'yes' if host['avx512_vnni'] else 'no'}; "
          f"ORT p50 at {'/'.join(map(str, threads))} intra-op thread(s), FP32 and both INT8 models interleaved.\n")
    print(markdown([table_row(r) for r in rows], HEADERS))
    print()
    for row in rows:
        for tool in ("edgekit", "nncf"):
            if "error" in row.get(tool, {}):
                print(f"- {row['model']}: {tool}: {row[tool]['error']}")
        if "error" in row:
            print(f"- {row['model']}: {row['error']}")
        e, n = row.get("edgekit", {}), row.get("nncf", {})
        if "calibrated_on" in e:
            print(f"- {row['model']}: {row['calib']} calibration images (edgekit calibrated on {e['calibrated_on']}, "
                  f"holding {row['calib'] - e['calibrated_on']} out for its own check; NNCF on all {row['calib']}), "
                  f"{row['held_out']} held out; quantize s: edgekit {e.get('seconds')}, NNCF {n.get('seconds')}")
    print("\nQDQ structure (in INT8: every float input comes from a DequantizeLinear, directly or through "
          f"{', '.join(MOVES)}, or a Concat of such inputs; a Conv, Gemm or MatMul also needs its weight from one):\n")
    print(markdown([r for row in rows for r in structure_rows(row)], STRUCTURE))
    opts = next((r["nncf"]["options"] for r in rows if "options" in r.get("nncf", {})), None)
    if opts:
        print(f"\nNNCF {rows[0].get('nncf_venv', {}).get('nncf', '?')} options: {json.dumps(opts)}")


def summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for row in rows:
        e, n = row.get("edgekit", {}), row.get("nncf", {})
        if "cosine" not in e and "cosine" not in n:
            continue

        def figures(d: dict[str, Any]) -> str:
            return f"{d['cosine']:.4f} / {d['agree']:.0%} / {d['ms']:.1f} ms" if "cosine" in d else "FAIL"

        out.append({"comparison": f"{row['model']}: edgekit ORT INT8 vs NNCF PTQ (same FP32 ONNX and calibration)",
                    "metric": f"cosine / top-1 agree / p50 ({row.get('threads')} thread, FP32 {row.get('fp32_ms')} ms)",
                    "value": f"edgekit {figures(e)} ({e.get('remedy', '-')}); NNCF {figures(n)}"})
    return out


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=DEFAULT, help=f"comma-separated torchvision models (default: {DEFAULT})")
    parser.add_argument("--force", action="store_true", help="redo models already in nncf.jsonl")
    parser.add_argument("--images", type=int, default=64, help="images drawn: half calibrate, half held out (zoo's 64)")
    parser.add_argument("--threads", type=int, default=1, help="ORT intra-op threads for the latency figures")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per model before its child is killed")
    parser.add_argument("--keep", help="keep each model's files (FP32, both INT8, logs) in DIR/MODEL")
    parser.add_argument("--rows", type=Path, default=ROWS, help="the JSON-lines file rows are kept in")
    parser.add_argument("--table", action="store_true", help="print the stored rows as Markdown and exit")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.child:
        child_main(args)
        return
    stored = load_rows(args.rows, "model")
    names = args.only.split(",")
    if not args.table:
        versions = ensure_venv()
        log(f"NNCF venv: {versions}")
        for name in names:
            if name in stored and not args.force:
                log(f"{name}: done before (--force redoes it)")
                continue
            log(f"{name}: running ...")
            stored[name] = run_model(name, args, versions)
            save_row(args.rows, stored[name])
            log(" | ".join(table_row(stored[name])) + f"  ({stored[name]['total_s']:.0f} s)")
    rows = [stored[n] for n in names if n in stored]
    print_table(rows)
    if not args.table:
        save_summary("nncf", summary(list(stored.values())))


if __name__ == "__main__":
    main()
