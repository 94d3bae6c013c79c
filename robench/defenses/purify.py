"""PixelDefend: purify an input towards high PixelCNN likelihood before classifying it.

Song, Kim, Nowozin, Ermon, Kushman (ICLR 2018), Algorithm 1: visit the pixels in raster order; set
each to the most probable grey level under the PixelCNN, given the pixels already purified, among
the levels within ``eps_defend`` of its original value. Adversarial examples lie in low-density
regions, so the greedy search pulls them back towards the data manifold.

The argmax makes the transform piecewise constant: gradients are zero almost everywhere, so the
defense is non-differentiable and gradient attacks must go through BPDA with the identity as the
backward pass (Athalye, Carlini, Wagner 2018, Sec. 4.1 broke PixelDefend exactly this way). It
costs H x W PixelCNN forward passes per batch, hence the card keeps it out of the default set.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from robench.data import Dataset
from robench.target import IMAGE, Preprocessed
from robench.errors import RobenchError
from robench.registry import defenses


@torch.no_grad()
def purify(pixelcnn: nn.Module, x: Tensor, *, eps_defend: float) -> Tensor:
    """Algorithm 1 of Song et al. 2018, vectorized over the batch and channels; returns levels / (L - 1)."""
    levels = pixelcnn.levels
    scale = levels - 1
    original = pixelcnn.discretize(x)
    lo = torch.minimum(torch.ceil((x - eps_defend) * scale - 1e-6).clamp(0, scale).long(), original)
    hi = torch.maximum(torch.floor((x + eps_defend) * scale + 1e-6).clamp(0, scale).long(), original)
    grid = torch.arange(levels, device=x.device).view(1, levels, 1)
    purified = original.clone()
    height, width = x.shape[-2:]
    for row in range(height):
        for col in range(width):
            logits = pixelcnn(purified.float() / scale)[:, :, :, row, col]  # N x L x C
            allowed = (grid >= lo[:, None, :, row, col]) & (grid <= hi[:, None, :, row, col])
            purified[:, :, row, col] = logits.masked_fill(~allowed, float("-inf")).argmax(1)
    return purified.to(x.dtype) / scale


class PixelDefend(Preprocessed):
    """``model(purify(x))``; BPDA's backward pass is the identity (inherited ``bpda``)."""

    differentiable = False

    def __init__(self, model: nn.Module, pixelcnn: nn.Module, *, eps_defend: float) -> None:
        super().__init__(model)
        self.pixelcnn = pixelcnn
        self.eps_defend = eps_defend

    def transform(self, x: Tensor) -> Tensor:
        self.pixelcnn.eval()
        # tied to x with a zero gradient: a plain (non-BPDA) attack sees the masking it would see
        # in a naive evaluation instead of an autograd error
        return purify(self.pixelcnn, x, eps_defend=self.eps_defend) + 0.0 * x

    def extra_repr(self) -> str:
        return f"eps_defend={self.eps_defend}, levels={self.pixelcnn.levels}"


@defenses.register("pixeldefend", description="PixelDefend purification with the zoo's PixelCNN (Song et al. 2018); slow",
                   inputs=(IMAGE,))
def pixeldefend(
    model: nn.Module, *, data: Dataset, eps_defend: float = 32 / 255, seed: int = 0, steps: int = 800
) -> nn.Module:
    """``eps_defend`` defaults to the paper's value for grey-scale Fashion-MNIST (32/255); ``seed`` and
    ``steps`` pick the zoo PixelCNN (trained on ``data`` on first use, cached)."""
    if not isinstance(eps_defend, (int, float)) or isinstance(eps_defend, bool) or not 0 <= eps_defend <= 1:
        raise RobenchError(f"pixeldefend: eps_defend must be a number in [0, 1] (input units), got {eps_defend!r}")
    from robench.zoo.pixelcnn import pixelcnn

    density = pixelcnn(data, seed=seed, steps=steps)
    if density.in_channels != data.input_shape[0]:
        raise RobenchError(f"pixeldefend: the PixelCNN models {density.in_channels} channel(s), the data has {data.input_shape[0]}")
    return PixelDefend(model, density, eps_defend=float(eps_defend))
