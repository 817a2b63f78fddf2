"""What the run report and the search report draw alike: the Pareto front and its figures.
Below both (``pipeline.running.report`` and ``pipeline.search`` import it; it imports neither)."""
from __future__ import annotations

import io


def pareto(rows: list[dict]) -> None:
    """Mark rows not dominated in (accuracy ↑ or reconstruction error ↓, p50 ↓, size ↓)."""
    from pipeline.device.timing import faster

    for row in rows:  # latency differences within the rounds' spread are ties, not wins
        row["pareto"] = row["p50_ms"] is not None and not any(
            other is not row and other["p50_ms"] is not None
            and other["score"] >= row["score"] and not faster(row, other)
            and other["size_kb"] <= row["size_kb"]
            and (other["score"] > row["score"] or faster(other, row)
                 or other["size_kb"] < row["size_kb"])
            for other in rows)


# Latency spread beyond which the latency axis is logarithmic (int8 vs float32 on a slow
# device easily spans 10x; a linear axis then crushes the fast artifacts into one corner).
LOG_AXIS_SPREAD = 10.0


def accuracy_latency_figure(plt, rows):
    """Accuracy against p50 latency, the Pareto front, and labels that do not overlap."""
    timed = [r for r in rows if r["p50_ms"] is not None]
    if not timed:
        return None
    figure, axis = plt.subplots(figsize=(7.5, 5))
    for row in timed:
        axis.scatter(row["p50_ms"], row["value"] * 100, s=30 + row["size_kb"] / 4,
                     c="tab:green" if row["pareto"] else "tab:gray", alpha=0.8,
                     edgecolors="black" if row["recommended"] else "none")
    front = sorted((r for r in timed if r["pareto"]), key=lambda r: r["p50_ms"])
    axis.step([r["p50_ms"] for r in front], [r["value"] * 100 for r in front], where="post",
              color="tab:green", label="Pareto front (accuracy, latency, size)")
    latencies = [r["p50_ms"] for r in timed]
    if max(latencies) > LOG_AXIS_SPREAD * min(latencies):
        axis.set_xscale("log")
    axis.set_xlabel("p50 latency (ms, batch 1" + (", log scale)" if axis.get_xscale() == "log" else ")"))
    axis.set_ylabel("test accuracy (%)" if timed[0]["metric"] == "accuracy" else timed[0]["metric"])
    axis.set_title("Accuracy vs latency (marker area ~ size)")
    axis.legend(fontsize=8, loc="lower right")
    # Most important first: the recommended artifact, then the front, then the rest.
    ordered = sorted(timed, key=lambda r: (not r["recommended"], not r["pareto"], r["p50_ms"]))
    place_labels(axis, [(r["p50_ms"], r["value"] * 100) for r in ordered],
                 [f"{r['variant']}/{r['artifact'].removeprefix('model_')}" for r in ordered])
    return figure


# Where a label may sit around its point, in points: right, left, above, below, then farther.
_LABEL_OFFSETS = ((5, 3), (-5, 3), (5, -11), (-5, -11), (0, 9), (0, -17), (12, 12), (-12, 12),
                  (12, -22), (-12, -22))


def place_labels(axis, points, labels, fontsize: int = 7) -> list:
    """Put each label at the first offset where it overlaps no label already placed and stays
    inside the axes; a label with no free place is left out (the report's table lists every
    artifact). Returns the placed labels' boxes in display coordinates."""
    figure = axis.figure
    figure.tight_layout()
    renderer = figure.canvas.get_renderer()
    frame = axis.get_window_extent(renderer)
    placed = []
    for (x, y), label in zip(points, labels):
        for dx, dy in _LABEL_OFFSETS:
            text = axis.annotate(label, (x, y), xytext=(dx, dy), textcoords="offset points",
                                 fontsize=fontsize, ha="left" if dx >= 0 else "right")
            box = text.get_window_extent(renderer)
            inside = frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
            if inside and not any(box.overlaps(other) for other in placed):
                placed.append(box)
                break
            text.remove()
    return placed


def png_bytes(figure) -> bytes:
    """A figure as PNG bytes (tight layout, 110 dpi)."""
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()
