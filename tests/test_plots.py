"""Plots a reader keeps: the figure objects of the sweep and analysis plots, inspected (error bars rather
than bars from zero, the metric against a numeric axis, integer epoch/index ticks, legends outside the
data, colour bars where colour encodes a value)."""
import math

import matplotlib
import pytest

matplotlib.use("Agg")
from matplotlib.container import BarContainer, ErrorbarContainer  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from hybridseq.ablate import load_sweep, report  # noqa: E402
from hybridseq.ablate.plots import curves_figure, metric_figure  # noqa: E402
from hybridseq.analysis.plots import lyapunov_figure, pde_figure, sensitivity_figure, spectra_figure  # noqa: E402

ENCODERS = "configs/sweeps/encoders.yaml"          # axes: model.encoder (6) x data.irregular.drop (0.3, 0.5, 0.7)


def _outside(fig, ax, legend) -> bool:
    """The legend's box lies right of the axes' box (no data hidden under it)."""
    fig.canvas.draw()
    box, frame = legend.get_window_extent(), ax.get_window_extent()
    return box.x0 >= frame.x1


def _integer_ticks(fig, ax) -> bool:
    fig.canvas.draw()
    locator = ax.xaxis.get_major_locator()
    lo, hi = ax.get_xlim()
    ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
    return isinstance(locator, MaxNLocator) and locator._integer and all(float(t).is_integer() for t in ticks)


def _colorbars(fig) -> list:
    return [a for a in fig.axes if a.get_label() == "<colorbar>"]


def _encoder_rows():
    sweep = load_sweep(ENCODERS)
    rows = []
    for i, (label, _) in enumerate(sweep.groups()):
        encoder = i // 3
        drop = (0.3, 0.5, 0.7)[i % 3]
        rows.append({"variant": label, "test_accuracy": (0.95 - 0.1 * drop - 0.01 * encoder, 0.01 + 0.001 * i)})
    return sweep, rows


def test_metric_against_the_drop_ratio_is_lines_with_error_bars():
    sweep, rows = _encoder_rows()
    key, points = sweep.numeric_axis()
    assert key == "data.irregular.drop"
    fig = metric_figure(rows, "test_accuracy", sweep.numeric_axis())
    ax = fig.axes[0]
    bars = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    assert len(bars) == 6 and not [c for c in ax.containers if isinstance(c, BarContainer)] and not ax.patches
    shifts = []
    for container in bars:
        line = container.lines[0]
        xs = list(line.get_xdata())
        assert xs == pytest.approx([0.3, 0.5, 0.7], abs=0.02) and line.get_linestyle() != "None"   # a line
        shifts.append(xs[0] - 0.3)
        assert container.has_yerr
    assert len(set(shifts)) == 6 and sum(shifts) == pytest.approx(0, abs=1e-12)    # set apart, centred
    first = bars[0].lines[0]
    assert list(first.get_ydata()) == pytest.approx([0.95 - 0.03, 0.95 - 0.05, 0.95 - 0.07])
    assert ax.get_xlabel() == "data.irregular.drop" and list(ax.get_xticks()) == [0.3, 0.5, 0.7]
    assert ax.get_ylim()[0] > 0.7                                   # fitted to the data (>= 0.78), not from 0
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == [f"encoder={e}" for e in ("linear", "ode_rnn", "gru_ode", "ncde", "mtan", "contiformer")]
    assert _outside(fig, ax, ax.get_legend())


def test_metric_per_variant_is_points_with_error_bars():
    rows = [{"variant": v, "test_accuracy": (m, 0.01)} for v, m in (("a", 0.91), ("b", 0.93), ("c", 0.92))]
    fig = metric_figure(rows, "test_accuracy")
    ax = fig.axes[0]
    (container,) = ax.containers
    assert isinstance(container, ErrorbarContainer) and not ax.patches
    assert container.lines[0].get_linestyle() == "None"             # points: variants are not a continuum
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b", "c"]
    assert ax.get_ylim()[0] > 0.85
    assert metric_figure([], "test_accuracy") is None


def test_learning_curves_have_integer_epochs_and_the_legend_outside():
    records = [{"status": "ok", "variant": v, "seed": s,
                "curves": {"train_loss": [1.0 / (e + s + k) for e in range(1, 8)],
                           "val_accuracy": [0.5 + 0.05 * e for e in range(7)]}}
               for k, v in enumerate(("a", "b")) for s in (1, 2)]
    fig = curves_figure(records)
    assert len(fig.axes) == 2
    for ax in fig.axes:
        assert len(ax.lines) == 2 and list(ax.lines[0].get_xdata()) == list(range(1, 8))
        assert _integer_ticks(fig, ax)
    legend = fig.axes[-1].get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["a", "b"] and _outside(fig, fig.axes[-1], legend)


def test_report_writes_the_drop_plot(tmp_path):
    sweep, rows = _encoder_rows()
    records = [{"status": "ok", "variant": r["variant"], "seed": s, "run_id": f"{i}-{s}",
                "test_accuracy": r["test_accuracy"][0] + 0.01 * s, "monitor": "val_accuracy",
                "curves": {"train_loss": [1.0, 0.5]}}
               for i, r in enumerate(rows) for s in (0, 1)]
    report(sweep, tmp_path, records)
    assert (tmp_path / "plots" / "test_accuracy.png").read_bytes()[:4] == b"\x89PNG"


def _spectra(heads=2, ff=True):
    t = [0.0, 0.5, 1.0]
    spec = {"t": t,
            "qk": [[[[math.cos(h + i), math.sin(h)] for i in range(3)] for h in range(heads)] for _ in t],
            "vo": [[[[-0.5 + h, 0.1 * i] for i in range(3)] for h in range(heads)] for _ in t],
            "qk_max_real": [[0.1 * h + x for h in range(heads)] for x in t],
            "vo_max_real": [[-0.2 * h + x for h in range(heads)] for x in t]}
    if ff:
        spec["ff_singular"] = [[3.0 - x, 2.0, 1.0, 0.5] for x in t]
    return spec


@pytest.mark.parametrize("ff", [True, False])
def test_spectra_have_colour_bars_and_legends_outside(ff):
    fig = spectra_figure(_spectra(ff=ff), "head")
    bars = _colorbars(fig)
    assert len(bars) == (3 if ff else 2) and all(b.get_ylabel() == "depth t" for b in bars)
    panels = [a for a in fig.axes if a.get_label() != "<colorbar>"]
    lower = [a for a in panels if a.get_title().startswith("max Re")]
    assert len(lower) == 2
    for ax in lower:
        assert len(ax.lines) >= 2 and _outside(fig, ax, ax.get_legend())
    if ff:
        (singular,) = [a for a in panels if a.get_title().startswith("singular")]
        assert _integer_ticks(fig, singular)


def test_lyapunov_pde_and_sensitivity_figures():
    fig = lyapunov_figure({"mean": [0.3, -0.1, -0.5], "per_sample": [[0.2, -0.2, -0.6], [0.4, 0.0, -0.4]]}, "x")
    ax = fig.axes[0]
    assert len(ax.lines) == 3 + 1 and _integer_ticks(fig, ax) and _outside(fig, ax, ax.get_legend())
    pde = {"pde": "diffusion", "time": 1.0, "target": "weights", "coefficients": {"D": [0.1, 0.2, 0.3]},
           "attention_before": [[0.5, 0.5], [0.2, 0.8]], "attention_after": [[0.6, 0.4], [0.3, 0.7]]}
    fig = pde_figure(pde, "x")
    assert len(_colorbars(fig)) == 2
    ax = fig.axes[0]
    assert _integer_ticks(fig, ax) and _outside(fig, ax, ax.get_legend())
    fig = sensitivity_figure([[1.0, 0.1], [0.2, 1.0]], "x")
    assert len(_colorbars(fig)) == 1
