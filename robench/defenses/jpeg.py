"""JPEG compression as a defense (Dziugaite et al. 2016; Guo et al. 2018), in plain torch.

The baseline JPEG codec (ITU-T T.81): shift pixels to [-128, 127], split into 8x8 blocks, take the
orthonormal 2-D DCT-II, divide by the quantization table (the standard Annex K table scaled by
``quality`` with libjpeg's rule), round, multiply back, invert the DCT and round to 8-bit pixels.
Colour images go through JFIF's RGB->YCbCr with the chroma table on Cb/Cr (no chroma
subsampling); other channel counts use the luminance table on each channel.

The rounding makes the gradient zero almost everywhere: the defense "works" against plain
gradient attacks only by masking them. Its BPDA stand-in is the identity (JPEG is near-identity
at useful qualities), which Athalye et al. (2018, Sec. 4.1) show suffices to break it.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robench.target import IMAGE, Preprocessed
from robench.errors import RobenchError
from robench.registry import defenses

BLOCK = 8

#: ITU-T T.81 Annex K, Table K.1 (luminance) and K.2 (chrominance), quality 50
LUMINANCE_TABLE = (
    (16, 11, 10, 16, 24, 40, 51, 61),
    (12, 12, 14, 19, 26, 58, 60, 55),
    (14, 13, 16, 24, 40, 57, 69, 56),
    (14, 17, 22, 29, 51, 87, 80, 62),
    (18, 22, 37, 56, 68, 109, 103, 77),
    (24, 35, 55, 64, 81, 104, 113, 92),
    (49, 64, 78, 87, 103, 121, 120, 101),
    (72, 92, 95, 98, 112, 100, 103, 99),
)
CHROMINANCE_TABLE = (
    (17, 18, 24, 47, 99, 99, 99, 99),
    (18, 21, 26, 66, 99, 99, 99, 99),
    (24, 26, 56, 99, 99, 99, 99, 99),
    (47, 66, 99, 99, 99, 99, 99, 99),
) + ((99,) * 8,) * 4

#: JFIF RGB -> YCbCr (offsets of 128 on Cb/Cr are applied separately)
_RGB_TO_YCBCR = (
    (0.299, 0.587, 0.114),
    (-0.168736, -0.331264, 0.5),
    (0.5, -0.418688, -0.081312),
)


def quantization_table(quality: int, *, chroma: bool = False) -> Tensor:
    """The Annex K table scaled by ``quality`` (1..100) with libjpeg's ``jpeg_quality_scaling``."""
    scale = 5000 / quality if quality < 50 else 200 - 2 * quality
    base = torch.tensor(CHROMINANCE_TABLE if chroma else LUMINANCE_TABLE, dtype=torch.float64)
    return torch.floor((base * scale + 50) / 100).clamp(1, 255).float()


def dct_matrix(n: int = BLOCK) -> Tensor:
    """Orthonormal DCT-II matrix ``D``: coefficients of a block ``X`` are ``D X D^T``."""
    k = torch.arange(n, dtype=torch.float64).view(-1, 1)
    i = torch.arange(n, dtype=torch.float64).view(1, -1)
    d = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2 / n)
    d[0] /= math.sqrt(2)
    return d.float()


class JPEG(Preprocessed):
    """``model(jpeg(x))`` for images in [0, 1]; not differentiable (BPDA: identity)."""

    differentiable = False

    def __init__(self, model: nn.Module, quality: int) -> None:
        super().__init__(model)
        self.quality = quality
        self.register_buffer("dct", dct_matrix(), persistent=False)
        tables = torch.stack([quantization_table(quality), quantization_table(quality, chroma=True)])
        self.register_buffer("tables", tables, persistent=False)
        self.register_buffer("rgb_to_ycbcr", torch.tensor(_RGB_TO_YCBCR), persistent=False)

    def _channel_tables(self, channels: int) -> Tensor:
        if channels == 3:
            return self.tables[[0, 1, 1]]
        return self.tables[[0] * channels]

    def transform(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        pixels = x.float().clamp(0, 1) * 255
        colour = c == 3
        if colour:
            pixels = torch.einsum("ij,njhw->nihw", self.rgb_to_ycbcr, pixels)
            pixels = pixels + torch.tensor([0.0, 128.0, 128.0], device=x.device).view(1, 3, 1, 1)
        pad_h, pad_w = -h % BLOCK, -w % BLOCK
        if pad_h or pad_w:  # edge extension, as encoders do for partial blocks
            pixels = F.pad(pixels, (0, pad_w, 0, pad_h), mode="replicate")
        hb, wb = pixels.shape[2] // BLOCK, pixels.shape[3] // BLOCK
        blocks = (pixels - 128).view(n, c, hb, BLOCK, wb, BLOCK).permute(0, 1, 2, 4, 3, 5)
        coefficients = self.dct @ blocks @ self.dct.T
        table = self._channel_tables(c).view(1, c, 1, 1, BLOCK, BLOCK)
        coefficients = torch.round(coefficients / table) * table
        blocks = self.dct.T @ coefficients @ self.dct + 128
        pixels = blocks.permute(0, 1, 2, 4, 3, 5).reshape(n, c, hb * BLOCK, wb * BLOCK)[:, :, :h, :w]
        if colour:
            offset = torch.tensor([0.0, 128.0, 128.0], device=x.device).view(1, 3, 1, 1)
            pixels = torch.einsum("ij,njhw->nihw", torch.linalg.inv(self.rgb_to_ycbcr), pixels - offset)
        return (torch.round(pixels).clamp(0, 255) / 255).to(x.dtype)

    def extra_repr(self) -> str:
        return f"quality={self.quality}"


@defenses.register("jpeg", description="JPEG compression (Dziugaite et al. 2016, Guo et al. 2018); BPDA: identity",
                   inputs=(IMAGE,))
def jpeg(model: nn.Module, *, quality: int = 75) -> nn.Module:
    if not isinstance(quality, int) or isinstance(quality, bool) or not 1 <= quality <= 100:
        raise RobenchError(f"jpeg: quality must be an integer from 1 to 100, got {quality!r}")
    return JPEG(model, quality)
