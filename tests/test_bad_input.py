"""Regressions seen on 0.1.0: each of these inputs gave a traceback or a signal instead of one line.

The README promises: every command fails on bad input with one line naming the file and the field,
exit code 2, nothing half-written. Real files, real runtimes, real child processes.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from edgekit.cli import main
from model_files import assert_one_line_error, run_cli, tiny_onnx, tiny_tflite, truncated


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("models")
    tflite = tiny_tflite(folder / "conv.tflite")
    onnx_path = tiny_onnx(folder / "tiny.onnx")
    return {"tflite": tflite, "onnx": onnx_path, "truncated": truncated(tflite, folder / "truncated.tflite")}


def call(args: list[str]) -> tuple[int, str, str]:
    """``edgekit ARGS`` in this process (safe where no interpreter loads untrusted bytes)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(args)
        except SystemExit as exc:  # argparse
            code = exc.code
    return int(code or 0), out.getvalue(), err.getvalue()


# -- crash isolation: a truncated .tflite segfaulted eval and inspect (exit 139) --------------------

@pytest.mark.parametrize("command", [
    ["eval", "{model}", "--data", "builtin:digits/test", "--recipe", "digits", "--num-samples", "4"],
    ["inspect", "{model}"],
    ["bench", "{model}", "--runs", "2", "--warmup", "0"],
])
def test_truncated_tflite_is_one_line_not_a_signal(models: dict[str, Path], command: list[str]) -> None:
    proc = run_cli([part.format(model=models["truncated"]) for part in command])
    assert proc.returncode >= 0, f"killed by signal {-proc.returncode}"
    assert_one_line_error(proc.returncode, proc.stderr, "truncated.tflite: not a loadable TFLite model")
    assert "benchmarking" not in proc.stdout or command[0] != "bench" or "runs each" in proc.stdout


def test_verify_tflite_passes_a_good_file_and_names_a_renamed_one(models: dict[str, Path], tmp_path: Path) -> None:
    from edgekit.errors import EdgekitError
    from edgekit.runtime.verify import verify_model

    assert verify_model(models["tflite"], invoke=True) == models["tflite"]
    assert verify_model(models["onnx"], session=True) == models["onnx"]
    renamed = tmp_path / "m.onnx"
    renamed.write_bytes(models["tflite"].read_bytes())
    with pytest.raises(EdgekitError, match="m.onnx: not an ONNX model: the content is a TFLite flatbuffer"):
        verify_model(renamed)


def test_bench_runner_killed_by_a_signal_is_one_line(models: dict[str, Path], tmp_path: Path) -> None:
    """A runner that dies by a signal (here: an interpreter that segfaults at once) is named, not a traceback."""
    python = tmp_path / "crashing-python"
    python.write_text("#!/bin/sh\nkill -SEGV $$\n")
    python.chmod(python.stat().st_mode | stat.S_IXUSR)
    code, _, err = call(["bench", str(models["onnx"]), "--runs", "2", "--warmup", "0", "--python", str(python)])
    assert_one_line_error(code, err, "tiny.onnx: the benchmark runner", "crashed with signal 11 SIGSEGV")


@pytest.mark.parametrize(("content", "message"), [
    ("truncated", "not a valid ONNX model"),
    (b"", "the file is empty"),
    (b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4, "not a valid ONNX model"),
    ("tflite", "not an ONNX model: the content is a TFLite flatbuffer"),
])
def test_quantize_rejects_bad_input_models(models: dict[str, Path], tmp_path: Path, content: object,
                                           message: str) -> None:
    model = tmp_path / "in.onnx"
    if content == "truncated":
        truncated(models["onnx"], model, 0.5)
    elif content == "tflite":
        model.write_bytes(models["tflite"].read_bytes())
    else:
        model.write_bytes(content)  # type: ignore[arg-type]
    out = tmp_path / "out.onnx"
    code, _, err = call(["quantize", str(model), "--backend", "ort", "--calib", "builtin:digits/train",
                         "--recipe", "digits", "--num-samples", "8", "-o", str(out)])
    assert_one_line_error(code, err, f"{model}: {message}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.onnx"]


# -- tracebacks on 0.1.0 ----------------------------------------------------------------------

def test_prune_with_a_3d_input_shape(tmp_path: Path) -> None:
    out = tmp_path / "p.pt"
    code, _, err = call(["prune", "edgekit.zoo:digits_cnn", "--ratio", "0.5", "--input-shape", "1,3,224", "-o", str(out)])
    assert_one_line_error(code, err, "--input-shape 1,3,224: the model cannot run on it")
    assert not out.exists()


def test_sparsify_to_pt2(tmp_path: Path) -> None:
    out = tmp_path / "x.pt2"
    code, _, err = call(["sparsify", "edgekit.zoo:digits_cnn", "--sparsity", "0.5", "-o", str(out)])
    assert_one_line_error(code, err, "x.pt2: the output must end in .pt or .pth")
    assert list(tmp_path.iterdir()) == []


def test_bench_python_that_does_not_exist(models: dict[str, Path]) -> None:
    code, out, err = call(["bench", str(models["onnx"]), "--runs", "2", "--python", "/nonexistent"])
    assert_one_line_error(code, err, "--python /nonexistent: no such executable")
    assert "benchmarking" not in out


def test_bench_out_dir_that_is_a_file_fails_before_measuring(models: dict[str, Path], tmp_path: Path) -> None:
    existing = tmp_path / "afile"
    existing.write_text("keep me")
    code, out, err = call(["bench", str(models["onnx"]), "--runs", "2", "--out-dir", str(existing)])
    assert_one_line_error(code, err, "--out-dir", "afile: exists and is not a folder")
    assert "benchmarking" not in out and existing.read_text() == "keep me"


def test_bench_out_dir_follows_the_force_rule(models: dict[str, Path], tmp_path: Path) -> None:
    out_dir = tmp_path / "bench"
    out_dir.mkdir()
    previous = out_dir / "bench-default-local.json"
    previous.write_text("{}")
    code, out, err = call(["bench", str(models["onnx"]), "--runs", "2", "--warmup", "0", "--out-dir", str(out_dir)])
    assert_one_line_error(code, err, "bench-default-local.json: already exists (use --force to overwrite)")
    assert "benchmarking" not in out and previous.read_text() == "{}"
    code, out, err = call(["bench", str(models["onnx"]), "--runs", "2", "--warmup", "0", "--out-dir", str(out_dir),
                           "--force"])
    assert code == 0, err
    assert json.loads(previous.read_text())["schema"] == "edgekit.bench/1"


def _bench_document() -> dict:
    latency = {"min": 1.0, "p50": 1.2, "p90": 1.5, "p99": 2.0, "mean": 1.3, "std": 0.2, "cv": 0.15,
               "p50_ci95": [1.1, 1.3], "runs": 3}
    return {"schema": "edgekit.bench/1", "target": None, "host": "local", "system": {},
            "results": [{"artifact": "m.onnx", "runtime": "onnxruntime", "size_bytes": 10, "latency_ms": latency,
                         "latencies_ms": [1.0, 1.2, 1.5], "noisy": False, "noise_reasons": []}]}


@pytest.mark.parametrize(("folder", "document", "field"), [
    ("eval", {"schema": "edgekit.eval/1"}, "field 'artifact' is missing"),
    ("eval", {"schema": "edgekit.eval/1", "artifact": "m.onnx", "top1": "high"}, "field 'top1' must be a number"),
    ("bench", {"schema": "edgekit.bench/1"}, "field 'host' is missing"),
    ("bench", {"schema": "edgekit.bench/1", "host": "local"}, "field 'results' is missing"),
    ("bench", "no-p50", "field 'results[0].latency_ms.p50' is missing"),
    ("bench", "zero-p50", "field 'results[0].latency_ms.p50' must be a positive number"),
    ("bench", [1, 2], "expected a JSON object at the top level"),
])
def test_report_on_documents_with_missing_fields(tmp_path: Path, folder: str, document: object, field: str) -> None:
    if document in ("no-p50", "zero-p50"):
        full = _bench_document()
        if document == "no-p50":
            del full["results"][0]["latency_ms"]["p50"]
        else:
            full["results"][0]["latency_ms"]["p50"] = 0
        document = full
    (tmp_path / folder).mkdir()
    path = tmp_path / folder / "x.json"
    path.write_text(json.dumps(document))
    code, _, err = call(["report", str(tmp_path)])
    assert_one_line_error(code, err, f"{path}: {field}")
    assert not (tmp_path / "report.json").exists()


def test_report_on_a_complete_hand_made_document(tmp_path: Path) -> None:
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "x.json").write_text(json.dumps(_bench_document()))
    code, _, err = call(["report", str(tmp_path)])
    assert code == 0, err
    assert (tmp_path / "report.html").is_file()


def test_recipe_with_size_zero(models: dict[str, Path], tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: r\nsize: [0, 0]\nmean: [0.5]\nstd: [0.5]\n")
    code, _, err = call(["eval", str(models["onnx"]), "--data", "builtin:digits/test", "--recipe", str(recipe)])
    assert_one_line_error(code, err, f"{recipe}: key 'size'", "between 1 and 8192")


def test_truncated_calibration_cache_entry_is_rebuilt(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from edgekit.data import calibration_tensors

    first = calibration_tensors("builtin:digits/train", "digits", 12, cache=tmp_path, progress=False)
    (entry,) = (tmp_path / "calibration").glob("*.npy")
    data = entry.read_bytes()
    entry.write_bytes(data[: len(data) // 2])  # a crash or a full disk mid-write by another program
    again = calibration_tensors("builtin:digits/train", "digits", 12, cache=tmp_path, progress=False)
    np.testing.assert_array_equal(first, again)
    assert "is corrupt" in caplog.text
    assert entry.read_bytes() == data  # rebuilt in place
    entry.write_bytes(b"\x93NUMPY garbage")
    np.testing.assert_array_equal(calibration_tensors("builtin:digits/train", "digits", 12, cache=tmp_path,
                                                      progress=False), first)


def test_internal_error_line_is_not_a_user_error() -> None:
    """The last-resort handler exists for bugs only: exit 1 and a line that says so (never 2)."""
    import argparse

    from edgekit.cli import dispatch

    def broken(_: argparse.Namespace) -> int:
        raise ZeroDivisionError("boom")

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = dispatch(argparse.Namespace(handler=broken))
    assert code == 1
    assert err.getvalue().count("\n") == 1 and "edgekit: internal error: ZeroDivisionError: boom" in err.getvalue()
    assert "this is a bug in edgekit" in err.getvalue()


@pytest.fixture(autouse=True)
def _no_debug(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EDGEKIT_DEBUG", raising=False)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
