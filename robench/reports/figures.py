"""Matplotlib figures for the HTML report, returned as embedded PNG data URIs.

Figures are drawn on ``matplotlib.figure.Figure`` with the Agg canvas directly, never through
pyplot, so making a report neither needs a display nor changes the caller's matplotlib backend.
"""
from __future__ import annotations

import base64
import io
from collections.abc import Sequence

import pandas as pd

#: colours per defense, the same in every figure of a report (matplotlib's tab10)
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
CURVE_COLUMNS = ("defense", "epsilon", "robust_accuracy", "robust_accuracy_low", "robust_accuracy_high")


def new_figure(width: float, height: float):  # -> matplotlib.figure.Figure
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=110, layout="constrained")
    return figure


def to_data_uri(figure) -> str:
    """PNG bytes of a figure as a ``data:`` URI (self-contained HTML: no external files)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def plain(text: str) -> str:
    """A name as matplotlib text: ``$`` would start mathtext (and a stray one fails to render)."""
    return str(text).replace("$", r"\$")


def tidy(ax) -> None:
    """A light grid and no top or right spine: the look of every panel of a report."""
    ax.grid(True, alpha=0.3)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def colors(defenses: Sequence[str]) -> dict[str, str]:
    return {d: PALETTE[i % len(PALETTE)] for i, d in enumerate(defenses)}


def epsilon_axes(ax, epsilons: Sequence[float], title: str) -> None:
    """Robust accuracy (0 to 1) against the run's epsilons, ticks at each; one epsilon gets room on both sides."""
    ax.set_title(title, fontsize=11)
    ax.set_xlabel("epsilon")
    ax.set_ylim(-0.03, 1.03)
    tidy(ax)
    ax.set_xticks(epsilons)
    ax.set_xticklabels([f"{e:g}" for e in epsilons])
    if len(epsilons) == 1:
        ax.set_xlim(epsilons[0] * 0.5 if epsilons[0] else -1, epsilons[0] * 1.5 if epsilons[0] else 1)


def _draw_curves(ax, curves: pd.DataFrame, palette: dict[str, str], title: str) -> None:
    """One line per defense with its confidence interval as a band (error bars for one epsilon)."""
    epsilons = sorted(curves["epsilon"].unique())
    for defense, color in palette.items():
        rows = curves[curves["defense"] == defense].sort_values("epsilon")
        if rows.empty:
            continue
        x, y = rows["epsilon"].to_numpy(float), rows["robust_accuracy"].to_numpy(float)
        low, high = rows["robust_accuracy_low"].to_numpy(float), rows["robust_accuracy_high"].to_numpy(float)
        if len(rows) > 1:
            ax.fill_between(x, low, high, color=color, alpha=0.18, linewidth=0)
            ax.plot(x, y, marker="o", color=color, label=plain(defense), linewidth=2, markersize=5)
        else:
            ax.errorbar(x, y, yerr=[y - low, high - y], fmt="o", color=color, label=plain(defense), capsize=5, markersize=6)
    epsilon_axes(ax, epsilons, title)


def robust_accuracy_figure(curves: pd.DataFrame, palette: dict[str, str]) -> str:
    """Worst-case robust accuracy against epsilon, one line per defense, the 95% interval as a band."""
    figure = new_figure(7.2, 3.9)
    ax = figure.add_subplot()
    _draw_curves(ax, curves, palette, "Worst-case robust accuracy (all attacks)")
    ax.set_ylabel("robust accuracy")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=9)
    return to_data_uri(figure)


def gradient_vs_worst_figure(gradient: pd.DataFrame, worst: pd.DataFrame, palette: dict[str, str], *,
                             gradient_title: str = "Gradient attacks only") -> str:
    """Gradient attacks alone next to the worst case over all attacks, on the same axes.

    A defense whose left curve sits well above its right one is robust only to gradients: the
    signature of gradient masking (Uesato et al. 2018, Sec. 5; Athalye et al. 2018).
    """
    figure = new_figure(9.6, 3.9)
    left, right = figure.subplots(1, 2, sharey=True)
    _draw_curves(left, gradient, palette, gradient_title)
    _draw_curves(right, worst, palette, "Worst case over all attacks")
    left.set_ylabel("robust accuracy")
    right.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=9)
    return to_data_uri(figure)


def bracket_figure(worst: pd.DataFrame, palette: dict[str, str]) -> str:
    """Certified (lower bound) and attacked (upper bound) robust accuracy against epsilon; the
    band between them is where the true robust accuracy lies."""
    figure = new_figure(7.2, 3.9)
    ax = figure.add_subplot()
    rows = worst[worst["certified_accuracy"].notna()].astype({"epsilon": float})
    epsilons = sorted(rows["epsilon"].unique())
    for defense, color in palette.items():
        group = rows[rows["defense"] == defense].sort_values("epsilon")
        if group.empty:
            continue
        x = group["epsilon"].to_numpy(float)
        certified, attacked = group["certified_accuracy"].to_numpy(float), group["robust_accuracy"].to_numpy(float)
        if len(group) > 1:
            ax.fill_between(x, certified, attacked, color=color, alpha=0.22, linewidth=0)
            ax.plot(x, certified, color=color, linewidth=2, marker="o", markersize=4, label=f"{plain(defense)} certified")
            ax.plot(x, attacked, color=color, linewidth=1.5, linestyle="--", marker="v", markersize=4, label=f"{plain(defense)} attacked")
        else:
            ax.vlines(x, certified, attacked, color=color, linewidth=8, alpha=0.3)
            ax.plot(x, certified, "o", color=color, label=f"{plain(defense)} certified")
            ax.plot(x, attacked, "v", color=color, label=f"{plain(defense)} attacked")
    epsilon_axes(ax, epsilons, "Certified <= true <= attacked robust accuracy")
    ax.set_ylabel("robust accuracy")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=9)
    return to_data_uri(figure)
