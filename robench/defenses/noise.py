"""Gaussian input noise with a majority-vote prediction (randomized, non-differentiable).

Each forward pass classifies ``votes`` noisy copies x + N(0, sigma^2 I) and returns the log of the
(additively smoothed) vote frequencies as logits: the prediction of a Monte-Carlo smoothed
classifier (the prediction rule of Cohen, Rosenfeld, Kolter 2019, without the certificate).
Votes are counts, so the returned logits are piecewise constant in x: their gradient is zero,
which hides the model from gradient attacks without making it robust (Athalye et al. 2018).

BPDA stand-in (``bpda_forward``): the base model's logits on one fresh noisy copy, i.e. what is
inside the vote; EOT over draws then estimates the gradient of the smoothed soft classifier
(as in Salman et al. 2019's attack on smoothed classifiers).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from robench.tags import GaussianSmoothing
from robench.target import ANY, SeededDraws, repeat_rows
from robench.errors import RobenchError
from robench.registry import defenses


class GaussianNoiseVote(nn.Module):
    """Majority vote of ``model`` over ``votes`` Gaussian-noised copies of each input."""

    differentiable = False
    randomized = True
    independent_rows = True  # every row gets its own noise

    def __init__(self, model: nn.Module, *, sigma: float, votes: int, smoothing: float = 0.5, seed: int = 0) -> None:
        super().__init__()
        self.model = model
        self.sigma = sigma
        self.votes = votes
        self.smoothing = smoothing
        self.draws = SeededDraws(seed)

    @property
    def gaussian_smoothing(self) -> GaussianSmoothing:
        """What randomized smoothing certifies: the base classifier and the noise level (a tag)."""
        return GaussianSmoothing(self.model, self.sigma)

    def _noisy(self, x: Tensor, copies: int) -> Tensor:
        rows = repeat_rows(x, copies)
        noise = torch.randn(rows.shape, generator=self.draws.generator(x.device), device=x.device, dtype=x.dtype)
        return rows + self.sigma * noise

    def forward(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            logits = self.model(self._noisy(x, self.votes))
        n, classes = len(x), logits.shape[1]
        predictions = logits.argmax(1).view(self.votes, n)
        counts = torch.zeros(n, classes, device=x.device, dtype=x.dtype)
        counts.scatter_add_(1, predictions.T, torch.ones(n, self.votes, device=x.device, dtype=x.dtype))
        frequencies = (counts + self.smoothing) / (self.votes + classes * self.smoothing)
        # Tie the output to x with an exactly-zero gradient (as a quantizer's is): gradient
        # attacks run, and see nothing.
        return frequencies.log() + 0.0 * x.flatten(1)[:, :1]

    def bpda_forward(self, x: Tensor) -> Tensor:
        """The base model on one noisy copy: a differentiable stand-in for one vote."""
        return self.model(self._noisy(x, 1))

    def extra_repr(self) -> str:
        return f"sigma={self.sigma}, votes={self.votes}, smoothing={self.smoothing}, seed={self.draws.seed}"


@defenses.register("gaussian_noise", description="Gaussian input noise + majority vote (randomized; zero gradients)",
                   inputs=(ANY,))
def gaussian_noise(model: nn.Module, *, sigma: float = 0.1, votes: int = 16, seed: int = 0) -> nn.Module:
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not sigma > 0:
        raise RobenchError(f"gaussian_noise: sigma must be a number > 0, got {sigma!r}")
    if not isinstance(votes, int) or isinstance(votes, bool) or votes < 1:
        raise RobenchError(f"gaussian_noise: votes must be a positive integer, got {votes!r}")
    if not isinstance(seed, int):
        raise RobenchError(f"gaussian_noise: seed must be an integer, got {seed!r}")
    return GaussianNoiseVote(model, sigma=float(sigma), votes=votes, seed=seed)
