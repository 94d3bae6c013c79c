"""The simplest defenses: none at all, and bit-depth reduction (the textbook masked gradient).

The building block of input-transformation defenses, ``Preprocessed`` (``model(transform(x))``
with a BPDA stand-in ``bpda(x)``), is part of the target contract in ``robench.target``.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from robench.errors import RobenchError
from robench.registry import defenses
from robench.target import ANY, Preprocessed


@defenses.register("none", description="no defense: the model as it is", inputs=(ANY,))
def no_defense(model: nn.Module) -> nn.Module:
    return model


class BitDepth(Preprocessed):
    """Feature squeezing by colour-depth reduction (Xu, Evans, Qi 2018, Sec. 3.1).

    Rounding to 2**bits levels has zero gradient almost everywhere, so gradient attacks see a
    flat loss: the textbook example of gradient masking.
    """

    differentiable = False

    def __init__(self, model: nn.Module, bits: int) -> None:
        super().__init__(model)
        self.bits = bits
        self.levels = 2**bits - 1

    def transform(self, x: Tensor) -> Tensor:
        return torch.round(x * self.levels) / self.levels

    def extra_repr(self) -> str:
        return f"bits={self.bits}"


@defenses.register("bit_depth", description="bit-depth reduction (Xu et al. 2018, feature squeezing)", inputs=(ANY,))
def bit_depth(model: nn.Module, *, bits: int = 3) -> nn.Module:
    if not isinstance(bits, int) or isinstance(bits, bool) or not 1 <= bits <= 16:
        raise RobenchError(f"bit_depth: bits must be an integer from 1 to 16, got {bits!r}")
    return BitDepth(model, bits)
