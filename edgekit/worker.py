"""The supervised command's side of :mod:`edgekit.supervise`: what it tells the ``edgekit`` process.

Two files the supervisor passes down (:data:`WORKER_FD`, "REPORT,NATIVE"): the report gets the
folders the command writes in (:func:`announce_folder`, swept after a crash), its exit code once it
returned (:func:`announce_exit`) and, at a crash, faulthandler's stacks; the native file gets what
native code wrote while edgekit hid it (:func:`hidden_output_file`), whose last fatal line may say
why a library aborted. Outside a supervised command every function here does nothing. This module
imports nothing of edgekit: the atomic writer and the logger use it.
"""
from __future__ import annotations

import contextlib
import os
import signal
import tempfile
from typing import IO, Iterator

WORKER_FD = "EDGEKIT_SUPERVISOR_FD"
CLAIM = "edgekit-writing: "
EXIT = "edgekit-exit: "
_report: IO[str] | None = None  # the report file, kept open for faulthandler
_interrupted = False  # Ctrl-C arrived (raised once; see raise_if_swallowed)
_native_fd: int | None = None  # the native-output file


def become_worker() -> None:
    """In the child: a crash dumps the Python stacks into the report file; Ctrl-C interrupts once
    (the terminal and the supervisor may both send it: a second one must not cut the cleanup short)."""
    global _report, _native_fd
    fds = os.environ.pop(WORKER_FD, None)
    if fds is None or _report is not None:
        return
    import faulthandler

    report, native = (int(fd) for fd in fds.split(","))
    _report, _native_fd = os.fdopen(report, "w", buffering=1), native
    faulthandler.enable(file=_report, all_threads=True)
    signal.signal(signal.SIGINT, _interrupt_once)


def _interrupt_once(signum: int, frame: object) -> None:
    global _interrupted
    _interrupted = True
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt


def raise_if_swallowed() -> None:
    """Raise the Ctrl-C again if a library swallowed it: raised inside TensorFlow's native code it came
    back as a SystemError that onnx2tf caught, and the conversion went on to write its model (seen once
    in tests/test_supervise.py's terminal Ctrl-C). Called after such calls, never in a cleanup."""
    if _interrupted:
        raise KeyboardInterrupt


def announce_exit(code: int) -> None:
    """Tell the supervisor (if any) that the command is over, with its exit code: a crash after this,
    while the interpreter tears TensorFlow, PyTorch and ONNX Runtime down, changes nothing it did
    (measured: a Swin-T TFLite conversion that wrote its files and then died of SIGSEGV at exit)."""
    if _report is not None:
        _report.write(f"{EXIT}{code}\n")
        _report.flush()


def announce_folder(folder: str | os.PathLike[str]) -> None:
    """Tell the supervisor (if any) that this process writes in ``folder``, to be swept if it crashes."""
    if _report is not None:
        _report.write(f"{CLAIM}{os.path.abspath(folder)}\n")


@contextlib.contextmanager
def hidden_output_file() -> Iterator[IO[bytes]]:
    """Where :func:`edgekit.log.native_output` sends what it hides: the supervisor's file, emptied
    (it reads the last line after a crash), or a private temporary file."""
    if _native_fd is None:
        with tempfile.TemporaryFile() as private:
            yield private
        return
    os.ftruncate(_native_fd, 0)
    os.lseek(_native_fd, 0, os.SEEK_SET)
    shared = os.fdopen(os.dup(_native_fd), "w+b")
    try:
        yield shared
    finally:
        shared.close()
