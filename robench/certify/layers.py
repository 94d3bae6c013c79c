"""Read a target as a plain sequence of layers, and turn that sequence into what the bounds need.

What is read (everything else is refused in one line naming the module's type, never guessed):

* containers: ``nn.Sequential`` (its own forward, not a subclass that overrides it), a module whose
  only children are ``features`` and ``classifier`` (read as ``classifier(features(x))``, like
  ``robench.zoo.cnn.SmallCNN``), ``robench.target.Normalized`` (per-channel ``(x - mean) / std``,
  then its ``model``) and ``robench.target.QueryCounter`` (a pass-through);
* layers: ``Linear``, ``Conv1d``, ``Conv2d`` (any padding mode, groups, dilation), ``ReLU``,
  ``Flatten``, ``Unflatten``, ``AvgPool1d/2d``, ``AdaptiveAvgPool1d/2d``, ``MaxPool1d/2d``,
  ``BatchNorm1d/2d`` in eval mode with running statistics, ``Identity``, ``Dropout`` in eval mode.

A subclass of one of these layers that overrides ``forward`` is refused. Because a container's
forward could still do something else (hooks, a custom ``forward`` reading ``features`` twice),
every certifier also runs the layers it read on the examples and on a corner of their box and
compares with the target's own output (:func:`check_reading`): a mismatch is refused.

All bound arithmetic is in float64; floating-point rounding is not accounted for (a margin
bound within ~1e-9 of zero can be wrong in the last bits, as in every non-rigorous verifier).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robench.errors import RobenchError
from robench.target import Normalized, QueryCounter
from robench.threat import ThreatModel

DTYPE = torch.float64

SUPPORTED = ("Sequential, a module with features/classifier Sequentials, Normalized, Linear, Conv1d, Conv2d, ReLU, "
             "Flatten, Unflatten, AvgPool1d/2d, AdaptiveAvgPool1d/2d, MaxPool1d/2d, BatchNorm1d/2d (eval), Identity, "
             "Dropout (eval)")

AFFINE, RELU, MAXPOOL = "affine", "relu", "maxpool"


@dataclass
class Op:
    """One step of the forward pass on batched float64 tensors in the layer's own shape.

    ``kind``: ``affine`` (``fn`` is affine; ``radius`` applies |linear part| to a radius, or is
    None when the linear part has non-negative weights, so intervals map endpoint to endpoint),
    ``relu`` or ``maxpool`` (``module``: the pooling layer). ``label`` names the source module.
    """

    kind: str
    label: str
    fn: Callable[[Tensor], Tensor]
    radius: Callable[[Tensor], Tensor] | None = None
    module: nn.Module | None = None

    def interval(self, lower: Tensor, upper: Tensor) -> tuple[Tensor, Tensor]:
        if self.kind == AFFINE and self.radius is not None:
            center, rad = (upper + lower) / 2, (upper - lower) / 2
            mid, spread = self.fn(center), self.radius(rad)
            return mid - spread, mid + spread
        # ReLU, max pooling and non-negative linear maps are monotone
        return self.fn(lower), self.fn(upper)


def _refuse(who: str, module: nn.Module, why: str = "") -> RobenchError:
    return RobenchError(f"{who} cannot bound {type(module).__name__}{why}; supported: {SUPPORTED}")


def _own_forward(module: nn.Module, cls: type) -> bool:
    return isinstance(module, cls) and type(module).forward is cls.forward


def _param(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.detach().to(DTYPE)


def _channel_view(values: Tensor, x: Tensor) -> Tensor:
    return values.view(1, -1, *[1] * (x.dim() - 2))


def _elementwise(label: str, scale: Tensor, shift: Tensor) -> Op:
    """x -> scale * x + shift per channel (dim 1)."""
    return Op(AFFINE, label, lambda x: x * _channel_view(scale, x) + _channel_view(shift, x),
              lambda r: r * _channel_view(scale.abs(), r))


def _leaf(module: nn.Module, who: str) -> Op:
    label = type(module).__name__
    if _own_forward(module, nn.Linear):
        w, b = _param(module.weight), _param(module.bias)
        return Op(AFFINE, label, lambda x: F.linear(x, w, b), lambda r: F.linear(r, w.abs()))
    for cls in (nn.Conv1d, nn.Conv2d):
        if _own_forward(module, cls):
            w, b = _param(module.weight), _param(module.bias)
            return Op(AFFINE, label, lambda x, m=module: m._conv_forward(x, w, b),
                      lambda r, m=module: m._conv_forward(r, w.abs(), None))
    if _own_forward(module, nn.ReLU):
        return Op(RELU, label, F.relu)
    for cls in (nn.MaxPool1d, nn.MaxPool2d):
        if _own_forward(module, cls):
            if module.return_indices:
                raise _refuse(who, module, " with return_indices=True")
            return Op(MAXPOOL, label, module, module=module)
    for cls in (nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d):
        if _own_forward(module, cls):
            return Op(AFFINE, label, module)  # non-negative weights: monotone
    for cls in (nn.BatchNorm1d, nn.BatchNorm2d):
        if _own_forward(module, cls):
            if module.training or module.running_mean is None:
                raise _refuse(who, module, " in training mode or without running statistics (call target.eval())")
            inv = 1.0 / torch.sqrt(_param(module.running_var) + module.eps)
            gamma = _param(module.weight) if module.affine else torch.ones_like(inv)
            beta = _param(module.bias) if module.affine else torch.zeros_like(inv)
            scale = gamma * inv
            return _elementwise(label, scale, beta - _param(module.running_mean) * scale)
    if _own_forward(module, nn.Dropout):
        if module.training and module.p > 0:
            raise _refuse(who, module, " in training mode (call target.eval())")
        return Op(AFFINE, label, lambda x: x)
    for cls in (nn.Flatten, nn.Unflatten):
        if _own_forward(module, cls):
            return Op(AFFINE, label, module)  # a reshape: monotone
    if _own_forward(module, nn.Identity):
        return Op(AFFINE, label, lambda x: x)
    raise _refuse(who, module)


def _walk(module: nn.Module, who: str, ops: list[Op]) -> None:
    if isinstance(module, nn.Sequential):
        if type(module).forward is not nn.Sequential.forward:
            raise _refuse(who, module, " (a Sequential subclass with its own forward)")
        for child in module:
            _walk(child, who, ops)
    elif _own_forward(module, Normalized):
        mean, std = _param(module.mean), _param(module.std)
        ops.append(_elementwise("Normalized", 1.0 / std, -mean / std))
        _walk(module.model, who, ops)
    elif _own_forward(module, QueryCounter):
        _walk(module.target, who, ops)
    elif [name for name, _ in module.named_children()] == ["features", "classifier"]:
        _walk(module.features, who, ops)
        _walk(module.classifier, who, ops)
    else:
        ops.append(_leaf(module, who))


def read_layers(target: nn.Module, who: str) -> list[Op]:
    """The target as a list of :class:`Op`, or a one-line refusal naming the first unsupported module."""
    ops: list[Op] = []
    _walk(target, who, ops)
    if not ops:
        raise RobenchError(f"{who}: the target has no layers to bound")
    return ops


def run_layers(ops: list[Op], x: Tensor) -> Tensor:
    for op in ops:
        x = op.fn(x)
    return x


@torch.no_grad()
def check_reading(ops: list[Op], target: nn.Module, points: Tensor, who: str) -> None:
    """Refuse a target whose output differs from the layers read from it (a custom forward)."""
    expected = target(points).to(DTYPE)
    got = run_layers(ops, points.to(DTYPE))
    scale = 1.0 + float(expected.abs().max()) if expected.numel() else 1.0
    if got.shape != expected.shape or not torch.allclose(got, expected, rtol=1e-4, atol=1e-4 * scale):
        names = ", ".join(op.label for op in ops)
        raise RobenchError(f"{who} cannot bound {type(target).__name__}: its output differs from its layers run in "
                           f"sequence ({names}), so its forward is not a plain sequence; supported: {SUPPORTED}")


def input_box(x: Tensor, threat: ThreatModel) -> tuple[Tensor, Tensor]:
    """The L-inf box of radius epsilon intersected with the data bounds (float64). For an L2
    ball this box contains the ball: sound, looser (the first layer tightens it, see crown/ibp)."""
    lo, hi = threat.bounds
    x = x.to(DTYPE)
    return (x - threat.epsilon).clamp(min=lo), (x + threat.epsilon).clamp(max=hi)


def read_and_check(target: nn.Module, x: Tensor, threat: ThreatModel, who: str) -> list[Op]:
    ops = read_layers(target, who)
    sample = x[:16]
    lower, _ = input_box(sample, threat)
    check_reading(ops, target, torch.cat([sample, lower.to(x.dtype)]), who)
    return ops


# -- segments: the affine runs between nonlinearities --------------------------------------


def split_last_affine(ops: list[Op]) -> tuple[list[Op], list[Op]]:
    """(everything up to the last nonlinearity, the affine ops after it)."""
    last = max((i for i, op in enumerate(ops) if op.kind != AFFINE), default=-1)
    return ops[: last + 1], ops[last + 1 :]


def first_affine(ops: list[Op]) -> list[Op]:
    """The affine ops before the first nonlinearity."""
    out = []
    for op in ops:
        if op.kind != AFFINE:
            break
        out.append(op)
    return out


def _push_basis(ops: list[Op], shape: tuple[int, ...], device: torch.device, chunk: int = 512):
    """Yield (start, columns) of the linear part of the affine ``ops``: columns[k] = lin(e_{start+k})."""
    n = math.prod(shape)
    offset = run_layers(ops, torch.zeros(1, *shape, dtype=DTYPE, device=device))
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        basis = torch.zeros(stop - start, n, dtype=DTYPE, device=device)
        basis[torch.arange(stop - start), torch.arange(start, stop)] = 1.0
        yield start, (run_layers(ops, basis.view(-1, *shape)) - offset).flatten(1)


def affine_matrix(ops: list[Op], shape: tuple[int, ...], device: torch.device, *, who: str = "",
                  max_entries: int | None = None) -> tuple[Tensor, Tensor]:
    """(W, b) with ops(x).flatten() = W @ x.flatten() + b for an affine run of ops on inputs of ``shape``."""
    offset = run_layers(ops, torch.zeros(1, *shape, dtype=DTYPE, device=device)).flatten()
    n = math.prod(shape)
    if max_entries is not None and n * offset.numel() > max_entries:
        raise dense_refusal(who, ops, n, offset.numel(), max_entries)
    weight = torch.empty(offset.numel(), n, dtype=DTYPE, device=device)
    for start, cols in _push_basis(ops, shape, device):
        weight[:, start : start + len(cols)] = cols.T
    return weight, offset


def row_norms(ops: list[Op], shape: tuple[int, ...], device: torch.device) -> Tensor:
    """||W_row||_2 of an affine run of ops (for the L2 dual-norm bound), without storing W."""
    total = None
    for _, cols in _push_basis(ops, shape, device):
        part = (cols**2).sum(0)
        total = part if total is None else total + part
    return total.sqrt()


def dense_refusal(who: str, ops: list[Op], n_in: int, n_out: int, limit: int) -> RobenchError:
    names = "+".join(op.label for op in ops) or "identity"
    return RobenchError(f"{who} converts layers to dense matrices, and {names} would be {n_out} x {n_in} = "
                        f"{n_in * n_out:,} entries, above its limit of {limit:,} (max_dense); use a smaller model "
                        "or input, or ibp")


# -- the dense network: affine layers and (masked) ReLUs ----------------------------------


@dataclass
class DenseLayer:
    """z = weight @ h + bias; then, unless it is the output layer (``relu`` None), h' = relu(z)
    where ``relu`` is True and h' = z where False (units passed through: the max-pool gadget)."""

    weight: Tensor
    bias: Tensor
    relu: Tensor | None

    def __post_init__(self) -> None:
        # the max-pool gadget's matrices hold at most two non-zeros a row: multiply them sparse
        density = float((self.weight != 0).sum()) / max(1, self.weight.numel())
        self._sparse_t = self.weight.T.to_sparse_coo().coalesce() if density < 0.02 and self.weight.numel() > 4096 else None

    def times_weight(self, rows: Tensor) -> Tensor:
        """rows @ weight for rows of shape (..., out)."""
        if self._sparse_t is None:
            return rows @ self.weight
        flat = rows.reshape(-1, rows.shape[-1])
        return torch.sparse.mm(self._sparse_t, flat.T).T.reshape(*rows.shape[:-1], self.weight.shape[1])


def _pool_windows(module: nn.Module, shape: tuple[int, ...], who: str, device: torch.device) -> tuple[list[list[int]], tuple[int, ...]]:
    """Per output element of a max pooling on inputs of ``shape`` (C, L) or (C, H, W): the flat
    input indices of its window (padding left out: it pads with -inf, so never wins)."""
    out_shape = tuple(module(torch.zeros(1, *shape, dtype=DTYPE, device=device)).shape[1:])

    one = isinstance(module, nn.MaxPool1d)
    if len(shape) != (2 if one else 3):
        raise _refuse(who, module, f" on inputs of shape {shape} per example (it needs channels first)")
    if one:
        c, length = shape
        h, w = 1, length
        ks = (1, _first(module.kernel_size))
        st = (1, _first(module.stride if module.stride is not None else module.kernel_size))
        pd = (0, _first(module.padding))
        dl = (1, _first(module.dilation))
    else:
        c, h, w = shape
        ks, st, pd, dl = (_two(module.kernel_size), _two(module.stride if module.stride is not None else module.kernel_size),
                          _two(module.padding), _two(module.dilation))
    index = torch.arange(1, h * w + 1, dtype=DTYPE).view(1, 1, h, w)
    cols = F.unfold(index, ks, dilation=dl, padding=pd, stride=st)[0]  # (window, positions)
    positions = cols.shape[1]
    if c * positions != math.prod(out_shape):
        raise _refuse(who, module, " with ceil_mode windows past the edge")
    per_channel = [[int(v) - 1 for v in cols[:, p].tolist() if v > 0] for p in range(positions)]
    windows = [[i + ch * h * w for i in win] for ch in range(c) for win in per_channel]
    return windows, out_shape


def _first(v) -> int:
    return int(v[0]) if isinstance(v, (tuple, list)) else int(v)


def _two(v) -> tuple[int, int]:
    return (int(v[0]), int(v[1])) if isinstance(v, (tuple, list)) else (int(v), int(v))


def dense_network(ops: list[Op], input_shape: tuple[int, ...], who: str, max_entries: int,
                  device: torch.device) -> list[DenseLayer]:
    """The network as dense layers: runs of affine ops composed into one matrix; ReLU; max pooling
    as an exact tree of pairwise maxima, max(a, b) = relu(a - b) + b, whose ``b`` is passed through
    unchanged (so max pooling costs ReLUs only for its differences)."""
    layers: list[DenseLayer] = []
    shape = tuple(input_shape)
    # the pending affine map from the last layer's output h to the current tensor: None = identity
    weight: Tensor | None = None
    bias = torch.zeros(math.prod(shape), dtype=DTYPE, device=device)
    pending: list[Op] = []

    def close() -> tuple[Tensor, Tensor, tuple[int, ...]]:
        """Compose the pending affine ops into the pending map; return it as a matrix."""
        nonlocal weight, bias, pending, shape
        if pending:
            offset = run_layers(pending, torch.zeros(1, *shape, dtype=DTYPE, device=device))
            n_h = math.prod(shape) if weight is None else weight.shape[1]
            if n_h * offset.numel() > max_entries:
                raise dense_refusal(who, pending, n_h, offset.numel(), max_entries)
            if weight is None:
                w_new, _ = affine_matrix(pending, shape, device)
            else:  # push the columns of the pending map through the ops' linear part
                cols = [run_layers(pending, weight.T[s : s + 512].reshape(-1, *shape)) - offset
                        for s in range(0, weight.shape[1], 512)]
                w_new = torch.cat(cols).flatten(1).T.contiguous()
            bias = run_layers(pending, bias.view(1, *shape)).flatten()
            weight, shape, pending = w_new, tuple(offset.shape[1:]), []
        if weight is None:
            n = bias.numel()
            if n * n > max_entries:
                raise dense_refusal(who, [], n, n, max_entries)
            weight = torch.eye(n, dtype=DTYPE, device=device)
        return weight, bias, shape

    for op in ops:
        if op.kind == AFFINE:
            pending.append(op)
            continue
        w, b, shape = close()
        if op.kind == RELU:
            layers.append(DenseLayer(w, b, torch.ones(len(b), dtype=torch.bool, device=device)))
            weight, bias = None, torch.zeros(len(b), dtype=DTYPE, device=device)
            continue
        windows, out_shape = _pool_windows(op.module, shape, who, device)
        # values: per window, rows of the map (w, b) from the last layer's output
        values = windows
        while any(len(v) > 1 for v in values):
            rows_a, rows_b, relu_mask, new_values = [], [], [], []
            for v in values:
                nxt = []
                for k in range(0, len(v) - 1, 2):
                    a, b2 = v[k], v[k + 1]
                    unit = len(relu_mask)
                    rows_a += [a, b2]
                    rows_b += [b2, -1]
                    relu_mask += [True, False]
                    nxt.append((unit, unit + 1))
                if len(v) % 2:
                    unit = len(relu_mask)
                    rows_a.append(v[-1])
                    rows_b.append(-1)
                    relu_mask.append(False)
                    nxt.append((unit,))
                new_values.append(nxt)
            ia = torch.tensor(rows_a, device=device)
            ib = torch.tensor(rows_b, device=device)
            has_b = ib >= 0
            w_layer = w[ia].clone()
            b_layer = b[ia].clone()
            w_layer[has_b] -= w[ib[has_b]]
            b_layer[has_b] -= b[ib[has_b]]
            if w_layer.numel() > max_entries:
                raise dense_refusal(who, [op], w_layer.shape[1], w_layer.shape[0], max_entries)
            layers.append(DenseLayer(w_layer, b_layer, torch.tensor(relu_mask, dtype=torch.bool, device=device)))
            # each new value is the sum of its units (relu(a - b) + b), or a unit passed through
            n_values = sum(len(v) for v in new_values)
            w = torch.zeros(n_values, len(relu_mask), dtype=DTYPE, device=device)
            values, row = [], 0
            for v in new_values:
                ids = []
                for units in v:
                    w[row, list(units)] = 1.0
                    ids.append(row)
                    row += 1
                values.append(ids)
            b = torch.zeros(n_values, dtype=DTYPE, device=device)
        order = torch.tensor([v[0] for v in values], device=device)
        weight, bias, shape = w[order], b[order], out_shape
    w, b, _ = close()
    layers.append(DenseLayer(w, b, None))
    return layers
