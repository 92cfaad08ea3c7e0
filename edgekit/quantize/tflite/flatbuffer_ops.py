"""Operator codes in TensorFlow's object model of a TFLite flatbuffer (``flatbuffer_utils``)."""
from __future__ import annotations

from typing import Any


def builtin_code(model: Any, op: Any) -> int:
    """``op``'s builtin operator code: codes above 127 live in ``builtinCode`` only, older ones in
    ``deprecatedBuiltinCode`` too (the schema's compatibility rule), so the larger is the code."""
    entry = model.operatorCodes[op.opcodeIndex]
    return max(entry.builtinCode, entry.deprecatedBuiltinCode)
