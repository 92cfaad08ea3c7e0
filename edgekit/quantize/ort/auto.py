"""``--auto``: try the candidate configurations on the machine they are for; keep the fastest within budget.

The right INT8 format depends on the CPU: measured here on ResNet-18 (AMD EPYC, AVX2, no VNNI),
U8S8 QDQ ran at 1.8x FP32 speed and S8S8 QOperator at 0.22x, so picking by folklore can cost 8x.
Every candidate is quantized here, then all are measured in one go by a
:class:`~edgekit.bench.measure.Measurer`: on this machine, or uploaded to the device (``--host``)
and timed there by the same runner and threads as ``edgekit bench``. Accuracy is measured here.
"""
from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any, Callable

from edgekit.quantize.ort.settings import OrtQuantSettings

_log = logging.getLogger(__name__)


def _candidate(format: str, activation_type: str, per_channel: bool = True, reduce_range: bool = False) -> OrtQuantSettings:
    return OrtQuantSettings(format=format, activation_type=activation_type, weight_type="int8",
                            per_channel=per_channel, reduce_range=reduce_range)


CANDIDATES = (
    _candidate("QDQ", "uint8"),
    _candidate("QDQ", "uint8", reduce_range=True),  # the cure for U8S8 saturation without VNNI
    _candidate("QDQ", "int8"),
    _candidate("QOperator", "uint8"),
    _candidate("QOperator", "int8"),
    _candidate("QDQ", "uint8", per_channel=False),
)


def choose(
    fp32_path: str | Path,
    quantize: Callable[[OrtQuantSettings, Path], None],
    accuracy: Callable[[Path], float | None],
    budget: float | None,
    measure: Any = None,
    log: Callable[[str], None] = _log.info,
) -> dict[str, Any]:
    """Quantize every candidate, measure them with FP32 by ``measure`` (an ``edgekit.bench.measure.Measurer``,
    which the CLI and the pipeline pass; default :class:`edgekit.quantize.speed.Here`, this process);
    return the table, where it was measured and the winner (None if none fits)."""
    from edgekit.quantize.speed import Here

    measure = measure or Here()
    rows: list[dict[str, Any]] = []
    fp32_acc = accuracy(Path(fp32_path))
    rows.append({"config": "FP32", "top1": fp32_acc, "size_mb": Path(fp32_path).stat().st_size / 1e6})
    with tempfile.TemporaryDirectory(prefix="edgekit-auto-") as work:
        made: list[tuple[dict[str, Any], Path]] = []
        for index, settings in enumerate(CANDIDATES):
            out = Path(work) / f"candidate{index}.onnx"
            log(f"auto: {settings.label()}")
            try:
                quantize(settings, out)
            except Exception as exc:  # a candidate that fails is reported, not fatal
                rows.append({"config": settings.label(), "error": str(exc)})
                continue
            row = {"config": settings.label(), "settings": settings, "top1": accuracy(out),
                   "size_mb": out.stat().st_size / 1e6}
            rows.append(row)
            made.append((row, out))
        log(f"auto: measuring FP32 and {len(made)} candidates on "
            f"{measure.host or measure.target or 'this machine'} ...")
        stats = measure([Path(fp32_path), *(path for _, path in made)])
    fp32_stats, fp32_ms = stats[0], stats[0]["p50"]
    rows[0].update(p50_ms=fp32_ms, p50_ci95=fp32_stats["p50_ci95"], speedup=1.0)
    for (row, _), measured in zip(made, stats[1:]):
        row.update(p50_ms=measured["p50"], p50_ci95=measured["p50_ci95"], speedup=fp32_ms / measured["p50"])
    eligible = [r for r in rows[1:] if "error" not in r and (
        budget is None or r["top1"] is None or fp32_acc is None or fp32_acc - r["top1"] <= budget)]
    fastest = min(eligible, key=lambda r: r["p50_ms"]) if eligible else None
    # among candidates tied with the fastest (overlapping CIs), take the first in CANDIDATES order:
    # QDQ U8S8 per-channel, the most portable and accurate, wins a tie
    tied = [r for r in eligible if fastest and _overlap(r, fastest)]
    winner = tied[0] if tied else None
    ties = [r["config"] for r in tied[1:]]
    beats = any("p50_ci95" in r and r["p50_ci95"][1] < fp32_stats["p50_ci95"][0] for r in rows[1:])
    return {"rows": rows, "winner": winner, "ties": ties, "fp32_ms": fp32_ms, "fp32_top1": fp32_acc,
            "int8_beats_fp32": beats, "measured_on": measure.where, "on_device": measure.on_device,
            "scope": measure.scope_note()}


def _overlap(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return a["p50_ci95"][0] <= b["p50_ci95"][1] and b["p50_ci95"][0] <= a["p50_ci95"][1]


def render(result: dict[str, Any]) -> str:
    from tabulate import tabulate

    table = [[r["config"], f"{r['p50_ms']:.2f}" if "p50_ms" in r else "failed",
              f"{r['speedup']:.2f}x" if "speedup" in r else "", "" if r.get("top1") is None else f"{r['top1']:.2f}",
              f"{r['size_mb']:.2f}" if "size_mb" in r else r.get("error", "")[:60]] for r in result["rows"]]
    text = tabulate(table, headers=["config", "p50 ms", "vs FP32", "top-1 %", "MB"], tablefmt="github")
    winner = result["winner"]
    lines = [f"auto: latencies {result['scope']}; accuracy measured on this machine", text, ""]
    where = "on the device" if result["on_device"] else "here"
    if winner:
        lines.append(f"auto: chose {winner['config']}: the fastest {where} within the accuracy budget, or tied with it "
                     f"and first in portability order ({winner['p50_ms']:.2f} ms, {winner['speedup']:.2f}x FP32)")
        if result["ties"]:
            lines.append(f"auto: no measurable difference (overlapping 95% CIs of the p50) from: {', '.join(result['ties'])}")
    if not result["int8_beats_fp32"]:
        lines.append(f"auto: no INT8 candidate beats FP32 on {'that device' if result['on_device'] else 'this CPU'}: INT8 buys size (about 4x smaller), "
                     "not speed. INT8 speed comes on CPUs with int8 dot products (ARM dotprod, x86 VNNI); see the "
                     "target profiles.")
    return "\n".join(lines)


