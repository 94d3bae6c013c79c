"""CROWN: backward linear relaxation of ReLU networks (Zhang, Weng, Chen, Hsieh, Daniel 2018,
"Efficient Neural Network Robustness Certification with General Activation Functions").

The target is read as in ``robench.certify.layers`` and converted to dense layers: each run of
affine layers (Linear, Conv, pooling averages, BatchNorm, the input normalization, Flatten)
becomes one matrix; max pooling becomes an exact tree of pairwise maxima max(a, b) = relu(a - b) + b
(``b`` passed through unchanged), so it is handled soundly, by the same ReLU relaxation. The dense
conversion limits the size: a matrix above ``max_dense`` entries (default 2**24) is refused in one
line (the digits' 8 x 8 SmallCNN fits; MNIST's 28 x 28 SmallCNN does not).

Each unstable ReLU (l < 0 < u) is bounded above by the chord u (z - l) / (u - l) and below by
alpha z with CROWN's adaptive alpha = 1 if u > -l else 0 (Zhang et al., Sec. 3.3). Bounds of a
linear function of a layer go backward through the relaxations to the input, where they are
concretized over the box (L-inf ball intersected with the data bounds) and, for L2, also over the
ball (x0 . w - epsilon ||w||_2); the max of both is sound. Intermediate bounds: ``intermediate =
"crown"`` (default) bounds every pre-activation that interval arithmetic leaves unstable by CROWN
itself, layer by layer, intersected with the interval bounds; ``"ibp"`` uses the interval bounds
(CROWN-IBP, Zhang et al. 2020: faster, looser). The margin specification C = e_y - e_j is folded
into the last layer, and the final margin bounds are the elementwise max of CROWN's and IBP's, so
they are never looser than ``ibp``'s.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from robench.certify.base import Certification, Certifier, Timer, check_examples
from robench.certify.ibp import decide, ibp_logit_bounds, ibp_margin_bounds
from robench.certify.layers import DTYPE, DenseLayer, Op, dense_network, input_box, read_and_check, read_layers
from robench.hyperparameters import Choice, Int, declare
from robench.registry import certifiers
from robench.threat import ThreatModel

#: doubles one backward pass may hold at a time (rows x width x examples): 64 MiB
WORK_BUDGET = 2**23
INTERMEDIATE = ("crown", "ibp")


@dataclass
class LayerBounds:
    """Per hidden dense layer: pre-activation bounds (N x units) and the ReLU relaxation used."""

    lower: list[Tensor]
    upper: list[Tensor]
    relaxations: list[tuple[Tensor, Tensor, Tensor]]


def relaxation(lower: Tensor, upper: Tensor, relu: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(lower slope, upper slope, upper intercept) per unit: h >= a z, h <= s z + t.

    Passed-through units and stable active ReLUs: 1, 1, 0; stable inactive: 0, 0, 0; unstable:
    CROWN's adaptive a (1 if u > -l else 0) and the chord s = u / (u - l), t = -s l.
    """
    relu = relu.unsqueeze(0).expand_as(lower)
    active = ~relu | (lower >= 0)
    unstable = relu & (lower < 0) & (upper > 0)
    width = (upper - lower).clamp_min(1e-300)
    chord = torch.where(unstable, upper / width, active.to(DTYPE))
    shift = torch.where(unstable, -chord * lower, torch.zeros_like(lower))
    alpha = torch.where(unstable, (upper > -lower).to(DTYPE), active.to(DTYPE))
    return alpha, chord, shift


def concretize(omega: Tensor, const: Tensor, box_lower: Tensor, box_upper: Tensor, x: Tensor,
               threat: ThreatModel) -> Tensor:
    """Lower bound of omega @ x' + const over the box, and for L2 over the ball too (max of both)."""
    bound = (torch.einsum("nmk,nk->nm", omega.clamp(min=0), box_lower)
             + torch.einsum("nmk,nk->nm", omega.clamp(max=0), box_upper) + const)
    if not threat.ball.is_box:  # the box bound is already exact for a box-shaped ball
        ball = torch.einsum("nmk,nk->nm", omega, x) - threat.epsilon * threat.ball.dual_norm(omega, dim=2) + const
        bound = torch.maximum(bound, ball)
    return bound


def backward_lower(layers: list[DenseLayer], k: int, rows: Tensor, const: Tensor,
                   relaxations: list[tuple[Tensor, Tensor, Tensor]], box: tuple[Tensor, Tensor], x: Tensor,
                   threat: ThreatModel) -> Tensor:
    """Lower bounds of rows @ h_{k-1} + const (rows: N x m x units of layer k's input), i.e. of a
    linear function of layer k's pre-activation, back through layers k-1 ... 0 to the input."""
    omega, const = backward_linear(layers, k, rows, const, relaxations)
    return concretize(omega, const, box[0], box[1], x, threat)


def backward_linear(layers: list[DenseLayer], k: int, rows: Tensor, const: Tensor,
                    relaxations: list[tuple[Tensor, Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
    """(omega, const) with rows @ h_{k-1} + const >= omega @ x + const over the relaxations."""
    omega = rows
    for i in range(k - 1, -1, -1):
        alpha, chord, shift = relaxations[i]
        positive, negative = omega.clamp(min=0), omega.clamp(max=0)
        const = const + torch.einsum("nmk,nk->nm", negative, shift)
        omega = positive * alpha.unsqueeze(1) + negative * chord.unsqueeze(1)
        const = const + omega @ layers[i].bias
        omega = layers[i].times_weight(omega)
    return omega, const


def _row_chunk(layers: list[DenseLayer], k: int, n_examples: int) -> int:
    width = max([layers[i].weight.shape[1] for i in range(k + 1)] + [layers[i].weight.shape[0] for i in range(k)])
    return max(1, WORK_BUDGET // max(1, width * n_examples))


def _bound_rows(layers: list[DenseLayer], k: int, rows: Tensor, const: Tensor, relaxations, box, x, threat) -> Tensor:
    """backward_lower in chunks of rows (rows: N x m x n), to bound the memory."""
    chunk = _row_chunk(layers, k, len(x))
    return torch.cat([backward_lower(layers, k, rows[:, s : s + chunk], const[:, s : s + chunk], relaxations, box, x, threat)
                      for s in range(0, rows.shape[1], chunk)], dim=1)


def layer_bounds(layers: list[DenseLayer], x: Tensor, threat: ThreatModel, intermediate: str = "crown") -> LayerBounds:
    """Pre-activation bounds of every hidden dense layer: interval arithmetic, tightened by CROWN
    (on the units interval arithmetic leaves unstable) unless ``intermediate == "ibp"``; the first
    layer is always bounded exactly over the box (and the L2 ball)."""
    box_lower, box_upper = (b.flatten(1) for b in input_box(x, threat))
    x0 = x.flatten(1).to(DTYPE)
    h_lower, h_upper = box_lower, box_upper
    out = LayerBounds([], [], [])
    for k, layer in enumerate(layers[:-1]):
        center, radius = (h_upper + h_lower) / 2, (h_upper - h_lower) / 2
        mid, spread = center @ layer.weight.T + layer.bias, radius @ layer.weight.abs().T
        lower, upper = mid - spread, mid + spread
        if k == 0 and not threat.ball.is_box:
            spread = threat.epsilon * threat.ball.dual_norm(layer.weight, dim=1)
            mid = x0 @ layer.weight.T + layer.bias
            lower, upper = torch.maximum(lower, mid - spread), torch.minimum(upper, mid + spread)
        elif k > 0 and intermediate == "crown":
            # per example, the ReLUs interval arithmetic leaves unstable (padded to the batch's most)
            unstable = layer.relu & (lower < 0) & (upper > 0)
            m = int(unstable.sum(1).max())
            if m:
                order = torch.argsort((~unstable).to(torch.int8), dim=1, stable=True)[:, :m]  # (N, m)
                valid = torch.gather(unstable, 1, order)
                w = layer.weight[order]  # (N, m, n)
                bias = layer.bias[order]
                rows, const = torch.cat([w, -w], dim=1), torch.cat([bias, -bias], dim=1)
                bound = _bound_rows(layers, k, rows, const, out.relaxations, (box_lower, box_upper), x0, threat)
                tight_lower = torch.where(valid, bound[:, :m], -torch.inf)
                tight_upper = torch.where(valid, -bound[:, m:], torch.inf)
                lower = lower.scatter_reduce(1, order, tight_lower, reduce="amax")
                upper = upper.scatter_reduce(1, order, tight_upper, reduce="amin")
        out.lower.append(lower)
        out.upper.append(upper)
        out.relaxations.append(relaxation(lower, upper, layer.relu))
        h_lower = torch.where(layer.relu, lower.clamp(min=0), lower)
        h_upper = torch.where(layer.relu, upper.clamp(min=0), upper)
    return out


def spec_lower(layers: list[DenseLayer], bounds: LayerBounds, rows: Tensor, const: Tensor, x: Tensor,
               threat: ThreatModel) -> Tensor:
    """Lower bounds of rows @ h_{L-1} + const: a specification folded into the output layer."""
    box = tuple(b.flatten(1) for b in input_box(x, threat))
    return _bound_rows(layers, len(layers) - 1, rows, const, bounds.relaxations, box, x.flatten(1).to(DTYPE), threat)


def spec_witness(layers: list[DenseLayer], bounds: LayerBounds, rows: Tensor, const: Tensor, x: Tensor,
                 threat: ThreatModel) -> Tensor:
    """Per row of the specification (N x m x ...): the corner of the box that minimizes its linear
    lower bound; where the bound is negative, a natural candidate for a violation (L-inf)."""
    omega, _ = backward_linear(layers, len(layers) - 1, rows, const, bounds.relaxations)
    lower, upper = (b.flatten(1).unsqueeze(1) for b in input_box(x, threat))
    corner = torch.where(omega > 0, lower, upper)
    return corner.view(*omega.shape[:2], *x.shape[1:])


def margin_rows(output: DenseLayer, y: Tensor) -> tuple[Tensor, Tensor]:
    """The margin specification e_y - e_j folded into the output layer: (N x classes x n, N x classes)."""
    rows = output.weight[y].unsqueeze(1) - output.weight.unsqueeze(0)
    const = output.bias[y].unsqueeze(1) - output.bias.unsqueeze(0)
    return rows, const


class DenseModel:
    """A target read once: its layers (for IBP) and its dense form (for CROWN and MILP)."""

    def __init__(self, target: nn.Module, x: Tensor, threat: ThreatModel, who: str, max_dense: int) -> None:
        self.ops: list[Op] = read_and_check(target, x, threat, who)
        self.layers = dense_network(self.ops, tuple(x.shape[1:]), who, max_dense, x.device)
        self.target = target

    def auto_batch(self) -> int:
        """Examples per batch: many for narrow networks, one for wide ones (batching wide layers
        only adds memory traffic)."""
        width = max(max(layer.weight.shape) for layer in self.layers)
        return max(1, min(256, 2**22 // width**2))


@torch.no_grad()
def crown_margin_bounds(target: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel, *, intermediate: str = "crown",
                        max_dense: int = 2**24, model: DenseModel | None = None,
                        return_layers: bool = False) -> Tensor | tuple[Tensor, LayerBounds]:
    """(N, classes): lower bounds of z_y - z_j over the ball (column y is 0), never looser than IBP's."""
    model = DenseModel(target, x, threat, "crown", max_dense) if model is None else model
    y = y.to(x.device)
    bounds = layer_bounds(model.layers, x, threat, intermediate)
    rows, const = margin_rows(model.layers[-1], y)
    margins = spec_lower(model.layers, bounds, rows, const, x, threat)
    margins = torch.maximum(margins, ibp_margin_bounds(target, x, y, threat, ops=model.ops))
    margins = margins.scatter(1, y.view(-1, 1), 0.0)
    return (margins, bounds) if return_layers else margins


@torch.no_grad()
def crown_logit_bounds(target: nn.Module, x: Tensor, threat: ThreatModel, *, intermediate: str = "crown",
                       max_dense: int = 2**24) -> tuple[Tensor, Tensor]:
    """(lower, upper), each (N, classes), intersected with IBP's."""
    model = DenseModel(target, x, threat, "crown", max_dense)
    bounds = layer_bounds(model.layers, x, threat, intermediate)
    out = model.layers[-1]
    k = len(out.bias)
    rows = torch.cat([out.weight, -out.weight]).unsqueeze(0).expand(len(x), -1, -1)
    const = torch.cat([out.bias, -out.bias]).unsqueeze(0).expand(len(x), -1)
    bound = spec_lower(model.layers, bounds, rows, const, x, threat)
    ibp_lower, ibp_upper = ibp_logit_bounds(target, x, threat, ops=model.ops)
    return torch.maximum(bound[:, :k], ibp_lower), torch.minimum(-bound[:, k:], ibp_upper)


#: shared with milp, which bounds its big-M constants the same way
INTERMEDIATE_BOUNDS = Choice("crown", INTERMEDIATE, "bounds of unstable intermediate units: crown's, or ibp's intervals")
MAX_DENSE = Int(2**24, "most entries of one dense matrix when layers are converted", ge=1)


@certifiers.register("crown")
class CROWN(Certifier):
    """CROWN bounds (never looser than IBP's); certified where every margin's lower bound is positive.

    Keyword-only: ``intermediate`` ("crown": CROWN bounds for unstable intermediate units, or
    "ibp": interval bounds), ``max_dense`` (most entries of one dense matrix), ``max_batch``
    (examples bounded at a time; None: chosen from the widest layer).
    """

    name = "crown"
    norms = ("linf", "l2")

    hyperparameters = declare(
        intermediate=INTERMEDIATE_BOUNDS,
        max_dense=MAX_DENSE,
        max_batch=Int(None, "examples bounded at a time; None: chosen from the widest layer", ge=1),
    )

    def __init__(self, *, intermediate: str = "crown", max_dense: int = 2**24, max_batch: int | None = None) -> None:
        self._set(locals())

    def check(self, target: nn.Module, threat: ThreatModel, example_shape: tuple[int, ...] | None = None) -> None:
        self.check_norm(threat)
        ops = read_layers(target, self.name)
        if example_shape is not None:
            dense_network(ops, tuple(example_shape), self.name, self.max_dense, torch.device("cpu"))

    def margin_bounds(self, target: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel) -> Tensor:
        return crown_margin_bounds(target, x, y, threat, intermediate=self.intermediate, max_dense=self.max_dense)

    def logit_bounds(self, target: nn.Module, x: Tensor, threat: ThreatModel) -> tuple[Tensor, Tensor]:
        return crown_logit_bounds(target, x, threat, intermediate=self.intermediate, max_dense=self.max_dense)

    def certify(self, target: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel, *,
                seeds: Tensor | None = None) -> Certification:
        check_examples(x, y)
        self.check_norm(threat)
        timer = Timer()
        model = DenseModel(target, x, threat, self.name, self.max_dense)
        setup = timer.elapsed() / len(x)
        batch = self.max_batch or model.auto_batch()
        parts = []
        for start in range(0, len(x), batch):
            timer = Timer()
            xb, yb = x[start : start + batch], y[start : start + batch]
            margins = crown_margin_bounds(target, xb, yb, threat, intermediate=self.intermediate, model=model)
            status, counterexample, worst = decide(target, xb, yb, margins)
            seconds = torch.full((len(xb),), setup + timer.elapsed() / len(xb), dtype=torch.float64)
            parts.append(Certification(status, counterexample, seconds, {"margin_lower": worst}))
        return Certification.cat(parts)
