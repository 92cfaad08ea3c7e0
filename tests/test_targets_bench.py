"""Target profiles and local benchmarking with real runtimes."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgekit.bench import benchmark, compare, summarize
from edgekit.cli import main
from edgekit.errors import EdgekitError
from edgekit.targets import list_targets, load_target

REQUIRED = {"x86-64-avx2", "x86-64-avx512-vnni", "rpi3", "rpi4", "rpi5", "android-arm64", "jetson-orin-nano-cpu"}


def test_shipped_profiles_load_and_drive_quantization_defaults() -> None:
    names = {p.name for p in list_targets()}
    assert REQUIRED <= names
    rpi5 = load_target("rpi5")
    assert rpi5.arch == "aarch64" and "asimddp" in rpi5.isa_features and rpi5.pruning.channel_multiple == 16
    from edgekit.quantize.ort import resolve_settings

    assert resolve_settings(load_target("rpi4")).activation_type == "int8"
    assert resolve_settings(load_target("x86-64-avx2")).activation_type == "uint8"
    assert resolve_settings(load_target("rpi4"), {"activation_type": "uint8"}).activation_type == "uint8"  # a flag wins


@pytest.mark.parametrize(("patch", "message"), [
    ({"threads": "four"}, "key 'threads'"),
    ({"onnxruntime": {"fromat": "QDQ"}}, "key 'onnxruntime.fromat': unknown key"),
    ({"colour": 1}, "key 'colour': unknown key"),
    ({"description": None}, "key 'description'"),
])
def test_bad_profile_names_file_and_key(patch: dict, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    profile = yaml.safe_load(Path(load_target("rpi4").source).read_text())
    profile.update(patch)
    profile["name"] = "mine"
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(profile))
    with pytest.raises(EdgekitError) as info:
        load_target("mine", tmp_path)
    assert str(path) in str(info.value) and message in str(info.value)
    assert main(["targets", "show", "mine", "--targets-dir", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err


def test_user_profiles_and_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    profile = yaml.safe_load(Path(load_target("rpi4").source).read_text())
    profile.update(name="lab-board", threads=3)
    (tmp_path / "lab.yaml").write_text(yaml.safe_dump(profile))
    assert main(["targets", "list", "--targets-dir", str(tmp_path)]) == 0
    assert "lab-board" in capsys.readouterr().out
    assert main(["targets", "show", "rpi5"]) == 0
    assert "asimddp" in capsys.readouterr().out
    assert main(["targets", "show", "nope"]) == 2
    assert "no target profile named 'nope'" in capsys.readouterr().err


def test_summarize_on_known_latencies() -> None:
    stats = summarize([0.001, 0.002, 0.003, 0.004, 0.005])
    assert stats["min"] == pytest.approx(1.0) and stats["p50"] == pytest.approx(3.0)
    assert stats["mean"] == pytest.approx(3.0) and stats["std"] == pytest.approx(np.std([1, 2, 3, 4, 5], ddof=1))
    assert stats["p50_ci95"][0] <= 3.0 <= stats["p50_ci95"][1]
    rng = np.random.default_rng(0)
    fast = summarize(rng.normal(0.010, 0.0002, 200))
    slow = summarize(rng.normal(0.012, 0.0002, 200))
    same = summarize(rng.normal(0.010, 0.0002, 200))
    assert compare(fast, slow) == "faster" and compare(slow, fast) == "slower"
    assert compare(fast, same) == "no measurable difference"


def test_local_bench_onnx_and_tflite(digits_fp32_onnx: Path, digits_calib: np.ndarray, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    from edgekit.quantize.tflite import quantize_tflite

    tfl = tmp_path / "d.int8.tflite"
    quantize_tflite(digits_fp32_onnx, tfl, digits_calib[:32], write_fp32=False, progress=False)
    out = tmp_path / "bench.json"
    assert main(["bench", str(digits_fp32_onnx), str(tfl), "--target", "x86-64-avx2", "--runs", "30",
                 "--json", str(out)]) == 0
    assert "p50 ms" in capsys.readouterr().out
    document = json.loads(out.read_text())
    assert document["schema"] == "edgekit.bench/1" and document["target"] == "x86-64-avx2"
    assert document["settings"]["threads"] == 2 and document["system"]["cpu_count"] >= 1
    for result in document["results"]:
        latency = result["latency_ms"]
        assert latency["runs"] == 30 and latency["min"] <= latency["p50"] <= latency["p90"] <= latency["p99"]
        assert len(result["latencies_ms"]) == 30 and result["peak_rss_bytes"] > 0 and result["load_s"] > 0
        assert isinstance(result["noisy"], bool)
    runtimes = [r["runtime"] for r in document["results"]]  # the profile lists openvino too: the .onnx twice
    assert runtimes == ["onnxruntime", "openvino", "tflite"] if "openvino" in document["system"]["runtimes"] else \
        ["onnxruntime", "tflite"]
    assert main(["bench", str(tfl), "--runs", "5", "--json", str(out)]) == 2  # exists, no --force
    assert "already exists" in capsys.readouterr().err
    # the profile's tflite section: its threads for .tflite files, delegate none = no XNNPACK; cores: a note
    import os

    import yaml

    profile = yaml.safe_load(Path(load_target("x86-64-avx2").source).read_text())
    profile.update(name="lab", cores=8, threads=8, runtimes=["onnxruntime", "tflite"],
                   tflite={"threads": 1, "delegate": "none"})
    (tmp_path / "lab.yaml").write_text(yaml.safe_dump(profile))
    assert main(["bench", str(digits_fp32_onnx), str(tfl), "--target", "lab", "--targets-dir", str(tmp_path),
                 "--runs", "5", "--json", str(out), "--force"]) == 0
    document = json.loads(out.read_text())
    onnx_result, tflite_result = document["results"]
    assert onnx_result["threads"] == 8 and "delegate" not in onnx_result
    assert tflite_result["threads"] == 1 and tflite_result["delegate"] == "none"
    contended = (os.cpu_count() or 1) < 8
    assert ("note: target lab has 8 cores and runs 8 threads; local has" in capsys.readouterr().out) == contended
    assert any("8 threads" in n for n in document.get("notes", [])) == contended


def test_bench_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", str(tmp_path / "none.onnx")]) == 2
    assert "none.onnx: artifact not found" in capsys.readouterr().err
    (tmp_path / "m.pt").write_bytes(b"x")
    assert main(["bench", str(tmp_path / "m.pt")]) == 2
    assert "m.pt: expected a .onnx, .tflite or .xml artifact, not .pt" in capsys.readouterr().err


def test_harness_adds_almost_nothing(digits_fp32_onnx: Path) -> None:
    """The harness p50 against a bare session.run loop on the same model and threads, each in a fresh
    process (a loop inside this pytest process, with torch and TensorFlow loaded, ran slower than the
    harness's own process and failed the lower bound once); loose bound here, exact in benchmarks/."""
    import subprocess
    import sys

    bare_loop = (
        "import sys, time, numpy as np, onnxruntime as ort\n"
        "o = ort.SessionOptions(); o.intra_op_num_threads = 1\n"
        "s = ort.InferenceSession(sys.argv[1], o); x = np.zeros((1, 3, 32, 32), np.float32)\n"
        "for _ in range(20): s.run(None, {'input': x})\n"
        "t = []\n"
        "for _ in range(200):\n"
        "    a = time.perf_counter(); s.run(None, {'input': x}); t.append(time.perf_counter() - a)\n"
        "print(1000 * float(np.median(t)))\n")
    bare_ms = float(subprocess.run([sys.executable, "-c", bare_loop, str(digits_fp32_onnx)], capture_output=True,
                                   text=True, check=True).stdout)
    harness = benchmark([digits_fp32_onnx], runs=200, warmup=20, threads=1)["results"][0]["latency_ms"]["p50"]
    ratio = harness / bare_ms
    assert 0.6 < ratio < 1.6, ratio  # a separate process each: loose here, exact in benchmarks/


def test_peak_memory_is_the_artifacts_not_the_parents(digits_fp32_onnx: Path) -> None:
    """A forked runner must not report edgekit's own peak (ru_maxrss survives fork+exec on Linux)."""
    import numpy as np

    from edgekit.bench.local import bench_local
    from edgekit.bench.plan import plan

    ballast = np.ones(3 * 2**30 // 8)  # 3 GiB touched in this process, the runner's parent
    document = bench_local(plan([digits_fp32_onnx]), runs=5, warmup=1)
    peak = document["results"][0]["peak_rss_bytes"]
    assert ballast[-1] == 1.0
    assert 0 < peak < 2 * 2**30, f"runner peak {peak / 2**30:.2f} GiB includes the parent's 3 GiB"
