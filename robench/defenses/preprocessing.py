"""Input-transformation defenses: a preprocessing step in front of an unchanged classifier.

Most defenses broken by Athalye, Carlini & Wagner (2018) have this shape, ``model(transform(x))``
with a ``transform`` whose gradient is zero or useless. Each block therefore also declares
``bpda(x)``: a differentiable stand-in for ``transform`` (identity by default, Sec. 4.1 of the
paper). Inside :func:`bpda_backward` a non-differentiable block computes the exact
``transform(x)`` on the forward pass and backpropagates through ``bpda(x)`` (Backward Pass
Differentiable Approximation), so predictions stay honest while gradients become useful.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch
from torch import Tensor, nn

from robench.errors import RobenchError
from robench.registry import defenses
from robench.target import is_differentiable

_BPDA_ACTIVE: ContextVar[bool] = ContextVar("robench_bpda_active", default=False)


@contextmanager
def bpda_backward() -> Iterator[None]:
    """Within this block, non-differentiable :class:`Preprocessed` blocks backpropagate through ``bpda``."""
    token = _BPDA_ACTIVE.set(True)
    try:
        yield
    finally:
        _BPDA_ACTIVE.reset(token)


def bpda_active() -> bool:
    return _BPDA_ACTIVE.get()


def straight_through(exact: Tensor, approx: Tensor) -> Tensor:
    """The value of ``exact`` with the gradient of ``approx`` (BPDA, Athalye et al. 2018, Sec. 4.1).

    ``approx - approx.detach()`` is exactly zero for finite values, so the result equals
    ``exact`` bit for bit while the backward pass sees only ``approx``.
    """
    if exact.shape != approx.shape:
        raise RobenchError(
            f"BPDA approximation has shape {tuple(approx.shape)} but the exact output has {tuple(exact.shape)}; "
            "bpda()/bpda_forward() must return the same shape as transform()/forward()"
        )
    return exact.detach() + (approx - approx.detach())


class Preprocessed(nn.Module):
    """``model(transform(x))``: the common shape of input-transformation defenses."""

    differentiable = True
    randomized = False

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def transform(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def bpda(self, x: Tensor) -> Tensor:
        """Differentiable approximation of ``transform`` for BPDA (Athalye et al. 2018): identity."""
        return x

    def forward(self, x: Tensor) -> Tensor:
        transformed = self.transform(x)
        if bpda_active() and not is_differentiable(self) and torch.is_grad_enabled() and x.requires_grad:
            transformed = straight_through(transformed, self.bpda(x))
        return self.model(transformed)


@defenses.register("none", description="no defense: the model as it is")
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


@defenses.register("bit_depth", description="bit-depth reduction (Xu et al. 2018, feature squeezing)")
def bit_depth(model: nn.Module, *, bits: int = 3) -> nn.Module:
    if not isinstance(bits, int) or isinstance(bits, bool) or not 1 <= bits <= 16:
        raise RobenchError(f"bit_depth: bits must be an integer from 1 to 16, got {bits!r}")
    return BitDepth(model, bits)


class SeededDraws:
    """Randomness for randomized blocks: one seeded ``torch.Generator`` per device.

    Each forward pass draws afresh (EOT and the verifier's majority vote rely on that), yet a run
    is reproducible: the sequence of draws is fixed by ``seed`` and the order of calls. Draws do
    depend on the batch an example ran in (unlike ``robench.rng``): a randomized defense's single
    draw is meant to be unpredictable, and only statistics over draws are reported.
    """

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)
        self._generators: dict[str, torch.Generator] = {}

    def reseed(self, salt: int) -> None:
        """Restart the draws from a seed mixed with ``salt``: the runner calls this at the start of
        every work unit, so a unit's draws do not depend on which units ran before it in the
        same process (local and Ray runs agree, and so do resumed ones)."""
        from robench.rng import derive_seed

        self._generators.clear()
        self._salted = derive_seed(self.seed, salt)

    def generator(self, device: torch.device) -> torch.Generator:
        key = str(device)
        if key not in self._generators:
            self._generators[key] = torch.Generator(device=device).manual_seed(getattr(self, "_salted", self.seed))
        return self._generators[key]
