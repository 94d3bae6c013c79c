"""Random search in the ball: the baseline every gradient attack must beat (Carlini et al. 2019, Sec. 5.2).

"On Evaluating Adversarial Robustness" (Carlini, Athalye, Papernot, Brendel, Rauber, Tsipras,
Goodfellow, Madry, Kurakin 2019) asks an evaluation to check that "random sampling does not find
adversarial examples" where the attacks did not: if points drawn blindly from the ball succeed
where gradient attacks failed, the attacks are being misled. Points are drawn where random noise
does the most: under L-inf at the vertices of the ball (every coordinate at +-eps), under L2 on
its surface; then clipped to the data bounds. Draws come from each example's own counter stream
(``robench.rng``), in blocks of ``block`` samples, so a result depends on nothing but the seed.

An example stops at its first block holding a misclassified point; its proposal is the point of
lowest margin seen (``verify`` decides whether it counts). Queries: one forward row per sample.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from robench import rng
from robench.attacks.base import Attack, AttackResult
from robench.batching import chunk_rows
from robench.hyperparameters import Int, declare
from robench.registry import attacks
from robench.target import logits_in_chunks, margin, queries_per_row
from robench.threat import ThreatModel


@attacks.register("random-search", description="random points at the vertices (L-inf) or surface (L2) of the ball (Carlini et al. 2019, Sec. 5.2)")
class RandomSearch(Attack):
    """``samples`` random points per example, evaluated ``block`` at a time."""

    name = "random-search"
    gradient_free = True

    hyperparameters = declare(
        samples=Int(10_000, "random points per example", ge=1),
        block=Int(250, "points evaluated at a time per example", ge=1),
        max_batch=Int(None, "rows per forward pass; None: chosen from the input size", ge=1),
    )

    def __init__(self, *, samples: int = 10_000, block: int = 250, max_batch: int | None = None) -> None:
        self._set(locals())

    def params(self) -> dict:
        return {"samples": self.samples, "block": self.block}

    def directions(self, threat: ThreatModel, seeds: Tensor, block: int, k: int, shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
        """(len(seeds), k, *shape) perturbations of norm epsilon from stream ``block``: the ball's
        extreme points (L-inf vertices, L2 surface points)."""
        return threat.ball.extreme_points(rng.stream(seeds, block), k, shape, threat.epsilon, dtype)

    def budget(self, threat: ThreatModel) -> int:
        return self.samples

    @torch.no_grad()
    def run(self, target: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel, *, seeds: Tensor) -> AttackResult:
        n, shape = len(x), tuple(x.shape[1:])
        max_batch = self.max_batch or chunk_rows(x)
        x_adv = x.clone()
        best = torch.full((n,), float("inf"), device=x.device)
        queries = torch.zeros(n, dtype=torch.long, device=x.device)
        active = torch.arange(n, device=x.device)
        per_row = queries_per_row(target)
        for block, start in enumerate(range(0, self.samples, self.block)):
            if len(active) == 0:
                break
            k = min(self.block, self.samples - start)
            delta = self.directions(threat, seeds[active].to(x.device), block, k, shape, x.dtype)
            points = (x[active, None] + delta).clamp(*threat.bounds)  # (a, k, *shape)
            flat = points.reshape(-1, *shape)
            logits = logits_in_chunks(target, flat, max_batch)
            margins = margin(logits, y[active].repeat_interleave(k)).view(len(active), k)
            queries[active] += k * per_row
            low, where = margins.min(dim=1)
            better = low < best[active]
            chosen = points[torch.arange(len(active), device=x.device), where]
            x_adv[active[better]] = chosen[better]
            best[active[better]] = low[better]
            active = active[~(margins < 0).any(dim=1)]
        return AttackResult(x_adv, queries)
