"""Operator codes of a TFLite flatbuffer, in TensorFlow's object model (``flatbuffer_utils``) or read in place."""
from __future__ import annotations

from typing import Any


def _effective_code(builtin: int, deprecated: int) -> int:
    """Codes above 127 live in ``builtinCode`` only, older ones in ``deprecatedBuiltinCode`` too (the
    schema's compatibility rule), so the larger of the two is the operator's code."""
    return max(builtin, deprecated)


def builtin_code(model: Any, op: Any) -> int:
    """``op``'s builtin operator code in the unpacked object model."""
    entry = model.operatorCodes[op.opcodeIndex]
    return _effective_code(entry.builtinCode, entry.deprecatedBuiltinCode)


def uses_operator(flatbuffer: bytes, code: int) -> bool:
    """Whether any operator code of ``flatbuffer`` is ``code``, read in place: unpacking the whole model
    to ask costs seconds and its size again in memory (a VGG's float model is 500 MB)."""
    from tensorflow.lite.python import schema_py_generated as schema

    root = schema.Model.GetRootAs(flatbuffer, 0)
    return any(_effective_code(root.OperatorCodes(i).BuiltinCode(), root.OperatorCodes(i).DeprecatedBuiltinCode()) == code
               for i in range(root.OperatorCodesLength()))
