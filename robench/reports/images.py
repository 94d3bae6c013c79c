"""The report's grid of broken examples: clean input, adversarial input and the perturbation.

Seeing the perturbation is the quickest sanity check of an evaluation: it must stay inside the
threat model's ball, and an attack that "succeeds" with an invisible or saturated change is worth
a second look. Images (C x H x W per example) are drawn as pictures, sequences (C x L) as small
line plots of the clean and the adversarial signal over the perturbation.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from robench.reports.figures import new_figure, plain, tidy, to_data_uri

#: broken examples shown per (defense, epsilon)
MAX_EXAMPLES = 6
#: label size in points. A grid of six examples is about 7.5 inches wide and the page shows it at
#: least 560 px wide (report.html's .grids), so 11 pt renders at 11-12 px, the size of body text.
LABEL_POINTS = 11
#: channels drawn per sequence (the rest are left out, and the title says so)
MAX_CHANNELS = 3
#: what one stored example is, by the rank of the N x ... array it sits in
SEQUENCE, IMAGE = "sequence", "image"
#: line colours of the channels of a sequence: clean solid, adversarial dashed in the same hue
CHANNEL_COLORS = ("#1d2330", "#2f6fdf", "#1e7d46")
ADVERSARIAL_COLOR = "#c0392b"


def kind_of(x: np.ndarray) -> str:
    """``"sequence"`` for N x C x L, ``"image"`` for N x C x H x W (robench.reports.rundir checks the rank)."""
    ndim = np.ndim(x)
    if ndim == 3:
        return SEQUENCE
    if ndim == 4:
        return IMAGE
    raise ValueError(f"adversarial examples must be N x C x L or N x C x H x W, got {ndim} dimensions")


def example_grid(x: np.ndarray, x_adv: np.ndarray, titles: Sequence[str]) -> str:
    """The grid for a few examples of either kind, as a PNG data URI."""
    if kind_of(x) == SEQUENCE:
        return sequence_grid(x, x_adv, titles)
    return image_grid(x, x_adv, titles)


def _as_image(x: np.ndarray) -> tuple[np.ndarray, str | None]:
    """C x H x W -> what imshow takes: H x W with a grey colormap, or H x W x 3."""
    if x.shape[0] == 1:
        return x[0], "gray"
    if x.shape[0] == 3:
        return np.clip(np.transpose(x, (1, 2, 0)), 0.0, 1.0), None
    return x.mean(axis=0), "gray"


def image_grid(x: np.ndarray, x_adv: np.ndarray, titles: Sequence[str]) -> str:
    """Three rows (clean, adversarial, perturbation) and one column per example, as a PNG data URI.

    Grey images share one intensity scale (the range of both rows); the perturbation uses a
    diverging map symmetric about zero, scaled to its largest magnitude.
    """
    x, x_adv = np.asarray(x, dtype=np.float32)[:MAX_EXAMPLES], np.asarray(x_adv, dtype=np.float32)[:MAX_EXAMPLES]
    n = len(x)
    delta = x_adv - x
    scale = float(np.abs(delta).max()) or 1.0
    low, high = float(min(x.min(), x_adv.min(), 0.0)), float(max(x.max(), x_adv.max(), 1.0))
    figure = new_figure(1.15 * max(n, 2) + 0.6, 3.9)
    axes = np.asarray(figure.subplots(3, n, squeeze=False))
    rows = ("clean", "adversarial", "perturbation")
    for j in range(n):
        for i, image in enumerate((x[j], x_adv[j])):
            data, cmap = _as_image(image)
            axes[i, j].imshow(data, cmap=cmap, vmin=low, vmax=high, interpolation="nearest")
        if delta.shape[1] == 3:
            axes[2, j].imshow(np.clip(0.5 + np.transpose(delta[j], (1, 2, 0)) / (2 * scale), 0, 1), interpolation="nearest")
        else:
            axes[2, j].imshow(delta[j].mean(axis=0), cmap="RdBu_r", vmin=-scale, vmax=scale, interpolation="nearest")
        axes[0, j].set_title(plain(titles[j]) if j < len(titles) else "", fontsize=LABEL_POINTS)
        for i in range(3):
            axes[i, j].set_xticks([])
            axes[i, j].set_yticks([])
    for i, name in enumerate(rows):
        axes[i, 0].set_ylabel(name, fontsize=LABEL_POINTS)
    return to_data_uri(figure)


def sequence_grid(x: np.ndarray, x_adv: np.ndarray, titles: Sequence[str]) -> str:
    """Two rows and one column per example, as a PNG data URI: the clean signal (solid) and the
    adversarial one (dashed, red for one channel) over the positions, and below them the
    perturbation, on a scale symmetric about zero shared by every example.

    At most ``MAX_CHANNELS`` channels are drawn per example; the first example's title says when
    more were left out.
    """
    x, x_adv = np.asarray(x, dtype=np.float32)[:MAX_EXAMPLES], np.asarray(x_adv, dtype=np.float32)[:MAX_EXAMPLES]
    n, channels, length = x.shape
    shown = min(channels, MAX_CHANNELS)
    delta = x_adv - x
    scale = float(np.abs(delta[:, :shown]).max()) or 1.0
    low = float(min(x[:, :shown].min(), x_adv[:, :shown].min()))
    high = float(max(x[:, :shown].max(), x_adv[:, :shown].max()))
    pad = 0.05 * ((high - low) or 1.0)
    positions = np.arange(length)
    figure = new_figure(1.25 * max(n, 2) + 0.6, 3.4)
    axes = np.asarray(figure.subplots(2, n, squeeze=False, gridspec_kw={"height_ratios": (2, 1)}))
    for j in range(n):
        signal, perturbation = axes[0, j], axes[1, j]
        for c in range(shown):
            color = CHANNEL_COLORS[c % len(CHANNEL_COLORS)]
            adversarial = ADVERSARIAL_COLOR if shown == 1 else color
            signal.plot(positions, x[j, c], color=color, linewidth=1.0, label="clean" if c == 0 else None)
            signal.plot(positions, x_adv[j, c], color=adversarial, linewidth=1.0, linestyle="--", alpha=0.9,
                        label="adversarial" if c == 0 else None)
            perturbation.plot(positions, delta[j, c], color=adversarial, linewidth=0.9)
        perturbation.axhline(0.0, color="#999999", linewidth=0.6)
        signal.set_ylim(low - pad, high + pad)
        perturbation.set_ylim(-1.1 * scale, 1.1 * scale)
        title = plain(titles[j]) if j < len(titles) else ""
        if j == 0 and channels > shown:
            title += f"\n({shown} of {channels} channels)"
        signal.set_title(title, fontsize=LABEL_POINTS)
        for ax in (signal, perturbation):
            tidy(ax)
            ax.set_xlim(0, max(length - 1, 1))
            ax.tick_params(labelsize=6, length=2)
            if j:
                ax.set_yticklabels([])
        signal.set_xticklabels([])
    axes[0, 0].set_ylabel("signal", fontsize=LABEL_POINTS)
    axes[1, 0].set_ylabel("perturbation", fontsize=LABEL_POINTS)
    axes[0, 0].legend(loc="upper left", fontsize=LABEL_POINTS - 2, framealpha=0.85, edgecolor="none", handlelength=1.6)
    return to_data_uri(figure)
