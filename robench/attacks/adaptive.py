"""Adaptive attacks (Athalye, Carlini, Wagner 2018, "Obfuscated Gradients Give a False Sense of
Security"): make a target's gradient useful without changing what it predicts.

``adaptive_target(target)`` wraps a target for gradient attacks:

* **BPDA** (Sec. 4.1) where the target is not differentiable: every non-differentiable
  ``Preprocessed`` block anywhere inside the target (the ``non_differentiable`` tag, see
  ``robench.tags``) computes its exact ``transform(x)`` on the
  forward pass and backpropagates through its ``bpda(x)`` (identity unless the block declares
  better); any non-differentiable module that defines ``bpda_forward(x)`` (the target itself or
  a block inside it) keeps its exact output and backpropagates through ``bpda_forward(x)``.
  Forward values are bit-identical to the target's, so predictions and early stopping are honest.
* **EOT** (Sec. 4.3) where the target is randomized: the forward pass averages
  ``log_softmax`` over ``eot_samples`` independent draws, so its gradient is the average of
  the per-draw gradients of the log-likelihood, E_t[∇ log p(y | t(x))] (Athalye et al. 2018b,
  "Synthesizing Robust Adversarial Examples", Eq. 2). Averaging log-probabilities, not raw
  logits, keeps draws with differently shifted logits on the same scale. Each forward row then
  costs ``eot_samples`` target rows: ``queries_per_row`` says so, for honest query counts.
  Where every randomized block draws per row (the ``independent_rows`` tag),
  the draws run as one forward of the batch stacked ``eot_samples`` times (in calls of at most
  :func:`robench.batching.chunk_rows` rows): the same estimator, without a Python loop of
  ``eot_samples`` calls (10x fewer sequential steps for a purifier that loops over time).

A plain differentiable, deterministic target is returned unchanged. What is adapted follows the
target's tags (computed once by the caller, with its card's flags; from the tree when not given).
"""
from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn


from robench.errors import RobenchError
from robench.batching import chunk_rows
from robench.discover import straight_through_at
from robench.tags import TargetTags, target_tags
from robench.target import Preprocessed, bpda_backward, repeat_rows, straight_through

log = logging.getLogger(__name__)

#: EOT draws per gradient. Athalye et al. (2018, Sec. 5.3.1) use 30 on ImageNet-scale defenses;
#: 10 already gives a low-variance gradient on small inputs at a third of the cost.
EOT_SAMPLES = 10


def eot_draws(requested: int | None) -> int:
    """The EOT draws of a suite entry: its own ``eot_samples``, else :data:`EOT_SAMPLES` (the one default)."""
    return requested or EOT_SAMPLES


def needs_adaptation(target: nn.Module, tags: TargetTags | None = None) -> bool:
    """True if the target (by its ``tags``; default: its tree's) is non-differentiable, randomized,
    or cuts its input gradient at places robench found (``tags.gradient_cuts``)."""
    tags = target_tags(target) if tags is None else tags
    return not tags.differentiable or tags.randomized or bool(tags.gradient_cuts)


def _bpda_modules(tags: TargetTags) -> list[nn.Module]:
    """Non-differentiable blocks that declare a whole-forward stand-in."""
    return [m for m in tags.non_differentiable if callable(getattr(m, "bpda_forward", None))]


def _has_bpda(tags: TargetTags) -> bool:
    return bool(_bpda_modules(tags)) or any(isinstance(m, Preprocessed) for m in tags.non_differentiable)


def _substitute_backward(module: nn.Module, args: tuple, output: Tensor) -> Tensor | None:
    """Forward hook: keep ``output``, backpropagate through ``module.bpda_forward``."""
    if not args or not isinstance(args[0], Tensor) or not torch.is_grad_enabled() or not args[0].requires_grad:
        return None
    return straight_through(output, module.bpda_forward(args[0]))


@contextmanager
def _bpda_hooks(modules: list[nn.Module]) -> Iterator[None]:
    handles = [m.register_forward_hook(_substitute_backward) for m in modules]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


class AdaptiveTarget(nn.Module):
    """The target's predictions with BPDA gradients and, if randomized, EOT averaging."""

    def __init__(self, target: nn.Module, *, eot_samples: int, tags: TargetTags | None = None,
                 vote: object | None = None) -> None:
        super().__init__()
        self.target = target
        #: the verifier's majority vote, asked before an attack stops on a break (``confirmed_breaks``)
        self.__dict__["vote"] = vote
        tags = target_tags(target) if tags is None else tags
        self.uses_bpda = not tags.differentiable
        self.randomized = tags.randomized
        self.eot_samples = eot_samples if self.randomized else 1
        self.queries_per_row = self.eot_samples
        self.stacked = self.eot_samples > 1 and tags.stacks_draws
        self._independent_rows = tags.independent_rows
        self._blocks = tags.non_differentiable if self.uses_bpda else ()
        self._hooked = _bpda_modules(tags) if self.uses_bpda else []
        #: found by running the target (robench.discover): identity backward there
        self._cuts = tags.gradient_cuts
        #: without EOT a row costs one target row: batch sizes are the target's (robench.batching)
        # (kept out of the module tree: a plain attribute, not a second registration of the target)
        self.__dict__["probe_as"] = target if self.eot_samples == 1 else None
        if self.uses_bpda and not _has_bpda(tags):
            log.warning(
                "%s is marked non-differentiable but has no Preprocessed block or bpda_forward(); "
                "gradient attacks see its raw gradient", type(target).__name__,
            )

    def robench_tags(self) -> TargetTags:
        """Differentiable (BPDA), randomized as its target, each row costing ``eot_samples`` target rows."""
        return TargetTags(differentiable=True, randomized=self.randomized, independent_rows=self._independent_rows,
                          queries_per_row=self.eot_samples)

    def _draw(self, x: Tensor) -> Tensor:
        if not self.uses_bpda and not self._cuts:
            return self.target(x)
        with bpda_backward(self._blocks), _bpda_hooks(self._hooked), straight_through_at(self.target, self._cuts):
            return self.target(x)

    def forward(self, x: Tensor) -> Tensor:
        if self.eot_samples == 1:
            return self._draw(x)
        if self.stacked and len(x):
            return self._stacked_mean(x)
        total = self._draw(x).log_softmax(1)
        for _ in range(self.eot_samples - 1):
            total = total + self._draw(x).log_softmax(1)
        return total / self.eot_samples

    def _stacked_mean(self, x: Tensor) -> Tensor:
        """The mean log-probability over the draws, as few forwards of stacked copies of x as the
        row limit allows (memory as a plain forward of ``chunk_rows`` rows)."""
        per_call = max(1, min(self.eot_samples, chunk_rows(x) // len(x)))
        total, done = None, 0
        while done < self.eot_samples:
            copies = min(per_call, self.eot_samples - done)
            part = self._draw(repeat_rows(x, copies)).log_softmax(1).view(copies, len(x), -1).sum(0)
            total = part if total is None else total + part
            done += copies
        return total / self.eot_samples

    def extra_repr(self) -> str:
        cuts = f", gradient_cuts={len(self._cuts)}" if self._cuts else ""
        return f"bpda={self.uses_bpda}, eot_samples={self.eot_samples}, stacked={self.stacked}{cuts}"


def adaptive_target(target: nn.Module, *, eot_samples: int = EOT_SAMPLES, tags: TargetTags | None = None,
                    vote: object | None = None) -> nn.Module:
    """Wrap ``target`` for gradient attacks: BPDA where not differentiable, EOT where randomized,
    as its ``tags`` say (default: computed from its tree).

    Returns ``target`` itself when it needs neither (``needs_adaptation`` is False).
    """
    if isinstance(eot_samples, bool) or not isinstance(eot_samples, int) or eot_samples < 1:
        raise RobenchError(f"adaptive_target: eot_samples must be a positive integer, got {eot_samples!r}")
    if isinstance(target, AdaptiveTarget):
        return target
    tags = target_tags(target) if tags is None else tags
    if not needs_adaptation(target, tags):
        return target
    return AdaptiveTarget(target, eot_samples=eot_samples, tags=tags, vote=vote).eval()
