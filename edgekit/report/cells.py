"""The text of the report's cells, shared by report.md, report.html and the terminal summary, so a
variant reads the same everywhere. Confidence intervals are shown where collect() measured them
(``speedup_ci95``, ``score_delta_ci95``, ``score_verdict``) and left out where it did not."""
from __future__ import annotations

from typing import Any

METRIC_NAMES = {"top1": "top-1", "top5": "top-5", "agreement": "agreement", "map50_95": "mAP50-95", "map50": "mAP50",
                "miou": "mIoU", "pixel_accuracy": "pixel accuracy"}
PERCENT_METRICS = {"top1", "top5", "agreement", "map50_95", "map50", "miou", "pixel_accuracy"}


def fmt(value: Any, pattern: str) -> str:
    return "" if value is None else format(value, pattern)


def variant_name(row: dict[str, Any]) -> str:
    """A variant as the plots and the terminal name it: its label and, since one file can run on
    several runtimes, the runtime."""
    runtime = row.get("runtime_label") or row.get("runtime")
    return f"{row['label']} ({runtime})" if runtime else row["label"]


def group_name(host: str | None, runtime: str | None) -> str:
    return f"{runtime or 'any runtime'} on {host or 'no benchmark'}"


def _interval(ci: Any, pattern: str, sep: str) -> str:
    if not (isinstance(ci, (list, tuple)) and len(ci) == 2 and None not in ci):
        return ""
    return f" ({format(ci[0], pattern)}{sep}{format(ci[1], pattern)})"


def speedup_text(row: dict[str, Any]) -> str:
    """``4.11x`` or, with the bootstrap interval of the ratio, ``4.11x (3.90–4.30)``."""
    if row.get("speedup") is None:
        return ""
    return f"{row['speedup']:.2f}x" + _interval(row.get("speedup_ci95"), ".2f", "–")


def versus_text(row: dict[str, Any]) -> str:
    """Faster or slower only where it is measurably so: from the speed-up's interval when there is
    one (1.0 inside it: no measurable difference), else the verdict of the two p50 intervals."""
    if row.get("is_baseline"):
        return "baseline"
    ci = row.get("speedup_ci95")
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and None not in ci:
        return "faster" if ci[0] > 1.0 else "slower" if ci[1] < 1.0 else "no measurable difference"
    return row.get("vs_baseline") or ""


def delta(row: dict[str, Any]) -> float | None:
    return row["score_delta"] if row.get("score_delta") is not None else row.get("top1_delta")


def delta_text(row: dict[str, Any], short: bool = False) -> str:
    """``-0.37`` or ``-0.37 (-1.10 to +0.40), no measurable difference`` with the interval and verdict;
    ``short`` (table cells) names only a measured change, the page says what an interval over 0 means."""
    if row.get("is_baseline") or delta(row) is None:
        return ""
    text = f"{delta(row):+.2f}" + _interval(row.get("score_delta_ci95"), "+.2f", " to ")
    verdict = row.get("score_verdict")
    if not verdict or verdict == "baseline" or (short and verdict == "no measurable difference"):
        return text
    return f"{text}, {verdict}"


def delta_header(rows: list[dict[str, Any]]) -> str:
    metrics = {r.get("metric") for r in rows if r.get("metric")}
    metric = metrics.pop() if len(metrics) == 1 else "top1"
    return f"Δ {METRIC_NAMES.get(metric, metric)}"


def ship_text(decision: dict[str, Any]) -> str:
    """One decision as a sentence's figures: latency, speed-up and accuracy against the baseline."""
    parts = [f"p50 {decision['p50_ms']:.3f} ms"]
    if decision.get("speedup") is not None:
        parts.append(f"{speedup_text(decision)} the baseline's speed")
    if decision.get("score") is not None:
        metric = METRIC_NAMES.get(decision.get("metric"), decision.get("metric") or "score")
        change = delta_text({**decision, "top1_delta": None}) if decision.get("score_delta") is not None else ""
        parts.append(f"{metric} {decision['score']:.2f}" + (f" ({change} vs baseline)" if change else ""))
    return ", ".join(parts)


def parity_text(row: dict[str, Any]) -> str:
    """Device parity as ``vs FP32 | vs the same file on this host``: output cosine (top-1 agreement);
    "" when not measured."""
    parity = row.get("device_parity")
    if not parity:
        return ""
    if "error" in parity:
        return "not measured"
    same = parity.get("host_same_artifact") or {}
    versus_host = "-" if "cosine" not in same else f"{same['cosine']:.4f} ({same['top1_agreement']:.0f}%)"
    return f"{parity['cosine']:.4f} ({parity['top1_agreement']:.0f}%) | {versus_host}"


def parity_note(row: dict[str, Any]) -> str | None:
    """The note of a row whose device output disagrees with its references, else None."""
    parity = row.get("device_parity") or {}
    if "error" in parity or not parity:
        return None
    same = parity.get("host_same_artifact") or {}
    if same.get("agrees") is False:
        return (f"DEVICE DIFFERS from this host's run of the same file (cosine {same['cosine']:.4f}, "
                f"top-1 agreement {same['top1_agreement']:.0f}%)")
    if parity.get("agrees") is False:
        return (f"DEVICE OUTPUT DIFFERS from FP32 (cosine {parity['cosine']:.4f}, top-1 agreement "
                f"{parity['top1_agreement']:.0f}% on {parity['samples']} {parity.get('inputs', 'samples')})")
    return None


def failure_lines(document: dict[str, Any]) -> list[str]:
    """One line per device (or artifact on a device) that could not be measured: the report's ``failures``."""
    return [f"not measured on {f['host']}: {f['error']}" for f in document.get("failures", [])]
