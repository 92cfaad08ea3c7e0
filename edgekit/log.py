"""What edgekit prints: its own lines, progress bars, and other libraries' chatter only with ``-v``.

Every module logs through ``logging.getLogger(__name__)`` (all under the ``edgekit`` logger), so
``-q``/``-v`` on any command decide what shows. Info lines go to stdout as they are; warnings go to
stderr as ``warning: ...``; progress bars go to the terminal's stderr and only when it is a
terminal. TensorFlow, absl and XLA write from C++ straight to file descriptor 2, about 20 lines
per TFLite conversion (``E0000 ... Unable to register cuDNN factory`` reads like an error on a
CPU machine); no environment variable silences all of them, so :func:`native_output` catches
them at the descriptor and replays them only with ``-v``.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from typing import Any, Iterable, Iterator, TextIO

from edgekit.worker import hidden_output_file

QUIET, NORMAL, VERBOSE = -1, 0, 1
THIRD_PARTY = ("tensorflow", "absl", "onnx2tf", "onnxruntime", "onnxscript", "torch", "torch_pruning", "asyncssh",
               "matplotlib", "PIL", "h5py", "openvino", "jax")
# modules whose Python warnings are theirs, not edgekit's: shown with -v only (a prefix match on the module name)
WARNING_MODULES = (r"(torch|torchvision|torch_pruning|timm|ultralytics|onnx|onnxruntime|onnxscript|onnx_ir|onnx2tf"
                   r"|onnxsim|tensorflow|keras|tf_keras|openvino|nncf|transformers|huggingface_hub)(\.|$)")

_state = {"verbosity": NORMAL}
log = logging.getLogger("edgekit")


class _ConsoleHandler(logging.Handler):
    """Info to stdout, warnings and worse to stderr; the stream is looked up per record so a caller
    that swaps ``sys.stdout`` (pytest, a notebook) sees the lines."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = self.format(record)
            if record.levelno >= logging.WARNING:
                stream: TextIO = sys.stderr
                message = f"warning: {message}" if record.levelno == logging.WARNING else message
            else:
                stream = sys.stdout
            stream.write(message + "\n")
            stream.flush()
        except Exception:  # a closed pipe must not turn a log line into a crash
            self.handleError(record)


def configure(verbosity: int = NORMAL) -> None:
    """Set up output for one command: -1 quiet (warnings only), 0 normal, 1 verbose (debug lines and
    every library's own output). Call before anything imports TensorFlow."""
    _state["verbosity"] = verbosity
    level = {QUIET: logging.WARNING, NORMAL: logging.INFO}.get(verbosity, logging.DEBUG)
    if not any(isinstance(h, _ConsoleHandler) for h in log.handlers):
        handler = _ConsoleHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
    log.setLevel(level)
    log.propagate = False  # the root logger is the libraries': with -v they print there, in their own name
    if verbosity >= VERBOSE and not any(isinstance(h, _ConsoleHandler) for h in logging.root.handlers):
        handler = _ConsoleHandler()
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
        logging.root.addHandler(handler)
        logging.root.setLevel(logging.DEBUG)
    for name in THIRD_PARTY:
        logging.getLogger(name).setLevel(logging.DEBUG if verbosity >= VERBOSE else logging.ERROR)
    if verbosity < VERBOSE:
        # read by TensorFlow at import: its Python-side INFO/WARNING lines (the C++ ones need native_output)
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
        # libraries' warnings, by the module that issues them (Torch-Pruning's "Unwrapped parameters
        # detected", numpy's divide-by-zero inside ORT's calibrator leaked past the older list)
        warnings.filterwarnings("ignore", module=WARNING_MODULES)
        warnings.filterwarnings("ignore", category=DeprecationWarning)


def verbosity() -> int:
    return _state["verbosity"]


def progress(iterable: Iterable[Any] | None = None, **options: Any) -> Any:
    """A tqdm bar for a step a user waits for; off with -q and when stderr is not a terminal."""
    from tqdm import tqdm

    options.setdefault("leave", False)
    options.setdefault("dynamic_ncols", True)
    disable = True if verbosity() <= QUIET else options.pop("disable", None)
    options.pop("disable", None)
    return tqdm(iterable, disable=disable, file=sys.stderr, **options)


@contextlib.contextmanager
def native_output() -> Iterator[None]:
    """Catch what C/C++ libraries write to file descriptors 1 and 2 (TensorFlow, XLA, absl, the
    TFLite converter) and show it only with -v. Python-level writes still reach the real streams:
    ``sys.stdout``/``sys.stderr`` are pointed at copies of the original descriptors meanwhile, so
    edgekit's own lines and progress bars go on showing. Handlers that a library puts on the root
    logger meanwhile (absl does, bound to the stream of the moment) are taken off again: they would
    print edgekit's lines a second time in their own format."""
    root_handlers = list(logging.root.handlers)
    try:
        if verbosity() >= VERBOSE or not _has_fds():
            yield
        else:
            with _descriptors_captured():
                yield
    finally:
        for handler in [h for h in logging.root.handlers if h not in root_handlers]:
            logging.root.removeHandler(handler)


@contextlib.contextmanager
def _descriptors_captured() -> Iterator[None]:
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    swapped: dict[str, TextIO] = {}
    with hidden_output_file() as sink:
        try:
            for name, fd in (("stdout", 1), ("stderr", 2)):
                stream = getattr(sys, name)
                if _fileno(stream) == fd:  # the real descriptor, not a caller's capture object
                    swapped[name] = stream
                    setattr(sys, name, os.fdopen(os.dup(saved[fd]), "w", buffering=1, encoding=stream.encoding,
                                                 errors="replace"))
                os.dup2(sink.fileno(), fd)
            yield
        finally:
            for name, original in swapped.items():
                getattr(sys, name).flush()  # left open: a library may hold it (it writes to the terminal)
                setattr(sys, name, original)
            for fd, copy in saved.items():
                os.dup2(copy, fd)
                os.close(copy)


def _fileno(stream: Any) -> int | None:
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError):
        return None


def _has_fds() -> bool:
    try:
        os.fstat(1)
        os.fstat(2)
        return True
    except OSError:
        return False
