"""Random resizing and padding (Xie, Wang, Zhang, Ren, Yuille 2018), randomized.

Xie et al. resize a 299x299 image to a random r x r (r in [299, 331)) and zero-pad it to 331x331
at a random offset before the classifier. Here the classifier's input size is fixed (8x8 digits
for the cnn zoo model), so each image is shrunk to a random ``size`` in
[``min_size``, its own size] and zero-padded back to its size at a random integer offset: the
same two random choices, at a scale that fits. ``min_size`` defaults to ``floor(min_scale * size)``
with ``min_scale`` = 0.875 (Xie et al.'s 299/331 = 0.90, rounded down to a whole pixel on 8x8
digits: sizes 7 and 8), so one card fits any image size.

Both steps are differentiable (bilinear resizing, padding), so the defense relies on randomness
alone; EOT (Athalye et al. 2018, Sec. 4.3) averages the gradient over draws and breaks it.
Each row draws its own size and offset from the block's seeded generator.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robench.target import IMAGE, Preprocessed, SeededDraws
from robench.errors import RobenchError
from robench.registry import defenses


class RandomResizePad(Preprocessed):
    """``model(pad(resize(x, random size), random offset))``, a fresh draw per row and call."""

    differentiable = True
    randomized = True
    independent_rows = True  # a size and an offset per row

    def __init__(self, model: nn.Module, *, min_size: int | None = None, min_scale: float = 0.875, seed: int = 0) -> None:
        super().__init__(model)
        self.min_size = min_size
        self.min_scale = min_scale
        self.draws = SeededDraws(seed)

    def transform(self, x: Tensor) -> Tensor:
        n, _, h, w = x.shape
        min_size = self.min_size if self.min_size is not None else max(1, math.floor(self.min_scale * min(h, w)))
        if not min_size <= min(h, w):
            raise RobenchError(f"random_resize_pad: min_size {min_size} exceeds the image size {h}x{w}; use a smaller min_size")
        generator = self.draws.generator(x.device)
        sizes = torch.randint(min_size, min(h, w) + 1, (n,), generator=generator, device=x.device)
        u = torch.rand((n, 2), generator=generator, device=x.device)
        out = torch.zeros_like(x)
        for size in sizes.unique().tolist():
            rows = (sizes == size).nonzero().flatten()
            sh, sw = round(h * size / min(h, w)), round(w * size / min(h, w))  # keep the aspect ratio
            small = F.interpolate(x[rows], size=(sh, sw), mode="bilinear", align_corners=False, antialias=True)
            top = (u[rows, 0] * (h - sh + 1)).long()
            left = (u[rows, 1] * (w - sw + 1)).long()
            # scatter each row's resized image into its canvas at (top, left)
            ii = top.view(-1, 1, 1) + torch.arange(sh, device=x.device).view(1, -1, 1)
            jj = left.view(-1, 1, 1) + torch.arange(sw, device=x.device).view(1, 1, -1)
            canvas = torch.zeros_like(x[rows])
            index = (ii * w + jj).flatten(1).unsqueeze(1).expand(-1, x.shape[1], -1)
            canvas = canvas.flatten(2).scatter(2, index, small.flatten(2)).view_as(canvas)
            out = out.index_copy(0, rows, canvas)
        return out

    def extra_repr(self) -> str:
        return f"min_size={self.min_size}, min_scale={self.min_scale}, seed={self.draws.seed}"


@defenses.register("random_resize_pad", description="random resizing and padding (Xie et al. 2018); randomized",
                   inputs=(IMAGE,))
def random_resize_pad(model: nn.Module, *, min_size: int | None = None, min_scale: float = 0.875, seed: int = 0) -> nn.Module:
    if min_size is not None and (not isinstance(min_size, int) or isinstance(min_size, bool) or min_size < 1):
        raise RobenchError(f"random_resize_pad: min_size must be a positive integer, got {min_size!r}")
    if isinstance(min_scale, bool) or not isinstance(min_scale, (int, float)) or not 0 < min_scale <= 1:
        raise RobenchError(f"random_resize_pad: min_scale must lie in (0, 1], got {min_scale!r}")
    if not isinstance(seed, int):
        raise RobenchError(f"random_resize_pad: seed must be an integer, got {seed!r}")
    return RandomResizePad(model, min_size=min_size, min_scale=float(min_scale), seed=seed)
