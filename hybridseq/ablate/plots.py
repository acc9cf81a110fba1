"""Sweep plots (PNG): the headline metric per variant as mean ± std over seeds, and learning curves
(training loss and the validation metric per epoch, mean over seeds).

Means are drawn as points with error bars on an axis fitted to the data, never as bars from zero, where
differences of a point or two vanish. When the sweep has a numeric axis (``data.irregular.drop``, say),
the metric is drawn against it, one line per remaining configuration, the lines set slightly apart along
x so their error bars stay visible (ticks mark the true values). Legends sit outside the axes, and
epoch axes have integer ticks. ``*_figure`` builds the matplotlib figure (for tests and notebooks),
``plot_*`` saves it.
"""
from __future__ import annotations

import io
from pathlib import Path

from ..io import atomic_write_bytes

DODGE = 0.012               # horizontal offset between lines, as a fraction of the axis' span
LEGEND_OUTSIDE = {"loc": "upper left", "bbox_to_anchor": (1.02, 1.0), "borderaxespad": 0.0, "fontsize": 8}


def _save(plt, fig, path: Path) -> Path:
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=120, bbox_inches="tight")     # tight: keeps the outside legend
    finally:
        plt.close(fig)
    return atomic_write_bytes(path, buffer.getvalue())


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def metric_figure(rows: list[dict], key: str, axis=None):
    """``key`` per configuration, mean ± std over seeds. ``axis`` (from `Sweep.numeric_axis`: the axis key
    and label -> (line label, x)) draws it against that axis; without it, one point per variant."""
    rows = [r for r in rows if r.get(key)]
    if not rows:
        return None
    plt = _pyplot()
    points = axis[1] if axis is not None else {}
    if all(r["variant"] in points for r in rows):
        fig, ax = plt.subplots(figsize=(6.5, 3.8))
        lines: dict[str, list] = {}
        for r in rows:
            line, x = points[r["variant"]]
            lines.setdefault(line, []).append((x, *r[key]))
        ticks = sorted({x for values in lines.values() for x, _, _ in values})
        step = DODGE * ((ticks[-1] - ticks[0]) or 1.0)
        for i, (line, values) in enumerate(lines.items()):
            xs, means, stds = zip(*sorted(values))
            shift = (i - (len(lines) - 1) / 2) * step          # side by side, so error bars do not hide each other
            ax.errorbar([x + shift for x in xs], means, yerr=stds, marker="o", ms=4, capsize=3, label=line)
        ax.set_xticks(ticks)
        ax.set_xlabel(axis[0])
        if len(lines) > 1 or next(iter(lines)) != "base":
            ax.legend(**LEGEND_OUTSIDE)
    else:
        fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(rows)), 3.5))
        means, stds = zip(*(r[key] for r in rows))
        ax.errorbar(range(len(rows)), means, yerr=stds, fmt="o", ms=5, capsize=4, color="tab:blue")
        ax.set_xticks(range(len(rows)), [r["variant"] for r in rows], rotation=30, ha="right")
        ax.set_xlim(-0.5, len(rows) - 0.5)
    ax.set_ylabel(key)
    ax.set_title(f"{key} (mean ± std over seeds)")
    ax.grid(alpha=0.3)
    return fig


def plot_metric(rows: list[dict], key: str, path, axis=None) -> Path | None:
    """Save `metric_figure` as PNG at ``path``."""
    fig = metric_figure(rows, key, axis)
    return None if fig is None else _save(_pyplot(), fig, Path(path))


def curves_figure(records: list[dict]):
    """Training loss and validation metric per epoch, one line per variant (mean over its seeds)."""
    ok = [r for r in records if r.get("status") == "ok" and r.get("curves")]
    if not ok:
        return None
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    keys = ["train_loss", *sorted({k for r in ok for k in r["curves"] if k.startswith("val_") and k != "val_loss"})]
    fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 3.5), squeeze=False)
    variants: dict[str, list[dict]] = {}
    for r in ok:
        variants.setdefault(r["variant"], []).append(r)
    for ax, key in zip(axes[0], keys):
        for variant, group in variants.items():
            curves = [[v for v in r["curves"].get(key) or [] if v is not None] for r in group]
            n = min((len(c) for c in curves if c), default=0)
            if n:
                mean = [sum(c[i] for c in curves if c) / len([c for c in curves if c]) for i in range(n)]
                ax.plot(range(1, n + 1), mean, marker="o", ms=3, label=variant)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
    axes[0][-1].legend(**LEGEND_OUTSIDE)
    return fig


def plot_curves(records: list[dict], path) -> Path | None:
    """Save `curves_figure` as PNG at ``path``."""
    fig = curves_figure(records)
    return None if fig is None else _save(_pyplot(), fig, Path(path))
