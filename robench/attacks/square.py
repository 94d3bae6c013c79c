"""Square Attack: a score-based, gradient-free random search (Andriushchenko et al. 2020).

Andriushchenko, Croce, Flammarion, Hein. "Square Attack: a query-efficient black-box adversarial
attack via random search", ECCV 2020. Each iteration changes the current best perturbation on one
random square window (side length from the paper's p-schedule, Sec. 3) and keeps the change only if
the margin loss L = f_y(x) - max_{k != y} f_k(x) on the logits goes down:

* L-inf (Alg. 2): the window gets a new vertex of the ball, +-eps per colour channel; the start is
  vertical stripes of +-eps;
* L2 (Alg. 3): mass is moved from a second window into the first with the paper's "meta pseudo
  Gaussian" pattern, keeping the perturbation on the sphere of radius eps; the start is a grid of
  such bumps.

Vectorized over examples: the window size depends only on the iteration, positions and signs are
drawn per example from the counter-based streams of ``robench.rng`` (so an example's result does
not depend on its batch), and an example leaves the batch as soon as it is misclassified. One
forward row per active example per iteration, so ``queries`` bounds each example's count exactly.

Sequences (N x C x L) get a 1-D form, robench's own extension (the paper and its reference code
are for images only). A sequence is attacked as an image of height 1 whose windows are intervals:
the window covering a fraction p of an image (side sqrt(p * H * W)) becomes an interval of
round(p * L) steps (at most L - 1; L2: at least 3 and odd, as the image side). L-inf: the interval
gets a new vertex, +-eps per channel, flipped if that leaves it unchanged; the start is one sign per
channel and time step (the stripes of an image have height 1). L2: the pattern is the 1-D meta
pseudo-Gaussian (two halves of opposite sign, each a bump with weights 1/(k+1)^2 around its centre,
unit norm; the image pattern's random transpose becomes a random mirror) and mass moves between two
intervals on the eps-sphere as for images; the start is a row of such bumps of width
max(L // 5, 1), centred, with random signs, scaled to norm eps. Same random streams, same query
accounting; images take exactly the path they took before the extension.

Departures from the reference code: where it re-draws an L-inf window until it differs from the
current one (a loop per example), robench flips all the window's channel signs instead (same
effect: the window changes); the L2 pattern's random transpose is per example rather than per
batch; and a window's corner is uniform on all H - s + 1 positions (the reference's
``randint(0, h - s)`` never touches the last row and column, which on small images leaves part of
the ball unexplored: on a 4x4 input 7 of 16 pixels would keep their initial value forever).
"""
from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from robench import rng
from robench.attacks.base import Attack, AttackResult
from robench.batching import chunk_rows
from robench.errors import RobenchError
from robench.hyperparameters import Flag, Float, Int, declare
from robench.registry import attacks
from robench.target import IMAGE, SEQUENCE, logits_in_chunks, margin
from robench.threat import ThreatModel


def p_schedule(p_init: float, iteration: int, n_iterations: int, rescale: bool = True) -> float:
    """Fraction of pixels changed at ``iteration``: halved at fixed iterations.

    The schedule of the paper's reference implementation (``p_selection``), defined for a budget of
    10,000 queries; ``rescale`` stretches it to ``n_iterations`` (the reference's
    ``rescale_schedule``). AutoAttack's standard version runs Square with 5,000 queries and
    ``resc_schedule=False``: the 10,000-query schedule cut at 5,000.
    """
    it = int(iteration / n_iterations * 10000) if rescale else iteration
    for bound, divisor in ((10, 1), (50, 2), (200, 4), (500, 8), (1000, 16), (2000, 32), (4000, 64), (6000, 128), (8000, 256)):
        if it <= bound:
            return p_init / divisor
    return p_init / 512


def _pseudo_gaussian_rectangle(rows: int, cols: int) -> Tensor:
    """Nested rectangles weighted 1/(k+1)^2 around the centre, unit L2 norm (reference code)."""
    delta = torch.zeros(rows, cols, dtype=torch.float64)
    if rows == 0 or cols == 0:
        return delta
    r0, c0 = rows // 2, cols // 2
    for k in range(max(r0 + 1, c0 + 1)):
        delta[max(r0 - k, 0) : min(r0 - k + 2 * k + 1, rows), max(c0 - k, 0) : min(c0 - k + 2 * k + 1, cols)] += 1.0 / (k + 1) ** 2
    return delta / delta.norm()


@functools.lru_cache(maxsize=64)
def meta_pseudo_gaussian(side: int) -> Tensor:
    """The L2 update pattern (Alg. 3): two halves of opposite sign, unit L2 norm, float64."""
    delta = torch.zeros(side, side, dtype=torch.float64)
    delta[: side // 2] = _pseudo_gaussian_rectangle(side // 2, side)
    delta[side // 2 :] = -_pseudo_gaussian_rectangle(side - side // 2, side)
    return delta / delta.norm()


@functools.lru_cache(maxsize=64)
def meta_pseudo_gaussian_1d(length: int) -> Tensor:
    """The 1-D L2 pattern (robench's extension), shape (length,): the first length // 2 steps a
    pseudo-Gaussian bump (weights 1/(k+1)^2 around its centre), the rest the negative of one, unit
    L2 norm, float64."""
    delta = torch.zeros(length, dtype=torch.float64)
    delta[: length // 2] = _pseudo_gaussian_rectangle(1, length // 2)[0]
    delta[length // 2 :] = -_pseudo_gaussian_rectangle(1, length - length // 2)[0]
    return delta / delta.norm()


def _window_shape(p: float, h: int, w: int, *, l2: bool) -> tuple[int, int]:
    """(rows, cols) of the window that changes a fraction ``p`` of an h x w input: a square of side
    sqrt(p * h * w) on an image, an interval of p * w steps on a sequence (h == 1, see run)."""
    if h == 1:
        rows, size, limit = 1, int(round(p * w)), w - 1
    else:
        rows, size, limit = 0, int(round(math.sqrt(p * h * w))), min(h, w) - 1
    if l2:
        size = max(size, 3)
        size += 1 - size % 2  # odd, as in the reference code
    size = min(max(size, 1), limit)
    return rows or size, size


def _l2_pattern(rows: int, cols: int) -> Tensor:
    """The L2 pattern for a rows x cols window: the paper's square one, or the 1-D one as 1 x cols
    (a 1 x 1 window, on an image under 5 pixels high, gets [-1.0] either way)."""
    return meta_pseudo_gaussian(cols) if rows > 1 else meta_pseudo_gaussian_1d(cols).view(1, cols)


def _window_mask(corner_h: Tensor, corner_w: Tensor, shape: tuple[int, int], h: int, w: int) -> Tensor:
    """(n, 1, h, w) booleans: True inside each example's window of ``shape`` (rows, cols)."""
    side_h, side_w = shape
    rows = torch.arange(h, device=corner_h.device)
    cols = torch.arange(w, device=corner_h.device)
    in_rows = (rows >= corner_h[:, None]) & (rows < corner_h[:, None] + side_h)
    in_cols = (cols >= corner_w[:, None]) & (cols < corner_w[:, None] + side_w)
    return (in_rows[:, :, None] & in_cols[:, None, :]).unsqueeze(1)


def _read_window(x: Tensor, corner_h: Tensor, corner_w: Tensor, shape: tuple[int, int]) -> Tensor:
    """(n, c, rows, cols): each example's window of ``shape`` (rows, cols) of x (n, c, h, w)."""
    n, c, h, w = x.shape
    side_h, side_w = shape
    rows = (corner_h[:, None] + torch.arange(side_h, device=x.device)).view(n, 1, side_h, 1).expand(n, c, side_h, w)
    cols = (corner_w[:, None] + torch.arange(side_w, device=x.device)).view(n, 1, 1, side_w).expand(n, c, side_h, side_w)
    return x.gather(2, rows).gather(3, cols)


def _place_window(values: Tensor, corner_h: Tensor, corner_w: Tensor, h: int, w: int) -> Tensor:
    """(n, c, h, w) with ``values`` (n, c, rows, cols) at each example's window (garbage outside it)."""
    n, c, side_h, side_w = values.shape
    rel_h = (torch.arange(h, device=values.device) - corner_h[:, None]).clamp(0, side_h - 1)
    rel_w = (torch.arange(w, device=values.device) - corner_w[:, None]).clamp(0, side_w - 1)
    rows = rel_h.view(n, 1, h, 1).expand(n, c, h, side_w)
    cols = rel_w.view(n, 1, 1, w).expand(n, c, h, w)
    return values.gather(2, rows).gather(3, cols)


def _ints(bits: Tensor, highs: tuple[int, ...]) -> Tensor:
    """Integers uniform on [0, highs[j]) from 24 random bits per column j."""
    high = torch.tensor(highs, dtype=torch.long, device=bits.device)
    return ((bits >> 8) * high) >> 24


def _signs(bits: Tensor, dtype: torch.dtype) -> Tensor:
    """+-1 from bit 7, as ``rng.rademacher``."""
    return ((bits >> 7) & 1).to(dtype) * 2 - 1


def _l2_normalize(delta: Tensor) -> Tensor:
    return delta / delta.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)


@attacks.register("square", description="Square Attack, gradient-free random search (Andriushchenko et al. 2020)")
class Square(Attack):
    name = "square"
    gradient_free = True
    inputs = (IMAGE, SEQUENCE)  # sequences: robench's 1-D form (windows are intervals)

    hyperparameters = declare(
        queries=Int(10000, "forward rows per example, the start included", ge=1),
        p_init=Float(None, "initial fraction of pixels changed; None: the paper's 0.05 (L-inf) or 0.1 (L2)", gt=0, le=1),
        rescale_schedule=Flag(True, "stretch p's 10,000-query schedule to the budget (AutoAttack's standard run: false)"),
        max_batch=Int(None, "rows per forward pass; None: chosen from the input size", ge=1),
    )

    def __init__(
        self,
        *,
        queries: int = 10000,
        p_init: float | None = None,
        rescale_schedule: bool = True,
        max_batch: int | None = None,
    ) -> None:
        """``queries``: forward rows per example, the start included; ``p_init``: the initial
        fraction of pixels changed, by default the paper's 0.05 (L-inf) or 0.1 (L2)."""
        self._set(locals())

    def budget(self, threat: ThreatModel) -> int:
        return self.queries

    def run(self, target: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel, *, seeds: Tensor) -> AttackResult:
        if x.dim() not in (3, 4) or min(x.shape[2:]) < 2:
            raise RobenchError(
                f"square: needs images (N, C, H, W) with H, W >= 2 or sequences (N, C, L) with L >= 2, "
                f"got {tuple(x.shape)}; use spsa for other inputs"
            )
        input_shape = tuple(x.shape[1:])
        version = VERSIONS[threat.norm]
        p_init = self.p_init if self.p_init is not None else version.p_init
        max_batch = self.max_batch or chunk_rows(x)
        # a sequence is attacked as an image of height 1 (h == 1 marks it: images have h >= 2)
        x0 = x.detach() if x.dim() == 4 else x.detach().unsqueeze(2)
        n, c, h, w = x0.shape
        eps = threat.epsilon

        def loss(rows: Tensor, labels: Tensor) -> Tensor:
            rows = rows.reshape(len(rows), *input_shape)  # the target sees its own kind of input
            return margin(logits_in_chunks(target, rows, max_batch).to(rows.dtype), labels)

        stream = rng.stream(seeds)  # the start's draw, then one per iteration
        best = threat.project(x0 + version.start(stream, x0, eps), x0)
        best_margin = loss(best, y)
        queries = torch.ones(n, dtype=torch.long, device=x.device)
        active = torch.nonzero(best_margin >= 0).squeeze(1)  # misclassified examples are done
        iterations = self.queries - 1
        for iteration in range(iterations):
            if len(active) == 0:
                break
            x_a, best_a = x0[active], best[active]
            bits = stream.bits((5 + c,), rows=active)  # 4 corner coordinates, a sign per channel, a transpose bit
            p = p_schedule(p_init, iteration, self.queries, self.rescale_schedule)
            candidate = threat.project(version.step(x_a, best_a, bits, p, eps, threat), x_a)
            candidate_margin = loss(candidate, y[active])
            queries[active] += 1
            improved = candidate_margin < best_margin[active]
            best[active] = torch.where(improved.view(-1, 1, 1, 1), candidate, best_a)
            best_margin[active] = torch.where(improved, candidate_margin, best_margin[active])
            active = active[best_margin[active] >= 0]  # the one host sync per iteration
        return AttackResult(best.reshape(x.shape), queries)

    def supports(self, norm: str) -> bool:
        return norm in VERSIONS

    @staticmethod
    def _start(seeds: Tensor, x: Tensor, eps: float, norm: str) -> Tensor:
        """Initial perturbation of ``norm``'s version from the first draw of ``seeds``' stream."""
        return VERSIONS[norm].start(rng.stream(seeds), x, eps)

    @staticmethod
    def _linf_step(x: Tensor, best: Tensor, bits: Tensor, p: float, eps: float, threat: ThreatModel) -> Tensor:
        """Alg. 2: a new vertex (+-eps per channel) on one random square of side sqrt(p * H * W)
        (a sequence: one random interval of p * L steps)."""
        n, c, h, w = x.shape
        shape = _window_shape(p, h, w, l2=False)
        corners = _ints(bits[:, :2], (h - shape[0] + 1, w - shape[1] + 1))
        mask = _window_mask(corners[:, 0], corners[:, 1], shape, h, w)
        vertex = eps * _signs(bits[:, 4 : 4 + c], x.dtype).view(-1, c, 1, 1)
        candidate = threat.clip_to_bounds(torch.where(mask, x + vertex, best))
        changed = ((candidate - best).abs() >= 1e-7) & mask
        unchanged = ~changed.flatten(1).any(dim=1)
        flipped = threat.clip_to_bounds(x - vertex)
        return torch.where(mask & unchanged.view(-1, 1, 1, 1), flipped, candidate)

    @staticmethod
    def _l2_step(x: Tensor, best: Tensor, bits: Tensor, p: float, eps: float, threat: ThreatModel) -> Tensor:
        """Alg. 3: move perturbation mass from window 2 into window 1, staying on the eps-sphere."""
        n, c, h, w = x.shape
        shape = _window_shape(p, h, w, l2=True)
        corners = _ints(bits[:, :4], (h - shape[0] + 1, w - shape[1] + 1) * 2)
        mask1 = _window_mask(corners[:, 0], corners[:, 1], shape, h, w)
        mask2 = _window_mask(corners[:, 2], corners[:, 3], shape, h, w)
        delta = best - x
        norm_window1 = (delta * mask1).pow(2).sum(dim=(2, 3), keepdim=True).sqrt()
        norm_image = delta.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
        norm_windows = (delta * (mask1 | mask2)).pow(2).sum(dim=(2, 3), keepdim=True).sqrt()

        pattern = _l2_pattern(*shape).to(x)
        transpose = ((bits[:, 4 + c] >> 7) & 1).bool().view(-1, 1, 1, 1)
        # the random transpose of a square pattern; an interval's pattern is mirrored instead
        pattern = torch.where(transpose, pattern.t() if shape[0] > 1 else pattern.flip(1), pattern)  # (n, 1, rows, cols)
        signs = _signs(bits[:, 4 : 4 + c], x.dtype).view(-1, c, 1, 1)
        update = pattern * signs + _read_window(delta, corners[:, 0], corners[:, 1], shape) / (1e-10 + norm_window1)
        budget = ((eps**2 - norm_image**2).clamp_min(0) / c + norm_windows**2).sqrt()
        update = update / update.pow(2).sum(dim=(2, 3), keepdim=True).sqrt().clamp_min(1e-12) * budget
        delta = torch.where(mask2, torch.zeros_like(delta), delta)
        delta = torch.where(mask1, _place_window(update, corners[:, 0], corners[:, 1], h, w), delta)
        return x + _l2_normalize(delta) * eps


def _linf_start(stream: rng.Stream, x: Tensor, eps: float) -> Tensor:
    """Vertical stripes of +-eps (Alg. 2); on a sequence (h == 1) one sign per channel and time step."""
    n, c, h, w = x.shape
    return eps * stream.rademacher((c, 1, w), dtype=x.dtype)


def _l2_start(stream: rng.Stream, x: Tensor, eps: float) -> Tensor:
    """A grid of pseudo-Gaussian bumps with random signs, scaled to norm eps (Alg. 3); on a sequence
    (h == 1) one centred row of 1-D bumps of width max(L // 5, 1)."""
    n, c, h, w = x.shape
    if h == 1:
        side_h, side_w = 1, max(w // 5, 1)
        tiles_h, tiles_w = 1, w // side_w
        first_h, first_w = 0, (w - tiles_w * side_w) // 2
    else:
        side_h = side_w = max(h // 5, 1)
        tiles_h, tiles_w = h // side_h, w // side_w
        first_h = first_w = (h - side_h * 5) // 2 if h >= 5 else 0  # the reference code's offset
    signs = stream.rademacher((c, tiles_h, tiles_w), dtype=x.dtype)
    bumps = signs.repeat_interleave(side_h, 2).repeat_interleave(side_w, 3)
    bumps = bumps * _l2_pattern(side_h, side_w).to(x).repeat(tiles_h, tiles_w)
    canvas_h, canvas_w = max(h, first_h + tiles_h * side_h), max(w, first_w + tiles_w * side_w)
    canvas = torch.zeros(n, c, canvas_h, canvas_w, dtype=x.dtype, device=x.device)
    canvas[:, :, first_h : first_h + tiles_h * side_h, first_w : first_w + tiles_w * side_w] = bumps
    return _l2_normalize(canvas[:, :, :h, :w]) * eps


@dataclass(frozen=True)
class _Version:
    """The paper's algorithm for one norm: its default p_init, its start and its step."""

    p_init: float
    start: Callable[[rng.Stream, Tensor, float], Tensor]
    step: Callable[..., Tensor]


#: one version per norm (the paper has no other): Alg. 2 for L-inf, Alg. 3 for L2
VERSIONS: dict[str, _Version] = {
    "linf": _Version(0.05, _linf_start, Square._linf_step),
    "l2": _Version(0.1, _l2_start, Square._l2_step),
}
