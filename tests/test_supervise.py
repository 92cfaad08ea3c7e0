"""A native crash, a kill or an interrupt of an edgekit command, with real signals in real processes:
one line and an exit code, never a signal, and nothing half-written (edgekit.supervise)."""
from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import signal
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def digits_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from edgekit.export import export_onnx
    from edgekit.zoo import digits_cnn

    path = tmp_path_factory.mktemp("supervise") / "m.onnx"
    export_onnx(digits_cnn(width=8).eval(), torch.zeros(1, 3, 32, 32), path)
    return path


def quantize_command(model: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "edgekit", "quantize", str(model), "--backend", "tflite", "--calib",
            "builtin:digits/train", "--recipe", "digits", "--num-samples", "40", "-o", str(out)]


def worker_of(supervisor: int) -> int | None:
    """The supervised command's process: the only child of the ``edgekit`` process."""
    try:
        children = Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()
    except OSError:
        return None
    return int(children[0]) if children else None


def converting(proc: subprocess.Popen, out: Path, timeout: float = 300) -> int:
    """Wait until the worker is inside onnx2tf (its scratch folder holds the model copy); its pid."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        worker = worker_of(proc.pid)
        if worker and any(any(p.rglob("*.onnx")) for p in out.parent.glob(f".{out.name}.{worker}.*.tmp")):
            return worker
        time.sleep(0.05)
    raise AssertionError(f"never reached the conversion: {proc.communicate()}")


@pytest.mark.parametrize("signum", [signal.SIGABRT, signal.SIGSEGV, signal.SIGKILL])
def test_a_worker_that_dies_of_a_signal_is_one_line_exit_2_and_nothing_left(signum: int, digits_onnx: Path,
                                                                             tmp_path: Path) -> None:
    out = tmp_path / "q.int8.tflite"
    proc = subprocess.Popen(quantize_command(digits_onnx, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    worker = converting(proc, out)
    assert worker != proc.pid
    os.kill(worker, signum)  # what TensorFlow's abort() or a bad pointer does to the process
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgekit: error: quantize "), stderr
    if signum == signal.SIGKILL:
        assert re.search(r"was killed \(SIGKILL\) by another process or the system, at \d+\.\d GB peak memory",
                         lines[0]), lines[0]
    else:  # the Python stack at the signal names edgekit's step (the library too, when its code was on top)
        name = signal.Signals(signum).name
        assert re.search(rf"crashed \({name}\) (inside \w+|in native code), during \w+ \(edgekit/[\w/]+\.py:\d+\)",
                         lines[0]), lines[0]
    assert list(tmp_path.iterdir()) == []  # no scratch folder, no lock, no output


def test_terminal_ctrl_c_ends_the_supervised_command_in_one_line(digits_onnx: Path, tmp_path: Path) -> None:
    """Ctrl-C on a real terminal reaches the whole foreground group, supervisor and worker at once:
    the command ends with one "interrupted" line and exit 130 (not a signal, not a crash line) and
    leaves nothing behind."""
    out = tmp_path / "q.int8.tflite"
    leader, follower = pty.openpty()
    proc = subprocess.Popen(quantize_command(digits_onnx, out), stdin=follower, stdout=follower, stderr=follower,
                            start_new_session=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))  # the pty: its terminal
    os.close(follower)
    converting(proc, out)
    os.write(leader, b"\x03")  # the terminal's interrupt character: SIGINT to the foreground group
    printed = b""
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        if select.select([leader], [], [], 0.2)[0]:
            try:
                printed += os.read(leader, 4096)
            except OSError:
                break
    proc.wait(timeout=30)
    os.close(leader)
    text = printed.decode(errors="replace")
    assert proc.returncode == 130, text
    assert text.count("edgekit: interrupted") == 1 and "Traceback" not in text, text
    assert list(tmp_path.iterdir()) == []


def test_a_killed_supervisor_takes_its_worker_with_it(digits_onnx: Path, tmp_path: Path) -> None:
    out = tmp_path / "q.int8.tflite"
    proc = subprocess.Popen(quantize_command(digits_onnx, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    worker = converting(proc, out)
    proc.kill()
    proc.wait(timeout=30)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _running(worker):
        time.sleep(0.05)
    assert not _running(worker), "the command ran on without its edgekit process"


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


CRASHING_COMMAND = """
import ctypes, sys
from edgekit import atomic, log, worker
worker.become_worker()
log.configure(0)
out = sys.argv[1]
atomic.claim(out)  # announces the folder
with atomic.atomic_path(out, False) as tmp:
    open(tmp, "wb").write(b"half")
    with log.native_output():  # what TensorFlow says while edgekit hides it
        libc = ctypes.CDLL(None)
        for line in (b"W0000 a warning at import\\n", b"F0000 kernel.cc:7] Check failed: scale > 0 (0 vs. 0)\\n"):
            libc.write(2, line, len(line))
        libc.abort()
"""


def test_a_native_abort_is_named_with_the_librarys_last_words_and_its_files_swept(tmp_path: Path,
                                                                                  capfd: pytest.CaptureFixture) -> None:
    from edgekit.supervise import run_supervised

    script = tmp_path / "crashing.py"
    script.write_text(CRASHING_COMMAND)
    out = tmp_path / "out" / "model.onnx"
    out.parent.mkdir()
    code = run_supervised([str(out)], program=[sys.executable, str(script)])
    err = capfd.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("edgekit: error: "), err
    assert 'crashed (SIGABRT) in native code (its last message: "F0000 kernel.cc:7] Check failed: scale > 0' in err
    assert "a warning" not in err
    assert list(out.parent.iterdir()) == []  # the half-written .part file and the lock are gone


CRASH_INSIDE_NUMPY = """
import ctypes, faulthandler, sys
import numpy as np
from edgekit.quantize import fidelity
faulthandler.enable(open(sys.argv[1], "w"), all_threads=True)
first = fidelity.Fidelity(0.5, 50.0, 8, "held-out")  # not faithful: a second opinion is measured
null = np.ctypeslib.as_array((ctypes.c_float * 1024).from_address(16))  # an array at address 16
fidelity.second_opinion(lambda *args, **options: null.sum(), "m.int8.onnx", first, 0.005, delegate="none")
"""


def test_the_crash_site_is_read_from_a_real_faulthandler_dump(tmp_path: Path) -> None:
    """What names a crash (edgekit's supervisor and the zoo's rows): the innermost edgekit step on
    the crashing thread's stack, from the dump Python's faulthandler wrote as the process aborted."""
    from edgekit.supervise import crash_site

    script, dump = tmp_path / "crash.py", tmp_path / "faults.txt"
    script.write_text(CRASH_INSIDE_NUMPY)
    done = subprocess.run([sys.executable, str(script), str(dump)], env={**os.environ, "PYTHONPATH": str(ROOT)},
                          capture_output=True, timeout=120)
    assert done.returncode == -signal.SIGSEGV, done.stderr
    library, step = crash_site(dump.read_text())
    assert library == "numpy"  # its code was on top of the stack: the sum that read address 16
    assert step is not None and re.fullmatch(r"second_opinion \(edgekit/quantize/fidelity\.py:\d+\)", step), step


CRASH_AFTER_THE_COMMAND = """
import ctypes
from edgekit import worker
worker.become_worker()
worker.announce_exit(0)  # what edgekit.cli.main says once the command returned
ctypes.string_at(0)  # SIGSEGV while the interpreter would tear the libraries down
"""


def test_a_crash_after_the_command_finished_keeps_its_exit_code_and_says_nothing(
        tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    from edgekit.supervise import run_supervised

    script = tmp_path / "teardown.py"
    script.write_text(CRASH_AFTER_THE_COMMAND)
    code = run_supervised([], program=[sys.executable, str(script)])
    assert code == 0 and capfd.readouterr().err == ""
