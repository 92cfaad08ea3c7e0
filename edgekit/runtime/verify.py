"""Check a user's model file (.onnx, .tflite, OpenVINO .xml) before any runtime loads it.

The TFLite interpreter trusts its input: a truncated or corrupt flatbuffer read through
``model_path`` can crash the whole process with SIGSEGV, so a traceback-free error is impossible
afterwards. Every command that opens a model the user names calls :func:`verify_model` first:

* the file exists, is a regular non-empty file, and its *content* matches its suffix (a .tflite
  renamed .onnx is named as such);
* ONNX: ``onnx.load`` and ``onnx.checker`` (optionally an ONNX Runtime session) in this process:
  those fail with exceptions, not signals;
* TFLite: the flatbuffer header (identifier ``TFL3``, root offset inside the file) here, then a
  child process builds the interpreter from the bytes (``model_content`` runs the flatbuffer
  verifier), allocates tensors and optionally runs one inference (outputs must be finite). A
  signal there becomes one line. The same check proves a freshly converted .tflite runs.
* OpenVINO IR: the .xml is XML and its .bin weights lie beside it (OpenVINO itself raises
  exceptions on a bad file, so the runner reports those as one line).
"""
from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

from edgekit.errors import EdgekitError, first_line
from edgekit.runtime.registry import SUFFIXES, model_format, suffix_list

MODEL_SUFFIXES = SUFFIXES
TFLITE_IDENTIFIER = b"TFL3"
PROBE_TIMEOUT_S = 600.0
_PROBE_ERROR = "edgekit-probe-error:"
_PROBE_PHASE = "edgekit-probe-phase:"
# what a crash means, by the last phase the probe reached: a signal is not always a damaged file.
# A valid 16x8 (int16 activation) ViT from TensorFlow's own converter aborted in SUB's Prepare
# (tflite::QuantizeMultiplierSmallerThanOneExp: an input scale of zero), after parsing cleanly.
_CRASH_MEANING = {
    None: "while reading it: it is corrupt or truncated",
    "parsed": ("while preparing its ops (allocate_tensors): the file parses, but a kernel of this runtime aborted "
               "on an op's types or quantization parameters (e.g. an int16 (16x8) op with a zero scale), or it "
               "is corrupt; convert it again, or for another runtime version"),
    "prepared": "while running it once: a kernel of this runtime cannot run one of its ops, or it is corrupt",
}
_NO_INTERPRETER_EXIT = 4

# Runs in a child: the self-contained device runner picks the interpreter exactly as loading does.
_PROBE = r"""
import sys
sys.path.insert(0, sys.argv[1])
try:
    from device_runner import load_tflite_interpreter_class
    interpreter_class = load_tflite_interpreter_class()[0]
except ImportError:
    sys.exit(4)
import numpy as np
try:
    with open(sys.argv[2], "rb") as handle:
        interpreter = interpreter_class(model_content=handle.read())
    print("edgekit-probe-phase: parsed", flush=True)
    interpreter.allocate_tensors()
    print("edgekit-probe-phase: prepared", flush=True)
    if sys.argv[3] == "1":
        for detail in interpreter.get_input_details():
            interpreter.set_tensor(detail["index"], np.zeros(detail["shape"], detail["dtype"]))
        interpreter.invoke()
        for detail in interpreter.get_output_details():
            if not np.all(np.isfinite(interpreter.get_tensor(detail["index"]).astype(np.float64))):
                raise ValueError("the output is not finite (NaN or Inf)")
except Exception as exc:
    text = (str(exc).strip().splitlines() or [""])[0][:300]
    print("edgekit-probe-error:", type(exc).__name__ + (": " + text if text else ""), flush=True)
    sys.exit(3)
"""


def sniff(head: bytes) -> str | None:
    """What the first bytes say a file is (``tflite``, ``zip``, ``npy``...), or None when unknown."""
    if len(head) >= 8 and head[4:8] == TFLITE_IDENTIFIER:
        return "tflite"
    if head.startswith(b"PK\x03\x04"):
        return "zip archive (a PyTorch .pt file?)"
    if head.startswith(b"\x93NUMPY"):
        return "NumPy .npy array"
    if head.startswith(b"\x89HDF"):
        return "HDF5 file (a Keras .h5?)"
    if head[:1] in (b"{", b"["):
        return "JSON text"
    return None


def check_model_file(path: str | os.PathLike[str], what: str = "model file") -> Path:
    """The path of an existing, non-empty .onnx/.tflite regular file, or a one-line error."""
    path = Path(path)
    if not path.exists():
        raise EdgekitError(f"{path}: {what} not found")
    if path.is_dir():
        raise EdgekitError(f"{path}: is a directory, expected a {suffix_list()} {what}")
    if not path.is_file():
        raise EdgekitError(f"{path}: not a regular file")
    suffix = path.suffix.lower()
    if suffix not in MODEL_SUFFIXES:
        raise EdgekitError(f"{path}: expected a {suffix_list()} {what}, not {suffix or 'a file without suffix'}")
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            head = handle.read(16)
    except OSError as exc:
        raise EdgekitError(f"{path}: cannot be read ({exc.strerror or first_line(exc)})") from exc
    if size == 0:
        raise EdgekitError(f"{path}: the file is empty (0 bytes)")
    kind = sniff(head)
    if suffix == ".onnx" and kind is not None:
        raise EdgekitError(f"{path}: not an ONNX model: the content is a {'TFLite flatbuffer' if kind == 'tflite' else kind}")
    if suffix == ".tflite" and kind != "tflite":
        found = f"the content is a {kind}" if kind else f"no '{TFLITE_IDENTIFIER.decode()}' file identifier at byte 4"
        raise EdgekitError(f"{path}: not a loadable TFLite model ({found})")
    if suffix == ".xml":
        _check_ir(path, head)
    return path


def _check_ir(path: Path, head: bytes) -> None:
    """An OpenVINO IR is XML text with its weights in a .bin of the same name."""
    if not head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"<"):
        raise EdgekitError(f"{path}: not an OpenVINO IR (the content is {sniff(head) or 'not XML'})")
    for companion in model_format(path).companions:
        if not path.with_suffix(companion).is_file():
            raise EdgekitError(f"{path}: the OpenVINO IR's weights {path.with_suffix(companion).name} are missing "
                               "(they must lie beside the .xml)")


def verify_onnx(path: str | os.PathLike[str], session: bool = False) -> Any:
    """Load and check an ONNX model (and, with ``session``, open it in ONNX Runtime); the ModelProto."""
    import onnx

    path = check_model_file(path)
    if path.suffix.lower() != ".onnx":
        raise EdgekitError(f"{path}: expected an .onnx file")
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as exc:
        raise EdgekitError(f"{path}: not a valid ONNX model ({first_line(exc)})") from exc
    if session:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        try:
            ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise EdgekitError(f"{path}: ONNX Runtime cannot load it ({first_line(exc)})") from exc
    return model


def verify_tflite(path: str | os.PathLike[str], invoke: bool = False, timeout: float = PROBE_TIMEOUT_S,
                  any_name: bool = False, label: str | None = None) -> Path:
    """Header checks here, then load (and with ``invoke`` run once, outputs finite) in a child
    process. ``any_name`` accepts files not named .tflite (edgekit's own temporary ``.part`` files);
    ``label`` is the name messages use for such a file (the output it will become)."""
    path = Path(path) if any_name else check_model_file(path)
    if any_name and not path.is_file():
        raise EdgekitError(f"{label or path}: artifact not found")
    _check_flatbuffer(path, label or str(path))
    _probe_in_child(path, label or str(path), invoke, timeout)
    return path


def _check_flatbuffer(path: Path, name: str) -> None:
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(8)
    if size < 16:
        raise EdgekitError(f"{name}: not a loadable TFLite model (only {size} bytes: truncated?)")
    if head[4:8] != TFLITE_IDENTIFIER:
        raise EdgekitError(f"{name}: not a loadable TFLite model (no '{TFLITE_IDENTIFIER.decode()}' file identifier)")
    (root,) = struct.unpack("<I", head[:4])
    if root < 8 or root >= size or root % 4:
        raise EdgekitError(f"{name}: not a loadable TFLite model (root table offset {root} is outside the "
                           f"{size}-byte file: truncated or corrupt)")


def _probe_in_child(path: Path, name: str, invoke: bool, timeout: float) -> None:
    runtime_dir = str(Path(__file__).resolve().parent)
    command = [sys.executable, "-c", _PROBE, runtime_dir, str(path), "1" if invoke else "0"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise EdgekitError(f"{name}: the TFLite interpreter did not load it within {timeout:.0f} s") from exc
    if proc.returncode == 0 or proc.returncode == _NO_INTERPRETER_EXIT:
        return  # no interpreter here: loading it will say so
    if proc.returncode < 0:
        phase = next((line[len(_PROBE_PHASE):].strip() for line in reversed(proc.stdout.splitlines())
                      if line.startswith(_PROBE_PHASE)), None)
        raise EdgekitError(f"{name}: the TFLite interpreter crashed on this file ({signal_name(-proc.returncode)}) "
                           f"{_CRASH_MEANING.get(phase, _CRASH_MEANING[None])}")
    message = next((line[len(_PROBE_ERROR):].strip() for line in reversed(proc.stdout.splitlines())
                    if line.startswith(_PROBE_ERROR)), None)
    detail = message or first_line(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "no output")
    if "Flatbuffer" in detail:
        detail = f"the flatbuffer is truncated or corrupt: {detail}"
    raise EdgekitError(f"{name}: not a loadable TFLite model ({detail})")


def signal_name(number: int) -> str:
    """``11`` -> ``signal 11 SIGSEGV``."""
    try:
        return f"signal {number} {signal.Signals(number).name}"
    except ValueError:
        return f"signal {number}"


def verify_model(path: str | os.PathLike[str], *, invoke: bool = False, session: bool = False) -> Path:
    """Verify a model file by its format (see the module docstring); its Path."""
    path = check_model_file(path)
    kind = model_format(path).name
    if kind == "onnx":
        verify_onnx(path, session=session)
    elif kind == "tflite":
        verify_tflite(path, invoke=invoke)
    return path
