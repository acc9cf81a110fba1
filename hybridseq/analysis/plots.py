"""PNG plots of the analysis results (matplotlib, Agg backend: no display needed).

Colours that encode a value (depth t, a heat map's magnitude) come with a colour bar; legends sit outside
the axes; index axes (exponent, channel, head) have integer ticks. Each ``*_figure`` builds the figure
(for tests and notebooks) and ``plot_*`` saves it as PNG.
"""
from __future__ import annotations

from pathlib import Path

LEGEND_OUTSIDE = {"loc": "upper left", "bbox_to_anchor": (1.02, 1.0), "borderaxespad": 0.0, "fontsize": 7}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    plt = _pyplot()
    try:
        fig.savefig(path, dpi=100, bbox_inches="tight")              # tight: keeps the outside legends
    finally:
        plt.close(fig)
    return path


def _integer_ticks(ax) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def spectra_figure(spec: dict, title: str):
    """Eigenvalues of W_Q W_Kᵀ and W_V W_O in the complex plane coloured by t, and the largest real
    part per head as a function of t."""
    plt = _pyplot()
    ff = "ff_singular" in spec                                                 # a head may not offer it
    fig, axes = plt.subplots(2, 3 if ff else 2, figsize=(15 if ff else 10, 8))
    cmap = plt.get_cmap("viridis")
    for col, (name, label) in enumerate((("qk", "W_Q W_Kᵀ"), ("vo", "W_V W_O"))):
        ax = axes[0, col]
        for t, heads in zip(spec["t"], spec[name]):
            points = [p for head in heads for p in head]
            ax.scatter([p[0] for p in points], [p[1] for p in points], s=8, color=cmap(t))
        scale = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(0, 1))
        fig.colorbar(scale, ax=ax, label="depth t")
        ax.axvline(0, color="grey", lw=0.5)
        ax.set(title=f"eigenvalues of {label} (colour: t)", xlabel="Re", ylabel="Im")
        ax = axes[1, col]
        per_head = list(zip(*spec[f"{name}_max_real"]))                       # [H][T]
        for h, values in enumerate(per_head):
            ax.plot(spec["t"], values, marker="o", ms=3, label=f"head {h}")
        ax.axhline(0, color="grey", lw=0.5)
        ax.set(title=f"max Re λ({label})", xlabel="depth t")
        ax.legend(**LEGEND_OUTSIDE)
    if ff:
        ax = axes[0, 2]
        for t, values in zip(spec["t"], spec["ff_singular"]):
            ax.plot(range(1, len(values) + 1), values, color=cmap(t))
        fig.colorbar(plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(0, 1)), ax=ax, label="depth t")
        ax.set(title="singular values of W_2 W_1 (feed-forward)", xlabel="index", ylabel="σ", yscale="log")
        _integer_ticks(ax)
        ax = axes[1, 2]
        ax.plot(spec["t"], [values[0] for values in spec["ff_singular"]], marker="o", ms=3)
        ax.set(title="largest σ(W_2 W_1)", xlabel="depth t")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_spectra(spec: dict, path: Path, title: str) -> Path:
    return _save(spectra_figure(spec, title), path)


def lyapunov_figure(lyap: dict, title: str):
    """The top-k Lyapunov exponents: one line per sample and their mean."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    index = list(range(1, len(lyap["mean"]) + 1))
    for row in lyap["per_sample"]:
        ax.plot(index, row, color="lightgrey", lw=1)
    ax.plot(index, lyap["mean"], color="black", marker="o", label="mean over samples")
    ax.axhline(0, color="grey", lw=0.5)
    ax.set(xlabel="exponent index", ylabel="λ (per unit depth)", title=title)
    _integer_ticks(ax)
    ax.legend(**LEGEND_OUTSIDE)
    return fig


def plot_lyapunov(lyap: dict, path: Path, title: str) -> Path:
    return _save(lyapunov_figure(lyap, title), path)


def _heatmap(fig, ax, values, title: str, xlabel: str, ylabel: str, label: str) -> None:
    image = ax.imshow(values, cmap="magma", origin="upper", aspect="auto")
    fig.colorbar(image, ax=ax, label=label)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)


def sensitivity_figure(sensitivity: list, title: str):
    """Heat map of ‖∂y_j/∂x_i‖_F: output token j (rows) against input token i (columns)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    _heatmap(fig, ax, sensitivity, f"{title}: token sensitivity", "input token i", "output token j",
             "‖∂y_j / ∂x_i‖_F")
    return fig


def plot_sensitivity(sensitivity: list, path: Path, title: str) -> Path:
    return _save(sensitivity_figure(sensitivity, title), path)


def pde_figure(pde: dict, title: str):
    """The learned coefficients per field; for ``target: weights`` the attention before and after the PDE."""
    plt = _pyplot()
    maps = "attention_before" in pde
    fig, axes = plt.subplots(1, 3 if maps else 1, figsize=(15 if maps else 6, 4), squeeze=False)
    ax = axes[0, 0]
    for name, values in pde["coefficients"].items():
        ax.plot(range(len(values)), values, marker="o", ms=3, label=name)
    field = "channel" if pde["target"] == "states" else "head"
    ax.set(title=f"{pde['pde']} coefficients (T = {pde['time']})", xlabel=field, ylabel="value")
    _integer_ticks(ax)
    ax.legend(**LEGEND_OUTSIDE)
    if maps:
        for ax, key, label in ((axes[0, 1], "attention_before", "softmax"), (axes[0, 2], "attention_after",
                                                                            "after the PDE")):
            _heatmap(fig, ax, pde[key], f"attention, {label} (mean over heads)", "key", "query", "weight")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_pde(pde: dict, path: Path, title: str) -> Path:
    return _save(pde_figure(pde, title), path)
