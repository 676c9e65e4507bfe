"""The board as a chart: metric against mean NFE with stderr bars."""

import math
from pathlib import Path


MARKERS = "osD^vP*Xph<>"


def chart(board: dict, path: Path) -> None:
    """Metric against mean NFE with stderr bars: one panel per (model, task, metric, filter), one colour and
    marker per sampler. Samplers that land on the same point are drawn side by side (a small horizontal
    offset, said in the axis label) so that none hides another."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    plotted = [row for row in board["rows"] if row["mean_nfe"]]
    panels = sorted({(row["model"], row["task"], row["metric"], row["filter"] or "") for row in plotted})
    samplers = sorted({row["label"] for row in plotted} | {row["sampler"] for row in board["reference_rows"]})
    style = {name: (pyplot.get_cmap("tab10")(index % 10), MARKERS[index % len(MARKERS)])
             for index, name in enumerate(samplers)}
    columns = max(1, min(2, len(panels)))
    rows_count = max(1, math.ceil(len(panels) / columns))
    figure, axes = pyplot.subplots(rows_count, columns, figsize=(6.5 * columns, 4.2 * rows_count), squeeze=False,
                                   layout="constrained")
    for axis, (model, task, metric, filter_name) in zip(axes.flat, panels):
        points = [row for row in plotted if (row["model"], row["task"], row["metric"], row["filter"] or "")
                  == (model, task, metric, filter_name)]
        draw_panel(axis, points, style)
        for row in board["reference_rows"]:
            if (row["task"], row["metric"]) == (task, metric) and row["nfe"]:
                colour, marker = style[row["sampler"]]
                axis.scatter(row["nfe"], row["value"], facecolors="none", edgecolors=colour, marker=marker,
                             label=f"{row['sampler']} (reference)")
        axis.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
        axis.set_title(f"{model}\n{task}: {metric}" + (f" ({filter_name})" if filter_name not in ("", "none") else ""),
                       fontsize=9)
        axis.set_ylabel(metric)
        axis.grid(alpha=0.3)
    for axis in list(axes.flat)[len(panels):]:
        axis.set_visible(False)
    figure.savefig(path, dpi=100, metadata={"Software": None})
    pyplot.close(figure)


def draw_panel(axis, points: list[dict], style: dict) -> None:
    """One sampler per point, with its stderr bar; points at the same (NFE, value) spread sideways."""
    span = max((row["mean_nfe"] for row in points), default=1.0) - min((row["mean_nfe"] for row in points), default=0.0)
    step = 0.012 * max(span, max((row["mean_nfe"] for row in points), default=1.0) * 0.2)
    seen: dict[tuple, int] = {}
    for row in points:
        spot = (round(row["mean_nfe"], 1), round(row["value"], 3))
        offset = seen.get(spot, 0)
        seen[spot] = offset + 1
        colour, marker = style[row["label"]]
        axis.errorbar(row["mean_nfe"] + offset * step, row["value"], yerr=row["stderr"] or 0.0, fmt=marker,
                      color=colour, markersize=6, capsize=3, elinewidth=1, label=row["label"])
    shifted = any(count > 1 for count in seen.values())
    axis.set_xlabel("mean NFE per request" + (" (equal points drawn side by side)" if shifted else ""))
