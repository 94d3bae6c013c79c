"""The report's image grid: clean, adversarial and perturbation images of a few broken examples.

Seeing the perturbation is the quickest sanity check of an evaluation: it must stay inside the
threat model's ball, and an attack that "succeeds" with an invisible or saturated change is worth
a second look.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from robench.reports.figures import new_figure, plain, to_data_uri

#: broken examples shown per (defense, epsilon)
MAX_EXAMPLES = 6


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
        axes[0, j].set_title(plain(titles[j]) if j < len(titles) else "", fontsize=8)
        for i in range(3):
            axes[i, j].set_xticks([])
            axes[i, j].set_yticks([])
    for i, name in enumerate(rows):
        axes[i, 0].set_ylabel(name, fontsize=8)
    return to_data_uri(figure)
