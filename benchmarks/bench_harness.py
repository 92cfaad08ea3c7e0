"""Harness fidelity and SSH: edgekit's measured p50 against a bare timing loop, and local against
SSH-to-localhost, for ResNet-18 INT8 (ONNX Runtime and TFLite), side by side in one run.

Acceptance (issue 6): harness within 3% of the bare loop; local and SSH within 10%. The SSH part
needs OpenSSH's sshd (``apt-get install openssh-server``) and the board-like venv
(``make device-env``); it is skipped with a note otherwise.
"""
from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, log, markdown, save_summary
from models import export, smooth_images
from edgekit.bench import benchmark
from edgekit.quantize.ort import quantize_ort
from edgekit.quantize.tflite import quantize_tflite
from edgekit.runtime import open_runner

RUNS = 200
ROUNDS = 5


def bare_p50_ms(path: Path, threads: int) -> float:
    runner = open_runner(str(path), threads)
    feeds = runner.example_feeds()
    for _ in range(20):
        runner.run(feeds)
    if path.suffix == ".onnx":
        session, names = runner.session, [i.name for i in runner.session.get_inputs()]
        call = lambda: session.run(None, dict(zip(names, feeds)))  # noqa: E731 - the bare loop itself
    else:
        interpreter, index = runner.interpreter, runner.interpreter.get_input_details()[0]["index"]
        def call() -> None:
            interpreter.set_tensor(index, feeds[0])
            interpreter.invoke()
    samples = []
    for _ in range(RUNS):
        start = time.perf_counter()
        call()
        samples.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(samples)


def main() -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    images = smooth_images(40)
    rows, summary = [], []
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        onnx_fp32 = export("resnet18", work, images)
        quantize_ort(onnx_fp32, work / "r18.int8.onnx", images[:32], progress=False)
        quantize_tflite(onnx_fp32, work / "r18.int8.tflite", images[:32], write_fp32=False, progress=False)
        artifacts = [work / "r18.int8.onnx", work / "r18.int8.tflite"]
        ssh = None
        try:
            import device_env
            import sshd_server

            sshd = sshd_server.find_sshd()
            if sshd:
                (work / "sshd").mkdir()
                ssh = sshd_server.SshServer(work / "sshd").start(sshd)
                device_python = str(device_env.ensure(".venv-device"))
        except Exception as exc:  # the SSH half is optional here
            log(f"SSH comparison skipped: {exc}")
            ssh = None
        try:
            for artifact in artifacts:
                ratios, harness_all, bare_all = [], [], []
                for repeat in range(ROUNDS):  # alternate harness and bare loop: drift hits both alike
                    log(f"{artifact.name}: harness vs bare loop, round {repeat + 1}/{ROUNDS}")
                    harness = benchmark([artifact], runs=RUNS, warmup=20, threads=2)["results"][0]["latency_ms"]["p50"]
                    bare = bare_p50_ms(artifact, 2)
                    ratios.append(harness / bare)
                    harness_all.append(harness)
                    bare_all.append(bare)
                ratio = statistics.median(ratios)
                rows.append([artifact.name, f"harness / bare loop (median of {ROUNDS} alternations)",
                             f"{statistics.median(harness_all):.3f}", f"{statistics.median(bare_all):.3f}", f"{ratio:.3f}"])
                summary.append({"comparison": f"harness vs bare loop ({artifact.name})", "metric": "p50 ratio",
                                "value": f"{ratio:.3f}"})
                if ssh:
                    options = {"identity": str(ssh.folder / "client_key"), "known_hosts": str(ssh.known_hosts),
                               "ssh_config": "/dev/null"}
                    local = benchmark([artifact], runs=RUNS, warmup=20, threads=2, local_python=device_python)
                    remote = benchmark([artifact], runs=RUNS, warmup=20, threads=2, host=ssh.host,
                                       remote_python=device_python, ssh_options=options)
                    lp, rp = local["results"][0]["latency_ms"]["p50"], remote["results"][0]["latency_ms"]["p50"]
                    rows.append([artifact.name, "SSH to localhost / local (same board venv)", f"{rp:.3f}", f"{lp:.3f}", f"{rp / lp:.3f}"])
                    summary.append({"comparison": f"SSH vs local ({artifact.name})", "metric": "p50 ratio", "value": f"{rp / lp:.3f}"})
        finally:
            if ssh:
                ssh.stop()
    print("## Harness fidelity and SSH (ResNet-18 INT8, 224x224, 2 threads)\n")
    print(markdown(rows, ["artifact", "comparison", "p50 ms (first)", "p50 ms (second)", "ratio"]))
    save_summary("harness", summary)


if __name__ == "__main__":
    main()
