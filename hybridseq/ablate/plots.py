"""Sweep plots (PNG): the headline metric per variant with error bars (std over seeds), and learning
curves (training loss and the validation metric per epoch, mean over seeds)."""
from __future__ import annotations

import io
from pathlib import Path

from ..io import atomic_write_bytes


def _save(fig, path: Path) -> Path:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    return atomic_write_bytes(path, buffer.getvalue())


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_metric(rows: list[dict], key: str, path) -> Path | None:
    """Bar chart of ``key`` per variant, mean ± std over seeds."""
    rows = [r for r in rows if r.get(key)]
    if not rows:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(rows)), 3.5))
    means, stds = zip(*(r[key] for r in rows))
    ax.bar(range(len(rows)), means, yerr=stds, capsize=4, color="tab:blue", alpha=0.8)
    ax.set_xticks(range(len(rows)), [r["variant"] for r in rows], rotation=30, ha="right")
    ax.set_ylabel(key)
    ax.set_title(f"{key} (mean ± std over seeds)")
    ax.grid(axis="y", alpha=0.3)
    try:
        return _save(fig, Path(path))
    finally:
        plt.close(fig)


def plot_curves(records: list[dict], path) -> Path | None:
    """Training loss and validation metric per epoch, one line per variant (mean over its seeds)."""
    ok = [r for r in records if r.get("status") == "ok" and r.get("curves")]
    if not ok:
        return None
    plt = _pyplot()
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
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    try:
        return _save(fig, Path(path))
    finally:
        plt.close(fig)
