"""Detection: edgekit's INT8 beside the other tools' INT8 paths, one trained YOLOv8n, one set of calibration images.

One run does it all, in a work folder (default runs/bench-detection, reused: what is there is not redone
unless --force):
  1. builtin:digits-detect written as an Ultralytics folder + data YAML (``write_dataset``): train = its 1,500
     train canvases, val = its 300 val canvases (every row is scored on these), test = the calibration images
     (``--calib`` seeded canvases of train; the YAML key Ultralytics' ``export(split="test")`` and edgekit's
     ``data.yaml#test`` both read: one set of files for every tool);
  2. one YOLOv8n trained from ``yolov8n.yaml`` (random init, 10 classes, 64 px, CPU) by Ultralytics' own trainer
     in .venv-yolo (made here when missing; benchmarks/yolo_runner.py), so every tool starts from one ``best.pt``;
  3. the conversions, each timed (heavy imports done before the clock starts):
     * FP32 ONNX: Ultralytics ``export(format="onnx", opset=17, simplify=True)``; it is also the FP32 model
       every ONNX-fed tool below quantizes (``edgekit_fp32``: one line to change to edgekit's own export of
       ``ultralytics:best.pt`` once that model source is on main);
     * edgekit ORT INT8: ``quantize_ort_workflow`` as ``edgekit quantize --runtime onnxruntime --task detection``
       runs it (its defaults: sensitivity ranking, remedies, the detector head's float-tail candidate);
     * ORT ``quantize_static`` with its defaults (QDQ, MinMax, per-tensor, S8S8, no pre-processing);
     * edgekit TFLite INT8: ``quantize_tflite`` as ``edgekit quantize --runtime tflite --task detection`` runs it
       (it also writes the FP32 .tflite, scored as a reference row);
     * onnx2tf's own INT8: ``onnx2tf -i fp32.onnx -oiqt -cind images calib.npy [[[[0,0,0]]]] [[[[1,1,1]]]]``
       (its default quant type, per-channel); it writes several files: ``*_full_integer_quant.tflite`` (int8 I/O)
       and ``*_integer_quant.tflite`` (float I/O, int8 inside) are scored;
     * Ultralytics ``export(format="onnx", int8=True, data=YAML, split="test")``: its ONNX + ORT ``quantize_static``
       (Conv/Gemm/MatMul quantized, every other node excluded, so the decode stays float);
     * Ultralytics ``export(format="tflite", int8=True, data=YAML, split="test")``: since Ultralytics 8.4.83 this is
       its LiteRT export (litert-torch + ai-edge-quantizer static int8, float I/O), not onnx2tf; its boxes come out
       divided by the input size, so they are multiplied back before scoring;
  4. every file scored by edgekit's host decode + COCO mAP (``Detection.score``, the library call behind
     ``edgekit eval --task detection``) on the same val canvases, and timed: p50 of one inference at ``--threads``
     (default 1), every file of one runtime interleaved in one process (``common.interleaved_p50_ms``), ORT files
     by onnxruntime, TFLite files by edgekit's TFLite runner.

A step that cannot run (a missing package, an exporter error) is its row's one-line error; the run goes on.
Rows go to benchmarks/results/detection.jsonl (the last row of a name wins), a summary to detection.json.

    PYTHONPATH=. python benchmarks/bench_detection.py            # make bench-detection
    PYTHONPATH=. python benchmarks/bench_detection.py --table    # the stored rows as Markdown
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, ROOT, interleaved_p50_ms, load_rows, log, markdown, save_row, save_summary  # noqa: E402

ROWS = RESULTS / "detection.jsonl"
VENV = ROOT / ".venv-yolo"
RUNNER = Path(__file__).resolve().parent / "yolo_runner.py"
# Ultralytics and what its ONNX, ONNX-INT8 and tflite (LiteRT) exports import; torch and torchvision as in .venv
PINS = ["torch==2.14.1", "torchvision==0.29.1", "ultralytics==8.4.190", "onnx==1.19.1", "onnxruntime==1.23.0",
        "onnxslim==0.1.98", "litert-torch==0.10.0", "ai-edge-quantizer==0.10.0", "ai-edge-litert==2.3.0"]
SIDE = 64  # the canvases' side: the model's input size
QUANTIZE_THREADS = 2  # edgekit's own checks while quantizing, as bench_nncf runs it


# --- data --------------------------------------------------------------------------------------------

def write_dataset(root: Path, calib: int) -> Path:
    """builtin:digits-detect as an Ultralytics folder (grayscale PNGs, ``class cx cy w h`` labels) and its
    data YAML; the recipe both tools' tensors follow (RGB from gray, /255, no resize) beside it."""
    from PIL import Image

    from edgekit.data.canvas import CANVAS_COUNTS, render

    yaml = root / "data.yaml"
    if yaml.exists():
        return yaml
    picks = sorted(np.random.default_rng(0).choice(CANVAS_COUNTS["train"], size=calib, replace=False).tolist())
    splits = {"train": [("train", i) for i in range(CANVAS_COUNTS["train"])],
              "val": [("val", i) for i in range(CANVAS_COUNTS["val"])], "calib": [("train", i) for i in picks]}
    for folder, items in splits.items():
        (root / "images" / folder).mkdir(parents=True, exist_ok=True)
        (root / "labels" / folder).mkdir(parents=True, exist_ok=True)
        for split, index in items:
            canvas = render(split, index)
            name = f"{split}-{index:04d}"
            Image.fromarray(canvas.image, "L").save(root / "images" / folder / f"{name}.png")
            x1, y1, x2, y2 = (canvas.boxes / SIDE).T
            lines = [f"{d} {(a + c) / 2:.6f} {(b + e) / 2:.6f} {c - a:.6f} {e - b:.6f}"
                     for d, a, b, c, e in zip(canvas.digits, x1, y1, x2, y2)]
            (root / "labels" / folder / f"{name}.txt").write_text("".join(line + "\n" for line in lines))
    (root / "recipe.yaml").write_text(
        "name: yolo-canvas\ndescription: digits-detect canvases for a 3x64x64 Ultralytics model (RGB, /255)\n"
        f"size: [{SIDE}, {SIDE}]\ncolor_mode: rgb\ngray_to_rgb: true\nscale: 0.00392156862745098\n"
        "mean: [0.0, 0.0, 0.0]\nstd: [1.0, 1.0, 1.0]\n")
    names = ", ".join(f"'{d}'" for d in range(10))
    yaml.write_text(f"# builtin:digits-detect for Ultralytics and edgekit; test = the calibration images\n"
                    f"path: {root}\ntrain: images/train\nval: images/val\ntest: images/calib\nnames: [{names}]\n")
    return yaml


def recipe_of(yaml: Path) -> str:
    return str(yaml.parent / "recipe.yaml")


# --- Ultralytics, in its own virtualenv ---------------------------------------------------------------

def ensure_venv() -> None:
    """Make .venv-yolo when missing: Ultralytics' exporters check (and would pip install) requirements that
    edgekit's environment must not get (litert-torch pulls jax and transformers; its onnx2tf pin is older)."""
    python = VENV / "bin" / "python"
    if python.exists():
        return
    log(f"making {VENV} ({' '.join(PINS)}) ...")
    subprocess.run(["python3.11", "-m", "venv", str(VENV)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", *PINS], check=True)


def yolo(step: str, *args: str, info: Path, timeout: float) -> dict[str, Any]:
    """benchmarks/yolo_runner.py STEP in .venv-yolo, offline and never installing; its info, or an error line."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(YOLO_OFFLINE="1", YOLO_VERBOSE="False", YOLO_AUTOINSTALL="False",
               YOLO_CONFIG_DIR=str(info.parent / "yolo-config"), OMP_NUM_THREADS=str(os.cpu_count() or 1))
    info.unlink(missing_ok=True)
    logfile = info.with_suffix(".log")
    with open(logfile, "w") as output:
        proc = subprocess.run([str(VENV / "bin" / "python"), str(RUNNER), step, *args, str(info)], stdout=output,
                              stderr=subprocess.STDOUT, timeout=timeout, env=env, cwd=info.parent)
    if proc.returncode != 0 or not info.exists():
        return {"error": f"yolo_runner {step} exit {proc.returncode}: {last_error(logfile)}"}
    return json.loads(info.read_text())


def last_error(logfile: Path) -> str:
    """The line that says why: the last exception line, else the last line."""
    lines = [line.strip() for line in logfile.read_text(errors="replace").splitlines() if line.strip()]
    errors = [line for line in lines if "Error" in line or "error:" in line.lower()]
    return (errors or lines or ["no output"])[-1][:300]


# --- the conversions ----------------------------------------------------------------------------------

def timed(make: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """make()'s info with its seconds; an exception is the row's one-line error."""
    started = time.perf_counter()
    try:
        info = make()
    except BaseException as exc:  # noqa: BLE001 - onnx2tf exits with SystemExit on a failed conversion
        if isinstance(exc, KeyboardInterrupt):
            raise
        text = str(exc).strip().splitlines()
        return {"error": f"{type(exc).__name__}: {text[0][:300] if text else ''}",
                "traceback": traceback.format_exc()[-1500:]}
    return {"seconds": round(time.perf_counter() - started, 1), **info}


def edgekit_fp32(work: Path, ultralytics_onnx: dict[str, Any]) -> dict[str, Any]:
    """The FP32 ONNX edgekit quantizes: Ultralytics' own ONNX export, the file every INT8 path here starts
    from, so a difference between rows is the quantizer's alone. (edgekit also reads ``ultralytics:best.pt``
    itself; its export of this checkpoint matches Ultralytics' to 8e-5 px, measured.)"""
    return ultralytics_onnx


def edgekit_ort(fp32: Path, out: Path, calib: np.ndarray) -> dict[str, Any]:
    from edgekit.quantize.ort.workflow import quantize_ort_workflow

    result = quantize_ort_workflow(fp32, out, calib, threads=QUANTIZE_THREADS, force=True, progress=False,
                                   log=lambda _: None, task="detection")
    tail = result.details.get("output_tail") or {}
    return {"file": str(out), "label": result.label, "calibrated_on": result.calibration["num_samples"],
            "head": tail.get("chosen"), "nodes_excluded": len(result.nodes_excluded)}


def ort_defaults(fp32: Path, out: Path, calib: np.ndarray) -> dict[str, Any]:
    """``quantize_static(fp32, out, reader)`` and nothing else: what a user who reads no docs gets."""
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationDataReader, quantize_static

    name = ort.InferenceSession(str(fp32), providers=["CPUExecutionProvider"]).get_inputs()[0].name

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(calib[i:i + 1] for i in range(len(calib)))

        def get_next(self) -> dict[str, np.ndarray] | None:
            item = next(self.items, None)
            return None if item is None else {name: item}

    quantize_static(str(fp32), str(out), Reader())
    return {"file": str(out), "label": "QDQ S8S8 per-tensor MinMax (ORT defaults)", "calibrated_on": len(calib)}


def edgekit_tflite(fp32: Path, out: Path, calib: np.ndarray) -> dict[str, Any]:
    from edgekit.quantize.tflite.quantizer import quantize_tflite

    with contextlib.redirect_stdout(io.StringIO()):
        result = quantize_tflite(fp32, out, calib, force=True, progress=False, task="detection")
    tail = result.details.get("output_tail") or {}
    return {"file": str(out), "fp32_file": str(result.paths.get("fp32", "")), "label": result.label,
            "calibrated_on": result.calibration.get("num_samples"), "head": tail.get("chosen"),
            "float_ops": result.float_ops}


def onnx2tf_int8(fp32: Path, folder: Path, calib: np.ndarray) -> dict[str, Any]:
    """onnx2tf's own INT8 (its ``-oiqt`` with ``-cind``): the calibration tensors NHWC in a .npy, mean 0, std 1.
    Run in ``folder`` on a copy of the FP32 ONNX: onnx2tf writes its simplified graph over its input, and even
    with ``-cind`` it fetches a sample-image file for its own output check unless that file is in its cwd, so
    the first 20 calibration tensors are put there under that name (as edgekit's converter does)."""
    import shutil

    import onnx2tf

    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    nhwc = np.ascontiguousarray(calib.transpose(0, 2, 3, 1), dtype=np.float32)
    npy, model = folder / "calib_nhwc.npy", folder / fp32.name
    np.save(npy, nhwc)
    np.save(folder / "calibration_image_sample_data_20x128x128x3_float32.npy", nhwc[:20])
    shutil.copy2(fp32, model)
    with contextlib.chdir(folder), contextlib.redirect_stdout(io.StringIO()):
        onnx2tf.convert(input_onnx_file_path=str(model), output_folder_path=str(folder),
                        output_integer_quantized_tflite=True, non_verbose=True,
                        custom_input_op_name_np_data_path=[["images", str(npy), [[[[0.0] * 3]]], [[[[1.0] * 3]]]]])
    files = {kind: next(folder.glob(f"*_{kind}.tflite"), None) for kind in ("full_integer_quant", "integer_quant")}
    missing = [k for k, v in files.items() if v is None]
    if missing:
        raise RuntimeError(f"onnx2tf wrote no *_{missing[0]}.tflite in {folder}")
    return {"file": str(files["full_integer_quant"]), "float_io_file": str(files["integer_quant"]),
            "command": f"cd {folder.name} && onnx2tf -i {fp32.name} -o . -oiqt -cind images {npy.name} "
                       "'[[[[0,0,0]]]]' '[[[[1,1,1]]]]'", "calibrated_on": len(calib)}


# --- one run ------------------------------------------------------------------------------------------

# the rows that quantize the FP32 ONNX in this process: (function, what it writes in WORK)
ONNX_FED: dict[str, tuple[Callable[[Path, Path, np.ndarray], dict[str, Any]], str]] = {
    "edgekit_ort": (edgekit_ort, "edgekit-ort-int8.onnx"), "ort_defaults": (ort_defaults, "ort-defaults-int8.onnx"),
    "edgekit_tflite": (edgekit_tflite, "edgekit-int8.tflite"), "onnx2tf_full_integer": (onnx2tf_int8, "onnx2tf")}
ROW_ORDER = ["fp32_onnx", "edgekit_ort", "ort_defaults", "ultralytics_onnx_int8", "fp32_tflite", "edgekit_tflite",
             "onnx2tf_full_integer", "onnx2tf_integer", "ultralytics_tflite_int8"]
WHAT = {
    "fp32_onnx": ("Ultralytics", "FP32 ONNX (export format=onnx, opset 17, simplify)"),
    "edgekit_ort": ("edgekit", "ORT INT8, edgekit quantize --runtime onnxruntime (defaults)"),
    "ort_defaults": ("ONNX Runtime", "quantize_static defaults (QDQ, MinMax, per-tensor S8S8)"),
    "ultralytics_onnx_int8": ("Ultralytics", "export format=onnx int8=True (ORT quantize_static, weighted ops only)"),
    "fp32_tflite": ("edgekit", "FP32 TFLite (edgekit's onnx2tf conversion, the TFLite reference)"),
    "edgekit_tflite": ("edgekit", "TFLite INT8, edgekit quantize --runtime tflite (defaults)"),
    "onnx2tf_full_integer": ("onnx2tf", "onnx2tf -oiqt -cind: *_full_integer_quant.tflite (int8 I/O)"),
    "onnx2tf_integer": ("onnx2tf", "onnx2tf -oiqt -cind: *_integer_quant.tflite (float I/O)"),
    "ultralytics_tflite_int8": ("Ultralytics", "export format=tflite int8=True (LiteRT: litert-torch + ai-edge-quantizer)"),
}


class Conversions:
    """The conversions' infos, kept in WORK/conversions.json so a re-run redoes only what failed or is --force'd."""

    def __init__(self, path: Path, force: bool) -> None:
        self.path, self.force = path, force
        self.done: dict[str, dict[str, Any]] = {} if force or not path.exists() else json.loads(path.read_text())

    def get(self, name: str, make: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        info = self.done.get(name)
        if info is None or "error" in info or ("file" in info and not Path(info["file"]).exists()):
            log(f"{name} ...")
            info = make()
            log(f"{name}: {info.get('error') or str(info.get('seconds')) + ' s'}")
            self.done[name] = info
            self.path.write_text(json.dumps(self.done, indent=1))
        return info


def convert(work: Path, yaml: Path, args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Every row's file and conversion info (or its error)."""
    from edgekit.data import calibration_tensors

    state = Conversions(work / "conversions.json", args.force)
    trained = state.get("train", lambda: yolo("train", str(work), str(yaml), str(args.epochs),
                                              info=work / "train.json", timeout=args.timeout))
    if "error" in trained:
        return {name: {"error": f"no trained model: {trained['error']}"} for name in ROW_ORDER} | {"train": trained}
    best = trained["file"]

    def export(fmt: str, int8: bool) -> Callable[[], dict[str, Any]]:
        tag = f"export-{fmt}{'-int8' if int8 else ''}"
        return lambda: yolo("export", best, fmt, "1" if int8 else "0", str(yaml), "test", info=work / f"{tag}.json",
                            timeout=args.timeout)

    rows: dict[str, dict[str, Any]] = {"train": trained}
    rows["fp32_onnx"] = state.get("fp32_onnx", export("onnx", False))
    fp32 = edgekit_fp32(work, rows["fp32_onnx"])
    calib = calibration_tensors(f"{yaml}#test", recipe_of(yaml), None, progress=False)
    import onnx2tf  # noqa: F401 - imported (with tensorflow) before any clock starts
    import tensorflow  # noqa: F401

    for name, (quantize, output) in ONNX_FED.items():
        if "error" in fp32:
            rows[name] = {"error": f"no FP32 ONNX: {fp32['error']}"}
        else:
            make = (lambda q=quantize, o=output: timed(lambda: q(Path(fp32["file"]), work / o, calib)))
            rows[name] = state.get(name, make)
    rows["ultralytics_onnx_int8"] = state.get("ultralytics_onnx_int8", export("onnx", True))
    rows["ultralytics_tflite_int8"] = state.get("ultralytics_tflite_int8", export("tflite", True))
    tflite, own = rows["edgekit_tflite"], rows["onnx2tf_full_integer"]
    rows["fp32_tflite"] = ({"file": tflite["fp32_file"], "note": "written by the edgekit TFLite row"}
                           if tflite.get("fp32_file") else {"error": tflite.get("error", "no FP32 .tflite")})
    rows["onnx2tf_integer"] = ({**own, "file": own["float_io_file"], "note": "the same onnx2tf run"}
                               if "float_io_file" in own else {"error": own.get("error", "no file")})
    return rows


def outputs_of(name: str, path: Path, x: np.ndarray, classes: int, threads: int) -> np.ndarray:
    """[N, 4 + classes, anchors] raw outputs of one file, in input pixels, as the detection task reads them."""
    from edgekit.runtime import open_runner

    out = open_runner(str(path), threads=threads).predict(x)
    if out.shape[1] != 4 + classes and out.shape[2] == 4 + classes:  # a converter that moved the channels last
        out = out.transpose(0, 2, 1)
    if name == "ultralytics_tflite_int8":  # Ultralytics' LiteRT export divides boxes by the input size
        out = np.concatenate([out[:, :4] * SIDE, out[:, 4:]], axis=1)
    return np.ascontiguousarray(out, np.float32)


def measure(rows: dict[str, dict[str, Any]], yaml: Path, threads: int) -> None:
    """mAP of every file on the val canvases (host decode + COCO mAP), mAP against FP32's detections, and p50."""
    from edgekit.data import load_recipe
    from edgekit.runtime import open_runner
    from edgekit.tasks import get_task

    task = get_task("detection")
    data = task.prepare(str(yaml), load_recipe(recipe_of(yaml)))  # the YAML's val split
    classes = 10
    reference = None
    for name in ROW_ORDER:
        row = rows[name]
        if "error" in row:
            continue
        try:
            out = outputs_of(name, Path(row["file"]), data.inputs, classes, threads)
            if name == "fp32_onnx":
                reference = out
            scores = task.score(out, data, reference)
            row.update(map50_95=scores["map50_95"], map50=scores["map50"], map_vs_fp32=scores["map_vs_reference"],
                       mb=round(Path(row["file"]).stat().st_size / 1e6, 2))
        except Exception as exc:  # noqa: BLE001 - a file that will not run is its row's error
            row["error"] = f"scoring: {type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
    for suffix in (".onnx", ".tflite"):
        names = [n for n in ROW_ORDER if "error" not in rows[n] and rows[n]["file"].endswith(suffix)]
        runners = {n: open_runner(rows[n]["file"], threads=threads) for n in names}
        feeds = {n: r.example_feeds() for n, r in runners.items()}
        p50 = interleaved_p50_ms({n: (lambda r=r, f=feeds[n]: r.run(f)) for n, r in runners.items()})
        for n in names:
            rows[n].update(p50_ms=round(p50[n], 3), runtime=f"{runners[n].package} {runners[n].version}")
    log(f"{data.num_samples} val canvases, {threads} thread(s)")


def machine() -> dict[str, Any]:
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "?")
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    return {"cpu": model, "cores": os.cpu_count(), "avx512_vnni": "avx512_vnni" in flags}


# --- tables -------------------------------------------------------------------------------------------

HEADERS = ["row", "tool", "what", "mAP50-95", "mAP50", "mAP vs FP32", "p50 ms", "convert s", "MB"]


def cell(row: dict[str, Any], key: str, fmt: str) -> str:
    return "" if row.get(key) is None else format(row[key], fmt)


def table_row(row: dict[str, Any]) -> list[str]:
    tool, what = WHAT.get(row["row"], ("", ""))
    if "error" in row:
        return [row["row"], tool, what, "n/a", "", "", "", "", ""]
    return [row["row"], tool, what, cell(row, "map50_95", ".2f"), cell(row, "map50", ".2f"), cell(row, "map_vs_fp32", ".2f"),
            cell(row, "p50_ms", ".3f"), cell(row, "seconds", ".1f"), cell(row, "mb", ".2f")]


def print_table(rows: list[dict[str, Any]]) -> None:
    first = rows[0] if rows else {}
    host, train = first.get("machine", {}), first.get("train", {})
    print(f"\nMachine: {host.get('cpu', '?')}, {host.get('cores', '?')} cores; model: YOLOv8n trained by Ultralytics "
          f"{train.get('versions', {}).get('ultralytics', '?')} ({first.get('epochs')} epochs, {train.get('seconds')} s); "
          f"scored on {first.get('val_images')} val canvases, calibrated on the same {first.get('calib_images')} canvases; "
          f"p50 at {first.get('threads')} thread(s), every file of a runtime interleaved.\n")
    print(markdown([table_row(r) for r in rows], HEADERS))
    notes = [f"- {r['row']}: {r['error']}" for r in rows if "error" in r]
    notes += [f"- {r['row']}: {r['label']}" + (f"; head: {r['head']}" if r.get("head") else "")
              + (f"; calibrated on {r['calibrated_on']}" if r.get("calibrated_on") else "")
              for r in rows if "label" in r and "error" not in r]
    notes += [f"- {r['row']}: {r['command']}" for r in rows if "command" in r and r["row"] == "onnx2tf_full_integer"]
    if notes:
        print("\n" + "\n".join(notes))


def summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for row in rows:
        tool, what = WHAT.get(row["row"], ("", ""))
        value = f"n/a: {row['error']}" if "error" in row else (
            f"{row.get('map50_95')} / {row.get('map50')} / {row.get('p50_ms')} ms / {row.get('seconds', '-')} s / {row.get('mb')} MB")
        out.append({"comparison": f"YOLOv8n digits-detect: {tool}: {what}",
                    "metric": f"mAP50-95 / mAP50 / p50 ({row.get('threads')} thread) / conversion / size", "value": value})
    return out


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "bench-detection", help="work folder (reused)")
    parser.add_argument("--epochs", type=int, default=15, help="YOLOv8n training epochs (CPU, 64 px)")
    parser.add_argument("--calib", type=int, default=200, help="calibration canvases (a seeded sample of train)")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads for the latency figures")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per Ultralytics step")
    parser.add_argument("--force", action="store_true", help="redo the training and every conversion")
    parser.add_argument("--rows", type=Path, default=ROWS, help="the JSON-lines file rows are kept in")
    parser.add_argument("--table", action="store_true", help="print the stored rows as Markdown and exit")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if not args.table:
        import logging

        logging.disable(logging.WARNING)
        ensure_venv()
        args.work.mkdir(parents=True, exist_ok=True)
        yaml = write_dataset(args.work / "digits", args.calib)
        rows = convert(args.work, yaml, args)
        measure(rows, yaml, args.threads)
        common = {"machine": machine(), "threads": args.threads, "epochs": args.epochs, "calib_images": args.calib,
                  "val_images": 300, "train": rows["train"], "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
        for name in ROW_ORDER:
            save_row(args.rows, {"row": name, **{k: v for k, v in rows[name].items() if k != "traceback"}, **common})
    stored = load_rows(args.rows, "row")
    ordered = [stored[n] for n in ROW_ORDER if n in stored]
    print_table(ordered)
    if not args.table:
        save_summary("detection", summary(ordered))


if __name__ == "__main__":
    main()
