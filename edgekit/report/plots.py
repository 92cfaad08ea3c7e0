"""The report's plots as PNG data URIs: latency vs accuracy, latency distributions, artifact sizes.

Every point and bar is named the way the table names it (its row number ``#`` and
``variant (runtime)``); latencies are on log axes because edge variants span orders of magnitude;
the variants chosen to ship are ringed in green.
"""
from __future__ import annotations

import base64
import io
import math
from typing import Any

from edgekit.report.cells import METRIC_NAMES, PERCENT_METRICS, variant_name

DPI = 110
WIDTH_IN = 11.0  # ~1200 px: the page shows plots at its full width
SHIP_COLOR = "#2e7d32"
MARKERS = ["o", "s", "^", "D", "v", "P", "X"]
NICE = [m * 10.0 ** e for e in range(-4, 6) for m in (1, 2, 5)]
# where a point's number may go, in points from the point: nearest first, then further out
OFFSETS = [(0, 9), (9, 0), (0, -10), (-9, 0), (8, 8), (8, -9), (-8, 8), (-8, -9),
           (0, 18), (16, 0), (0, -19), (-16, 0), (14, 14), (14, -15), (-14, 14), (-14, -15),
           (0, 28), (24, 0), (0, -29), (-24, 0)]


def _png(figure: Any) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _log_axis(axis: Any, low: float, high: float) -> None:
    """A log axis from ``low`` to ``high`` with plain-number ticks at 1-2-5 steps (0.2, 0.5, 1, 2)."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    ticks = [t for t in NICE if low <= t <= high] or [low, high]
    axis.set_major_locator(FixedLocator(ticks))
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axis.set_minor_formatter(NullFormatter())


def _log_limits(values: list[float]) -> tuple[float, float]:
    low, high = min(values), max(values)
    pad = max(0.08, 0.06 * math.log10(high / low)) if high > low else 0.15
    return low / 10 ** pad, high * 10 ** pad


def score_limits(scores: list[float], metric: str | None) -> tuple[float, float]:
    """The accuracy axis fitted to the points: a margin around them, never past what the metric can
    reach (0-100 for percentages)."""
    low, high = min(scores), max(scores)
    margin = max(0.5, 0.12 * (high - low))
    bottom, top = low - margin, high + margin
    if metric in PERCENT_METRICS:
        bottom, top = max(0.0, bottom), min(100.0, top)
    return bottom, top


def _place_numbers(ax: Any, points: list[tuple[float, float, str, bool]]) -> None:
    """Each point's number beside it where it overlaps no other number, marker or the axes' edge:
    the nearest free spot of :data:`OFFSETS`, with a leader line when it had to move away."""
    from matplotlib.text import Text
    from matplotlib.transforms import Bbox

    fig = ax.figure
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    taken = []
    for x, y, _, ringed in points:  # a ringed (shipped) point is larger
        radius = (11 if ringed else 6) * DPI / 72
        cx, cy = ax.transData.transform((x, y))
        taken.append(Bbox.from_extents(cx - radius, cy - radius, cx + radius, cy + radius))
    for x, y, text, _ in points:
        chosen = None
        for dx, dy in OFFSETS:
            far = abs(dx) + abs(dy) > 12
            note = ax.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points", fontsize=9,
                               ha="center", va="center", fontweight="bold", annotation_clip=False,
                               arrowprops={"arrowstyle": "-", "lw": 0.5, "color": "grey"} if far else None)
            box = Text.get_window_extent(note, renderer)  # the number alone, not its leader line
            inside = frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
            if inside and not any(box.overlaps(t) for t in taken):
                chosen = box
                break
            note.remove()
        if chosen is None:  # crowded everywhere: the first spot, overlapping rather than lost
            note = ax.annotate(text, (x, y), xytext=OFFSETS[0], textcoords="offset points", fontsize=9,
                               ha="center", va="center", fontweight="bold", annotation_clip=False)
            chosen = Text.get_window_extent(note, renderer)
        taken.append(chosen)


def tradeoff(rows: list[tuple[int, dict[str, Any]]], shipped: set[int]) -> str | None:
    """p50 latency (log) against the ranking metric, one colour per machine and one marker per runtime,
    the Pareto front as a step line per machine, numbered points keyed to the table."""
    import matplotlib.pyplot as plt

    scored = [(n, r) for n, r in rows if r["latency_ms"] and r["score"] is not None]
    metrics = {r["metric"] for _, r in scored}
    if not scored or len(metrics) != 1:
        return None
    metric = metrics.pop()
    hosts = sorted({r["host"] for _, r in scored})
    runtimes = sorted({r.get("runtime_label") or r["runtime"] for _, r in scored})
    colors = plt.get_cmap("tab10").colors
    fig, ax = plt.subplots(figsize=(WIDTH_IN, 5.4), dpi=DPI)
    latencies = [r["latency_ms"]["p50"] for _, r in scored]
    ax.set_xscale("log")
    ax.set_xlim(*_log_limits(latencies))
    ax.set_ylim(*score_limits([r["score"] for _, r in scored], metric))
    _log_axis(ax.xaxis, *ax.get_xlim())
    for h, host in enumerate(hosts):
        color = colors[h % len(colors)]
        pts = [r for _, r in scored if r["host"] == host]
        front = sorted((r for r in pts if r["pareto"]), key=lambda r: r["latency_ms"]["p50"])
        if front:
            xs = [r["latency_ms"]["p50"] for r in front] + [max(r["latency_ms"]["p50"] for r in pts)]
            ys = [r["score"] for r in front] + [front[-1]["score"]]
            ax.step(xs, ys, where="post", color=color, lw=1.4, ls="--", alpha=0.8, zorder=1,
                    label=f"Pareto front ({host})" if len(hosts) > 1 else "Pareto front")
        for k, runtime in enumerate(runtimes):
            group = [r for r in pts if (r.get("runtime_label") or r["runtime"]) == runtime]
            if group:
                ax.scatter([r["latency_ms"]["p50"] for r in group], [r["score"] for r in group], s=46,
                           marker=MARKERS[k % len(MARKERS)], color=color, zorder=3, clip_on=False,
                           label=f"{runtime} ({host})" if len(hosts) > 1 else runtime)
    ship = [r for n, r in scored if n in shipped]
    if ship:
        ax.scatter([r["latency_ms"]["p50"] for r in ship], [r["score"] for r in ship], s=260, facecolors="none",
                   edgecolors=SHIP_COLOR, linewidths=2.2, zorder=4, clip_on=False, label="ship (per runtime)")
    ax.set_xlabel("p50 latency (ms, log scale; left is faster)")
    name = METRIC_NAMES.get(metric, metric)
    ax.set_ylabel(f"{name} (%)" if metric in PERCENT_METRICS else name)
    ax.set_title("Latency vs accuracy (numbers: table rows)", loc="left")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="lower right")
    key = "\n".join(f"{n:>2}  {variant_name(r)}" + (f"  [{r['host']}]" if len(hosts) > 1 else "")
                    for n, r in scored)
    fig.subplots_adjust(left=0.07, right=0.7)
    fig.text(0.715, 0.88, key, va="top", ha="left", fontsize=8.5, family="monospace")
    _place_numbers(ax, [(r["latency_ms"]["p50"], r["score"], str(n), n in shipped) for n, r in scored])
    image = _png(fig)
    plt.close(fig)
    return image


def latency_boxes(rows: list[tuple[int, dict[str, Any]]], shipped: set[int]) -> str | None:
    """Every measured run's latency distribution on a log axis, in table order, shipped rows in green."""
    import matplotlib.pyplot as plt

    measured = [(n, r) for n, r in rows if r["latency_ms"] and r.get("latencies_ms")]
    if not measured:
        return None
    hosts = {r["host"] for _, r in measured}
    fig, ax = plt.subplots(figsize=(WIDTH_IN, 0.42 * len(measured) + 1.4), dpi=DPI)
    ax.boxplot([r["latencies_ms"] for _, r in measured], orientation="horizontal", showfliers=False,
               medianprops={"color": "black"})
    ax.set_xscale("log")
    values = [v for _, r in measured for v in r["latencies_ms"]]
    ax.set_xlim(*_log_limits([min(values), max(values)]))
    _log_axis(ax.xaxis, *ax.get_xlim())
    labels = [f"{n}. {variant_name(r)}" + (f" [{r['host']}]" if len(hosts) > 1 else "") for n, r in measured]
    ax.set_yticks(range(1, len(measured) + 1), labels, fontsize=8.5)
    for tick, (n, _) in zip(ax.get_yticklabels(), measured):
        if n in shipped:
            tick.set_color(SHIP_COLOR)
            tick.set_fontweight("bold")
    ax.invert_yaxis()  # row 1 on top, as in the table
    ax.set_xlabel("latency (ms, log scale; box: quartiles, whiskers: 1.5 IQR, line: median)")
    ax.set_title("Latency distributions", loc="left")
    ax.grid(alpha=0.3, axis="x", which="both")
    image = _png(fig)
    plt.close(fig)
    return image


def sizes(rows: list[tuple[int, dict[str, Any]]], shipped: set[int]) -> str | None:
    """One bar per artifact file, named by its variant like the other plots, in table order."""
    import matplotlib.pyplot as plt

    first: dict[str, tuple[int, dict[str, Any]]] = {}
    for n, r in rows:
        if r["size_bytes"]:
            first.setdefault(r["artifact"], (n, r))
    if not first:
        return None
    ship_artifacts = {r["artifact"] for n, r in rows if n in shipped}
    items = list(first.values())
    fig, ax = plt.subplots(figsize=(WIDTH_IN, 0.4 * len(items) + 1.3), dpi=DPI)
    megabytes = [r["size_bytes"] / 1e6 for _, r in items]
    colors = [SHIP_COLOR if r["artifact"] in ship_artifacts else "#4c72b0" for _, r in items]
    bars = ax.barh(range(len(items)), megabytes, color=colors)
    ax.set_yticks(range(len(items)), [f"{r['label']}  ({r['artifact']})" for _, r in items], fontsize=8.5)
    ax.bar_label(bars, [f"{mb:.2f} MB" for mb in megabytes], padding=3, fontsize=8)
    ax.set_xlim(0, max(megabytes) * 1.15)
    ax.invert_yaxis()
    ax.set_xlabel("size (MB)" + ("; green: shipped" if ship_artifacts else ""))
    ax.set_title("Artifact sizes", loc="left")
    ax.grid(alpha=0.3, axis="x")
    image = _png(fig)
    plt.close(fig)
    return image


def plots(rows: list[tuple[int, dict[str, Any]]], shipped: set[int]) -> dict[str, str]:
    """The plots that have data, by name; ``rows``: (table row number, row); ``shipped``: their numbers."""
    import matplotlib

    matplotlib.use("Agg")
    images = {"tradeoff": tradeoff(rows, shipped), "latency": latency_boxes(rows, shipped),
              "sizes": sizes(rows, shipped)}
    return {name: uri for name, uri in images.items() if uri}
