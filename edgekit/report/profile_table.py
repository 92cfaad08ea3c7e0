"""Per-operator time (``bench --profile``) beside each layer's INT8 error (the manifest's sensitivity).

The runtimes name the nodes they ran, not always the model's nodes, so the join is by name after
undoing what each runtime does to a name (measured on ORT 1.23 and OpenVINO 2026 with QDQ models):

- ONNX Runtime FP32: its NCHWc layout pass renames a fused Conv(+Relu) after its *output tensor*
  plus ``_nchwc`` (``.../features.0.2/Relu_output_0_nchwc``): stripped, that is the sensitivity's
  ``tensor``.
- ONNX Runtime QDQ INT8: the QDQ fusion keeps the node's name plus ``_token_<n>``
  (``.../features.0.0/Conv_token_1``, a ``QLinearConv``): stripped, the QDQ model's node name.
- OpenVINO: ``.../Conv/WithoutBiases`` (and ``/DequantizationMultiply`` for INT8 MatMul/Gemm).
- The quantizer folds Relu into the Conv before it, so a QDQ Conv node *outputs* the float Relu's
  tensor; the sensitivity names that tensor's float producer (the Relu). The artifact's own ONNX
  graph (node -> output tensors) closes that gap when the artifact is in the run directory.

A name is matched to a sensitivity row by its node, else its tensor, else one of the node's
output tensors. Unmatched layers (nodes the quantizer left in float, or outside the manifest's
top-25 ranking) show no SQNR; that is a missing figure, not a zero.
"""
from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any

RUNTIME_SUFFIX = re.compile(r"(_token_\d+|_nchwc|/WithoutBiases|/DequantizationMultiply)$")
HEADERS = ["node", "op", "mean ms", "share"]


def base_name(node: str) -> str:
    """The model's node (or tensor) name under a runtime's renaming (see the module docstring)."""
    while (stripped := RUNTIME_SUFFIX.sub("", node)) != node:
        node = stripped
    return node


def graph_outputs(path: Path) -> dict[str, list[str]]:
    """Node name -> output tensor names of an ONNX artifact; empty when it is not one or unreadable."""
    if path.suffix != ".onnx" or not path.is_file():
        return {}
    try:
        import onnx

        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - the join only loses its graph fallback
        return {}
    return {node.name: list(node.output) for node in model.graph.node}


def join_sensitivity(profile: dict[str, Any], sensitivity: list[dict[str, Any]],
                     outputs: dict[str, list[str]]) -> dict[str, Any]:
    """``profile`` with ``sqnr_db`` (and the ``sqnr_tensor`` it came from) on each matched op."""
    by_node = {r.get("node"): r for r in reversed(sensitivity) if isinstance(r, dict) and r.get("node")}
    by_tensor = {r.get("tensor"): r for r in sensitivity if isinstance(r, dict) and r.get("tensor")}
    ops = []
    for op in profile.get("ops", []):
        name = base_name(op["node"])
        match = None if op.get("other") else (
            by_node.get(name) or by_tensor.get(name)
            or next((by_tensor[t] for t in outputs.get(name, []) if t in by_tensor), None))
        ops.append({**op, "sqnr_db": match.get("sqnr_db"), "sqnr_tensor": match.get("tensor")} if match else op)
    return {**profile, "ops": ops}


def attach_sensitivity(rows: list[dict[str, Any]], artifacts: Path) -> None:
    """Join every profiled INT8 row with its artifact's recorded per-layer error (in place)."""
    graphs: dict[str, dict[str, list[str]]] = {}
    for row in rows:
        profile, sensitivity = row.get("profile"), row.get("quantize_sensitivity")
        if profile and profile.get("available") and sensitivity:
            if row["artifact"] not in graphs:
                graphs[row["artifact"]] = graph_outputs(artifacts / row["artifact"])
            row["profile"] = join_sensitivity(profile, sensitivity, graphs[row["artifact"]])


def op_rows(profile: dict[str, Any], with_sqnr: bool) -> list[list[str]]:
    """Table rows of one profile: node, op, mean ms per inference, share (and INT8 SQNR)."""
    out = []
    for op in profile["ops"]:
        row = [op["node"], op["op_type"], f"{op['mean_ms']:.4f}", f"{op['share']:.1%}"]
        if with_sqnr:
            row.append("" if op.get("sqnr_db") is None else f"{op['sqnr_db']:.1f}")
        out.append(row)
    return out


def headers(with_sqnr: bool) -> list[str]:
    return HEADERS + (["INT8 SQNR dB"] if with_sqnr else [])


def caption(row: dict[str, Any]) -> str:
    """One line under a row's title: profiled kernel time against the timed p50."""
    profile = row["profile"]
    if not profile.get("available"):
        return f"Per-operator time not available: {profile.get('reason') or 'no reason given'}."
    p50 = (row.get("latency_ms") or {}).get("p50")
    text = (f"{profile.get('nodes', len(profile['ops']))} nodes, {profile['runs']} profiled runs: summed kernel time "
            f"{profile.get('kernel_ms_p50') or profile.get('kernel_ms_per_run') or 0:.3f} ms per run (median)")
    return text + (f", p50 {p50:.3f} ms in the timed runs." if p50 else ".")


def _profiled(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if r.get("profile")]


def _title(row: dict[str, Any]) -> str:
    runtime = row.get("runtime_label") or row.get("runtime") or ""
    return f"{row['label']}: {row['artifact']} on {runtime} ({row.get('host') or '-'})"


def _with_sqnr(row: dict[str, Any]) -> bool:
    return bool(row.get("quantize_sensitivity"))


SQNR_NOTE = ("INT8 SQNR: the layer's signal-to-quantization-noise ratio recorded at quantize time "
             "(lower is worse); joined by node name, see edgekit/report/profile_table.py.")


def markdown_section(rows: list[dict[str, Any]]) -> list[str]:
    """``## Slowest layers`` with one table per profiled row (empty when nothing was profiled)."""
    from tabulate import tabulate

    profiled = _profiled(rows)
    if not profiled:
        return []
    parts = ["## Slowest layers", "", SQNR_NOTE, ""]
    for row in profiled:
        parts += [f"### {_title(row)}", "", caption(row), ""]
        if row["profile"].get("available"):
            sqnr = _with_sqnr(row)
            parts += [tabulate(op_rows(row["profile"], sqnr), headers=headers(sqnr), tablefmt="github"), ""]
    return parts


def html_section(rows: list[dict[str, Any]]) -> str:
    from tabulate import tabulate

    profiled = _profiled(rows)
    if not profiled:
        return ""
    parts = [f"<h2>Slowest layers</h2><p>{html.escape(SQNR_NOTE)}</p>"]
    for row in profiled:
        parts.append(f"<h3>{html.escape(_title(row))}</h3><p>{html.escape(caption(row))}</p>")
        if row["profile"].get("available"):
            sqnr = _with_sqnr(row)
            parts.append(tabulate(op_rows(row["profile"], sqnr), headers=headers(sqnr), tablefmt="html"))
    return "".join(parts)
