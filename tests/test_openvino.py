"""OpenVINO as a third runtime, through the one runtime registry: real OpenVINO, ORT and runner processes."""
from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import device_env
from edgekit.cli import main

# OpenVINO is never imported into this process (edgekit runs it in a child): found, not loaded
if importlib.util.find_spec("openvino") is None:
    pytest.skip("openvino is not installed", allow_module_level=True)
OPENVINO_VERSION = importlib.metadata.version("openvino")


@pytest.fixture(scope="module")
def int8_onnx(digits_fp32_onnx: Path, digits_calib: np.ndarray, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The digits CNN quantized by edgekit's ORT path: QDQ, U8S8, per-channel."""
    from edgekit.quantize.ort import quantize_ort

    out = tmp_path_factory.mktemp("ov") / "digits.int8.onnx"
    quantize_ort(digits_fp32_onnx, out, digits_calib, progress=False)
    return out


def _runtime_precisions(runner) -> set[str]:
    """The precisions OpenVINO's CPU plugin chose for the compiled graph's nodes (reported by the child)."""
    return set(runner.describe()["precisions"])


def test_openvino_matches_ort_fp32_and_runs_qdq_int8(digits_fp32_onnx: Path, int8_onnx: Path,
                                                   digits_calib: np.ndarray) -> None:
    from edgekit.runtime import open_runner

    x = digits_calib[:32]
    fp32_ort = open_runner(str(digits_fp32_onnx), 1).predict(x)
    fp32_ov_runner = open_runner(str(digits_fp32_onnx), 1, runtime="openvino")
    assert fp32_ov_runner.backend == "openvino" and fp32_ov_runner.inputs[0].shape == [1, 3, 32, 32]
    fp32_ov = fp32_ov_runner.predict(x)
    scale = float(np.abs(fp32_ort).max())
    assert np.abs(fp32_ov - fp32_ort).max() < 1e-3 * scale, np.abs(fp32_ov - fp32_ort).max()

    int8_ort = open_runner(str(int8_onnx), 1).predict(x)
    int8_ov_runner = open_runner(str(int8_onnx), 1, runtime="ov")  # an alias
    int8_ov = int8_ov_runner.predict(x)
    assert {"u8", "i8"} & _runtime_precisions(int8_ov_runner), "QDQ was not run as INT8"
    assert "u8" not in _runtime_precisions(fp32_ov_runner) and "i8" not in _runtime_precisions(fp32_ov_runner)
    # different INT8 kernels (ORT MLAS vs oneDNN): close, not equal; the same decisions nearly always
    assert np.abs(int8_ov - int8_ort).max() < 0.1 * scale, np.abs(int8_ov - int8_ort).max()
    assert np.mean(int8_ov.argmax(1) == int8_ort.argmax(1)) >= 0.9


def test_openvino_ir_runs_by_suffix_and_needs_its_weights(digits_fp32_onnx: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    from edgekit.runtime import open_runner

    xml = tmp_path / "digits.xml"
    # Core.read_model, the path the runner takes, rather than the converter's Python front end
    subprocess.run([sys.executable, "-c", "import sys, openvino as ov; "
                    "ov.save_model(ov.Core().read_model(sys.argv[1]), sys.argv[2], compress_to_fp16=False)",
                    str(digits_fp32_onnx), str(xml)], check=True, capture_output=True, timeout=300)
    runner = open_runner(str(xml), 1)
    assert runner.backend == "openvino"  # .xml has one runtime: the registry's default for the suffix
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    np.testing.assert_allclose(runner.predict(x), open_runner(str(digits_fp32_onnx), 1).predict(x), atol=1e-3)
    assert main(["bench", str(xml), "--runs", "5", "--warmup", "1"]) == 0
    assert "openvino" in capsys.readouterr().out
    xml.with_suffix(".bin").unlink()
    assert main(["bench", str(xml), "--runs", "5"]) == 2
    err = capsys.readouterr().err
    assert "digits.xml: the OpenVINO IR's weights digits.bin are missing" in err and err.count("\n") == 1


def test_bench_runtime_openvino_and_a_profile_listing_both(digits_fp32_onnx: Path, int8_onnx: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ov.json"
    assert main(["bench", str(int8_onnx), "--runtime", "openvino", "--runs", "10", "--warmup", "2",
                 "--json", str(out)]) == 0
    (result,) = json.loads(out.read_text())["results"]
    assert result["runtime"] == "openvino" and result["runtime_package"] == "openvino"
    assert result["runtime_version"].startswith(OPENVINO_VERSION)
    capsys.readouterr()
    # the shipped x86 profile lists onnxruntime, tflite and openvino: an .onnx runs on the two that take it
    assert main(["bench", str(digits_fp32_onnx), str(int8_onnx), "--target", "x86-64-avx2", "--runs", "10",
                 "--warmup", "2", "--json", str(out), "--force"]) == 0
    document = json.loads(out.read_text())
    pairs = [(r["artifact"], r["runtime"]) for r in document["results"]]
    assert pairs == [(digits_fp32_onnx.name, "onnxruntime"), (digits_fp32_onnx.name, "openvino"),
                     (int8_onnx.name, "onnxruntime"), (int8_onnx.name, "openvino")]
    assert all(r["threads"] == 2 and r["latency_ms"]["p50"] > 0 for r in document["results"])
    rows = [line.split()[:2] for line in capsys.readouterr().out.splitlines() if line.startswith("digits.")]
    assert [runtime for _, runtime in rows] == ["onnxruntime", "openvino", "onnxruntime", "openvino"]


def test_unknown_suffix_and_runtime_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from edgekit.runtime import open_runner

    model = tmp_path / "model.pb"
    model.write_bytes(b"\x08\x01")
    assert main(["bench", str(model)]) == 2
    err = capsys.readouterr().err
    assert f"{model}: expected a .onnx, .tflite or .xml artifact, not .pb" in err and err.count("\n") == 1
    with pytest.raises(ValueError, match=r"model.pb: no runtime runs \.pb files \(known: \.onnx, \.tflite, \.xml\)"):
        open_runner(str(model))
    with pytest.raises(ValueError, match=r"unknown runtime 'tensorrt' \(known: onnxruntime, tflite, openvino\)"):
        open_runner(str(tmp_path / "m.onnx"), runtime="tensorrt")
    with pytest.raises(ValueError, match="openvino does not run .tflite files"):
        open_runner(str(tmp_path / "m.tflite"), runtime="openvino")


def test_requested_runtime_missing_is_an_error_a_suggested_one_a_note(digits_fp32_onnx: Path, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """The board-like venv has onnxruntime and tflite-runtime, no openvino."""
    board = str(device_env.ensure(".venv-device"))
    out = tmp_path / "b.json"
    assert main(["bench", str(digits_fp32_onnx), "--runtime", "openvino", "--python", board, "--runs", "3",
                 "--json", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"local: {board} has no openvino runtime for digits.onnx; install it there: pip install openvino" in err
    assert err.count("\n") == 1 and not out.exists()
    assert main(["bench", str(digits_fp32_onnx), "--target", "x86-64-avx2", "--python", board, "--runs", "3",
                 "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.count("note: openvino is not installed on local (pip install openvino)") == 1
    document = json.loads(out.read_text())
    assert [r["runtime"] for r in document["results"]] == ["onnxruntime"]
    assert any("openvino is not installed" in note for note in document["notes"])


def test_profile_runtimes_are_registry_names(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    from edgekit.targets import load_target

    profile = yaml.safe_load(Path(load_target("x86-64-avx2").source).read_text())
    profile.update(name="mine", runtimes=["onnxruntime", "openvino", "tensorrt"])
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump(profile))
    assert main(["targets", "show", "mine", "--targets-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "mine.yaml" in err and "runtimes" in err and "unknown runtime 'tensorrt'" in err and err.count("\n") == 1


def test_runner_folder_runs_alone_with_openvino(digits_fp32_onnx: Path, tmp_path: Path) -> None:
    """The uploaded folder, copied away from edgekit, runs OpenVINO with this interpreter."""
    import os
    import shutil
    import subprocess

    from edgekit.bench.local import RUN_MODULE, RUNNER

    shutil.copytree(RUNNER, tmp_path / RUNNER.name, ignore=shutil.ignore_patterns("__pycache__"))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, *RUN_MODULE, "--runtime", "openvino", "--runs", "3", "--",
                           str(digits_fp32_onnx)], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    document = json.loads(proc.stdout)
    assert document["results"][0]["runtime"] == "openvino" and "openvino" in document["system"]["runtimes"]


def test_each_runtime_has_its_own_accuracy_in_the_report(digits_fp32_onnx: Path, int8_onnx: Path,
                                                          tmp_path: Path) -> None:
    """A report row of OpenVINO carries the accuracy OpenVINO computed, not ONNX Runtime's: INT8
    arithmetic differs between runtimes (rounding, fused requantization)."""
    from edgekit.evaluate import evaluate_many
    from edgekit.report.collect import collect

    run = tmp_path / "run"
    (run / "artifacts").mkdir(parents=True)
    (run / "eval").mkdir()
    results = evaluate_many([digits_fp32_onnx, int8_onnx], "builtin:digits/test", "digits",
                            reference=digits_fp32_onnx, also_on=["openvino", "tflite"])  # tflite runs no .onnx
    assert [(r.path.name, r.runtime) for r in results] == [
        (digits_fp32_onnx.name, "onnxruntime"), (digits_fp32_onnx.name, "openvino"),
        (int8_onnx.name, "onnxruntime"), (int8_onnx.name, "openvino")]
    by_runtime = {r.runtime: r.metrics for r in results if r.path == int8_onnx}
    assert by_runtime["onnxruntime"]["cosine"] > 0.99 and by_runtime["openvino"]["cosine"] > 0.99
    for r in results:
        suffix = "" if r.runtime == "onnxruntime" else f".{r.runtime}"
        document = r.as_dict()
        if r.path == int8_onnx and r.runtime == "openvino":
            document["top1"] = -1.0  # a marker: the report must take this document for the OpenVINO row
            document.pop("per_item")  # whose per-image bits would no longer match its top-1 (validate checks)
        (run / "eval" / f"{r.path.name}{suffix}.json").write_text(json.dumps(document))
    assert main(["bench", str(digits_fp32_onnx), str(int8_onnx), "--target", "x86-64-avx2", "--runs", "5",
                 "--warmup", "1", "--out-dir", str(run / "bench")]) == 0
    rows = {(r["artifact"], r["runtime"]): r for r in collect(run)["rows"]}
    assert rows[(int8_onnx.name, "openvino")]["top1"] == -1.0
    assert rows[(int8_onnx.name, "onnxruntime")]["top1"] == by_runtime["onnxruntime"]["top1"]


def test_eval_with_a_runtime_that_cannot_run_the_file_is_one_line(
        digits_fp32_onnx: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "e.json"
    assert main(["eval", str(digits_fp32_onnx), "--data", "builtin:digits/test", "--recipe", "digits",
                 "--runtime", "tflite", "--json", str(out)]) == 2
    err = capsys.readouterr().err
    assert "tflite does not run .onnx files" in err and err.count("\n") == 1
    assert not out.exists()


def test_eval_with_an_unknown_runtime_is_refused_by_the_parser(digits_fp32_onnx: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    """--runtime offers the registry's names in every command, so argparse refuses the rest (exit 2)."""
    out = tmp_path / "e.json"
    with pytest.raises(SystemExit) as exit_:
        main(["eval", str(digits_fp32_onnx), "--data", "builtin:digits/test", "--runtime", "tensorrt",
              "--json", str(out)])
    assert exit_.value.code == 2
    assert "argument --runtime: invalid choice: 'tensorrt'" in capsys.readouterr().err
    assert not out.exists()


def test_openvino_runs_in_a_child_whose_crash_is_one_line(digits_fp32_onnx: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """edgekit opens OpenVINO in a child process: a real SIGSEGV there is an EdgekitError naming the
    file and the signal, and edgekit's process goes on; closing the runner ends the child."""
    import os
    import signal

    from edgekit.errors import EdgekitError
    from edgekit.runtime import open_runner
    from edgekit.runtime.child import ChildRunner

    x = np.zeros((2, 3, 32, 32), np.float32)
    runner = open_runner(str(digits_fp32_onnx), 1, runtime="openvino")
    assert isinstance(runner, ChildRunner) and runner._proc.pid != os.getpid()
    assert "openvino" not in sys.modules  # nothing of OpenVINO was loaded here
    assert runner.predict(x).shape == (2, 10)
    os.kill(runner._proc.pid, signal.SIGSEGV)
    with pytest.raises(EdgekitError, match=r"digits.onnx: the runtime crashed with signal 11 SIGSEGV"):
        runner.predict(x)
    runner.close()
    second = open_runner(str(digits_fp32_onnx), 1, runtime="openvino")
    pid = second._proc.pid
    second.close()
    assert second._proc.returncode == 0  # ended by end of input, not killed
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(digits_fp32_onnx.read_bytes()[:4000])
    with pytest.raises(EdgekitError, match=r"bad.onnx: cannot be loaded by openvino \("):
        open_runner(str(bad), 1, runtime="openvino")
