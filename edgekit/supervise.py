"""Run an edgekit command in a child process, so that a crash in native code is one line, never a signal.

edgekit drives libraries with native code (TensorFlow and onnx2tf, ONNX Runtime, PyTorch) on models
they have never seen, and some of them abort the whole process (measured: a trained Swin-T's TFLite
conversion died of SIGABRT inside TensorFlow's eager Transpose, in onnx2tf's check of a MatMul, in 2
of 4 identical runs, with no message). No
Python code runs after such a signal, so the ``edgekit`` process the user started only supervises:
the command runs in a child (``python -m edgekit``, same arguments, :data:`WORKER_FD` set; its side
is :mod:`edgekit.worker`). When the
child dies of a crash signal, or is killed (SIGKILL: the out-of-memory killer), the supervisor prints
one line naming the signal, the library and edgekit's step (from the child's ``faulthandler`` stack),
removes what the child left half-written (the folders it announced, :func:`edgekit.worker.announce_folder`), and
exits 2. A signal sent to the command (Ctrl-C, ``kill``) reaches the child once, and the supervisor
then ends the way the child did.
"""
from __future__ import annotations

import ctypes
import os
import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import IO, Sequence

from edgekit.worker import CLAIM, EXIT, WORKER_FD

CRASHEXIT = 2
# Signals a user sends to end a command: forwarded to the child, whose death by one is mirrored.
_FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
_SI_KERNEL = 0x80  # si_code of a signal the terminal sent to the whole foreground group (child included)
_PR_SET_PDEATHSIG = 1


def supervision_wanted() -> bool:
    """Supervise unless this is the worker already, or EDGEKIT_DEBUG asks for the plain process (a
    debugger, the library's own crash output), or the platform lacks what supervision needs."""
    return (WORKER_FD not in os.environ and not os.environ.get("EDGEKIT_DEBUG") and os.name == "posix"
            and hasattr(signal, "sigtimedwait"))


def run_supervised(argv: Sequence[str], program: Sequence[str] = (sys.executable, "-m", "edgekit")) -> int:
    """Run ``PROGRAM ARGV`` (edgekit) in a child and return its exit code; a crash becomes one line
    and :data:`CRASHEXIT`. A forwarded signal that ended the child ends this process too."""
    waited = {*_FORWARDED, signal.SIGCHLD}
    libc = ctypes.CDLL(None) if sys.platform.startswith("linux") else None
    parent = os.getpid()
    original_mask = signal.pthread_sigmask(signal.SIG_BLOCK, waited)
    # no names on disk: nothing to clean up
    with tempfile.TemporaryFile("w+b") as report, tempfile.TemporaryFile("w+b") as native:
        fds = (report.fileno(), native.fileno())
        child = subprocess.Popen(
            [*program, *argv], pass_fds=fds,
            env={**os.environ, WORKER_FD: ",".join(map(str, fds)), "PYTHONPATH": _import_path()},
            preexec_fn=lambda: _prepare_child(original_mask, parent, libc))
        status, peak_kb = _wait(child.pid, waited)
        if os.WIFEXITED(status):
            return os.WEXITSTATUS(status)
        text = os.pread(report.fileno(), 1 << 20, 0).decode(errors="replace")
        said = last_message(native)
    signum = os.WTERMSIG(status)
    finished = re.search(rf"^{EXIT}(\d+)$", text, re.MULTILINE)
    if finished and signum not in _FORWARDED:  # the command was over: a library crashed tearing down
        return int(finished[1])
    _sweep_announced(text)
    if signum in _FORWARDED:
        _die_like(signum)
    print(f"edgekit: error: {crash_line(_command(argv), signum, text, peak_kb, said)}", file=sys.stderr)
    return CRASHEXIT


# A native library's dying words: glog/absl fatal lines, C++'s terminate, assert(); not its warnings.
_FATAL = re.compile(r"^F\d{4}|check failed|terminate called|what\(\)|assertion|fatal|abort", re.IGNORECASE)


def last_message(native: IO[bytes]) -> str | None:
    """The last fatal-looking line native code wrote while edgekit hid its output (TensorFlow's
    ``Check failed``, ``terminate called ...``), at most 200 characters."""
    size = os.fstat(native.fileno()).st_size
    tail = os.pread(native.fileno(), 8192, max(0, size - 8192)).replace(b"\0", b"").decode(errors="replace")
    lines = [line.strip() for line in tail.splitlines() if _FATAL.search(line)]
    return lines[-1][:200] if lines else None


def _import_path() -> str:
    """PYTHONPATH for the child: this edgekit's folder first, so the child runs the same code."""
    here = str(Path(__file__).resolve().parent.parent)
    return os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")]))


def _prepare_child(mask: set[signal.Signals], parent: int, libc: ctypes.CDLL | None) -> None:
    """In the child before exec: the signal mask it would have had, and death with its parent (a
    SIGKILLed ``edgekit`` must not leave its command running on)."""
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    if libc is not None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before prctl
            os._exit(1)


def _wait(pid: int, waited: set[int]) -> tuple[int, int]:
    """Forward the signals sent to this process to the child until it ends; its wait status and
    peak memory (KiB). A signal from the terminal reached the child too, so it is not sent twice."""
    while True:
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done:
            return status, usage.ru_maxrss
        info = signal.sigtimedwait(waited, 1.0)  # SIGCHLD wakes it when the child ends
        if info is not None and info.si_signo != signal.SIGCHLD and info.si_code != _SI_KERNEL:
            try:
                os.kill(pid, info.si_signo)
            except ProcessLookupError:
                pass


def _die_like(signum: int) -> None:
    """End this process by ``signum``, as the child ended: the caller's shell sees the same."""
    signal.signal(signum, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signum})
    os.kill(os.getpid(), signum)
    sys.exit(128 + signum)  # not reached for a signal whose default is to terminate


def _command(argv: Sequence[str]) -> str:
    return next((a for a in argv if not a.startswith("-")), "the command")


def crash_line(command: str, signum: int, report: str, peak_kb: int, said: str | None = None) -> str:
    """One line for the user: what died, how, where (library and edgekit step), and what to do."""
    try:
        name = signal.Signals(signum).name
    except ValueError:
        name = f"signal {signum}"
    if signum == signal.SIGKILL:
        total_kb = _memory_kb()
        if total_kb and peak_kb > total_kb / 2:
            return (f"{command} was killed (SIGKILL) at {peak_kb / 1024 ** 2:.1f} GB peak memory, most likely by the "
                    "system's out-of-memory killer: a smaller model, input size or batch needs less; half-written "
                    "files were removed")
        return (f"{command} was killed (SIGKILL) by another process or the system, at {peak_kb / 1024 ** 2:.1f} GB "
                "peak memory; half-written files were removed")
    library, step = crash_site(report)
    during = f", during {step}" if step else ""
    last = f' (its last message: "{said}")' if said else ""
    if library:
        return (f"{command} crashed ({name}) inside {library}{during}{last}: {library} aborted on this model, an "
                f"error edgekit cannot catch; half-written files were removed. Another backend or runtime may handle "
                f"the model; -v shows {library}'s own messages")
    return (f"{command} crashed ({name}) in native code{during}{last}, an error edgekit cannot catch; half-written "
            "files were removed; -v shows the libraries' own messages")


def _memory_kb() -> int:
    try:
        return int(Path("/proc/meminfo").read_text().split()[1])  # MemTotal, in kB
    except (OSError, IndexError, ValueError):
        return 0


_FRAME = re.compile(r'^\s+File "(?P<path>[^"]+)", line (?P<line>\d+) in (?P<func>\S+)')


def crash_site(report: str) -> tuple[str | None, str | None]:
    """The library whose code was running and edgekit's innermost step, from the child's
    ``faulthandler`` dump: the crashing thread's stack, else the main thread's (a native thread of
    the library crashed while Python waited in it)."""
    blocks = re.split(r"\n(?=(?:Current thread|Thread) 0x)", report)
    stacks = [(b.startswith("Current thread"), [m for m in map(_FRAME.match, b.splitlines()) if m]) for b in blocks]
    ours = [(current, frames) for current, frames in stacks if any(_in_edgekit(m["path"]) for m in frames)]
    if not ours:
        return None, None
    frames = max(ours, key=lambda item: item[0])[1]  # most recent call first
    library = _package(frames[0]["path"])
    step = next((m for m in frames if _in_edgekit(m["path"])), None)
    where = f"{step['func']} ({_relative(step['path'])}:{step['line']})" if step else None
    return (None if library == "edgekit" else library), where


def _in_edgekit(path: str) -> bool:
    parts = Path(path).parts
    return "edgekit" in parts and "cli" not in parts[parts.index("edgekit") + 1:]


def _package(path: str) -> str | None:
    parts = Path(path).parts
    for marker in ("site-packages", "dist-packages"):
        if marker in parts and parts.index(marker) + 1 < len(parts):
            return parts[parts.index(marker) + 1].removesuffix(".py")
    return "edgekit" if "edgekit" in parts else None


def _relative(path: str) -> str:
    parts = Path(path).parts
    return str(Path(*parts[len(parts) - parts[::-1].index("edgekit") - 1:]))


def _sweep_announced(report: str) -> None:
    from edgekit.atomic import sweep

    for folder in dict.fromkeys(line[len(CLAIM):] for line in report.splitlines() if line.startswith(CLAIM)):
        sweep(folder)
