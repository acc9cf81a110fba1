"""PNG plots of the analysis results (matplotlib, Agg backend: no display needed)."""
from __future__ import annotations

from pathlib import Path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_spectra(spec: dict, path: Path, title: str) -> Path:
    """Eigenvalues of W_Q W_Kᵀ and W_V W_O in the complex plane coloured by t, and the largest real
    part per head as a function of t."""
    plt = _pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(10, 8))
    cmap = plt.get_cmap("viridis")
    for col, (name, label) in enumerate((("qk", "W_Q W_Kᵀ"), ("vo", "W_V W_O"))):
        ax = axes[0, col]
        for t, heads in zip(spec["t"], spec[name]):
            points = [p for head in heads for p in head]
            ax.scatter([p[0] for p in points], [p[1] for p in points], s=8, color=cmap(t))
        ax.axvline(0, color="grey", lw=0.5)
        ax.set(title=f"eigenvalues of {label} (colour: t)", xlabel="Re", ylabel="Im")
        ax = axes[1, col]
        per_head = list(zip(*spec[f"{name}_max_real"]))                       # [H][T]
        for h, values in enumerate(per_head):
            ax.plot(spec["t"], values, marker="o", ms=3, label=f"head {h}")
        ax.axhline(0, color="grey", lw=0.5)
        ax.set(title=f"max Re λ({label})", xlabel="depth t")
        ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_lyapunov(lyap: dict, path: Path, title: str) -> Path:
    """The top-k Lyapunov exponents: one line per sample and their mean."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    index = list(range(1, len(lyap["mean"]) + 1))
    for row in lyap["per_sample"]:
        ax.plot(index, row, color="lightgrey", lw=1)
    ax.plot(index, lyap["mean"], color="black", marker="o", label="mean over samples")
    ax.axhline(0, color="grey", lw=0.5)
    ax.set(xlabel="exponent index", ylabel="λ (per unit depth)", title=title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
