"""Exact verification of small ReLU networks as mixed-integer linear programs (Tjeng, Xiao,
Tedrake 2019, "Evaluating Robustness of Neural Networks with Mixed Integer Programming"),
solved by HiGHS through ``scipy.optimize.milp``.

The network is the dense form of ``robench.certify.crown`` (Linear, Conv via dense matrices,
BatchNorm, the input normalization, average and max pooling; max pooling is exact there too).
Per example, CROWN first: an example it certifies needs no program, and an example where the box
corner minimizing one of CROWN's negative margin bounds is misclassified by the target has that
corner as its counterexample (no program either). Otherwise, for each other
class j whose CROWN margin bound is not positive (most threatening first), one program asks for
a point of the L-inf box (the ball intersected with the data bounds) with z_j - z_y >= 0,
maximizing z_j - z_y. Stable ReLUs are linear; each unstable one gets a binary and the big-M
constraints of Tjeng et al. (Sec. 4.1) with M from the CROWN/IBP pre-activation bounds.

Infeasible for every j: certified. A solution: its input, clipped into the box and run through
the target's own forward pass, is the counterexample if it is misclassified there; if not (the
float64 program and the float32 model disagree at a point on the boundary), the program is solved
again to optimality for a more violating point, and failing that the example is unknown. The time
limit (``time_limit`` seconds per example, all its programs together) also gives unknown.
``mip_rel_gap`` only decides how violating a point must be before the solver stops (the default,
1e9, stops at the first violating point found): the certified / not certified answer is exact
either way. "Exact" is up to HiGHS's tolerances
(feasibility 1e-7, integrality 1e-6), which can only make it report a violation that is not one
(which then fails the forward-pass check), not miss one, barring LP numerical trouble.

L2 balls make the program quadratic: refused.
"""
from __future__ import annotations

import time

import numpy as np
import torch
from scipy import sparse
from scipy.optimize import Bounds, LinearConstraint, milp
from torch import Tensor, nn

from robench.certify.base import (
    CERTIFIED, COUNTEREXAMPLE, UNKNOWN, Certification, Certifier, check_examples,
)
from robench.certify.crown import INTERMEDIATE_BOUNDS, MAX_DENSE, DenseModel, crown_margin_bounds, margin_rows, spec_witness
from robench.certify.layers import DenseLayer, dense_network, input_box, read_layers
from robench.errors import RobenchError
from robench.hyperparameters import Flag, Float, declare
from robench.registry import certifiers
from robench.threat import ThreatModel


#: the gap of the second solve, for a most-violating point when the first one did not verify
EXACT_GAP = 1e-6


class _Program:
    """The constraints of one example's network: variables x | h_0 | ... | h_{L-2} | binaries."""

    def __init__(self, layers: list[DenseLayer], lower: list[np.ndarray], upper: list[np.ndarray],
                 box_lower: np.ndarray, box_upper: np.ndarray) -> None:
        widths = [len(box_lower)] + [len(layer.bias) for layer in layers[:-1]]
        offsets = np.concatenate([[0], np.cumsum(widths)])
        n_cont = int(offsets[-1])
        var_lo, var_hi = [box_lower], [box_upper]
        lb, ub = [], []
        binaries = 0
        n_rows = 0
        blocks: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (row, col, value) triplets

        def add(r, c, v):
            blocks.append((np.asarray(r, dtype=np.int64), np.asarray(c, dtype=np.int64), np.asarray(v, dtype=np.float64)))

        for k, layer in enumerate(layers[:-1]):
            w = layer.weight.cpu().numpy()
            b = layer.bias.cpu().numpy()
            relu = layer.relu.cpu().numpy()
            lo, hi = lower[k], upper[k]
            prev, cur = offsets[k], offsets[k + 1]
            active = ~relu | (lo >= 0)
            inactive = relu & (hi <= 0)
            unstable = relu & ~active & ~inactive
            h_lo = np.where(relu, np.maximum(lo, 0), lo)
            h_hi = np.where(relu, np.maximum(hi, 0), hi)
            h_lo = np.where(inactive, 0.0, h_lo)
            h_hi = np.where(inactive, 0.0, h_hi)
            var_lo.append(h_lo)
            var_hi.append(h_hi)

            def linear_rows(units: np.ndarray, start_row: int) -> None:
                # row r: h_unit - W[unit] . h_prev
                sub = w[units]
                rr, cc = np.nonzero(sub)
                add(start_row + rr, prev + cc, -sub[rr, cc])
                add(start_row + np.arange(len(units)), cur + units, np.ones(len(units)))

            eq = np.nonzero(active & ~inactive)[0]
            if len(eq):
                linear_rows(eq, n_rows)
                lb.append(b[eq])
                ub.append(b[eq])
                n_rows += len(eq)
            un = np.nonzero(unstable)[0]
            if len(un):
                cols = n_cont + binaries + np.arange(len(un))
                binaries += len(un)
                # h >= W h_prev + b
                linear_rows(un, n_rows)
                lb.append(b[un])
                ub.append(np.full(len(un), np.inf))
                n_rows += len(un)
                # h <= W h_prev + b - l (1 - a)  <=>  h - W h_prev - l a <= b - l
                linear_rows(un, n_rows)
                add(n_rows + np.arange(len(un)), cols, -lo[un])
                lb.append(np.full(len(un), -np.inf))
                ub.append(b[un] - lo[un])
                n_rows += len(un)
                # h <= u a
                add(n_rows + np.arange(len(un)), cur + un, np.ones(len(un)))
                add(n_rows + np.arange(len(un)), cols, -hi[un])
                lb.append(np.full(len(un), -np.inf))
                ub.append(np.zeros(len(un)))
                n_rows += len(un)
        self.n_vars = n_cont + binaries
        self.n_inputs = len(box_lower)
        self.binaries = binaries
        self.last = (int(offsets[-2]), int(offsets[-1]))
        r = np.concatenate([blk[0] for blk in blocks]) if blocks else np.zeros(0, dtype=np.int64)
        c = np.concatenate([blk[1] for blk in blocks]) if blocks else np.zeros(0, dtype=np.int64)
        v = np.concatenate([blk[2] for blk in blocks]) if blocks else np.zeros(0)
        self.matrix = sparse.csr_matrix((v, (r, c)), shape=(n_rows, self.n_vars))
        self.lb = np.concatenate(lb) if lb else np.zeros(0)
        self.ub = np.concatenate(ub) if ub else np.zeros(0)
        self.bounds = Bounds(np.concatenate(var_lo + [np.zeros(binaries)]), np.concatenate(var_hi + [np.ones(binaries)]))
        self.integrality = np.concatenate([np.zeros(n_cont), np.ones(binaries)])

    def solve(self, objective: np.ndarray, constant: float, time_limit: float, gap: float):
        """Maximize objective . h_{L-2} + constant subject to it being >= 0; returns scipy's result."""
        c = np.zeros(self.n_vars)
        c[self.last[0] : self.last[1]] = -objective  # milp minimizes
        row = sparse.csr_matrix((objective, (np.zeros(len(objective), dtype=np.int64),
                                             np.arange(self.last[0], self.last[1]))), shape=(1, self.n_vars))
        constraints = [LinearConstraint(sparse.vstack([self.matrix, row]).tocsr(),
                                        np.concatenate([self.lb, [-constant]]), np.concatenate([self.ub, [np.inf]]))]
        options = {"disp": False, "time_limit": max(time_limit, 1e-3), "mip_rel_gap": gap}
        return milp(c, integrality=self.integrality, bounds=self.bounds, constraints=constraints, options=options)


@certifiers.register("milp")
class MILP(Certifier):
    """Exact verification (L-inf) by mixed-integer programming, after CROWN.

    Keyword-only: ``time_limit`` (seconds per example, all its programs), ``mip_rel_gap`` (when
    the solver may stop on a violating point; the verdict is exact either way), ``intermediate``
    and ``max_dense`` (as for crown: the big-M bounds and the dense conversion's limit),
    ``try_corners`` (try CROWN's minimizing box corners as counterexamples before any program).
    """

    name = "milp"
    norms = ("linf",)

    hyperparameters = declare(
        time_limit=Float(10.0, "seconds per example, all its programs together", gt=0),
        mip_rel_gap=Float(1e9, "when the solver may stop on a violating point (the verdict is exact either way)", gt=0),
        intermediate=INTERMEDIATE_BOUNDS,
        max_dense=MAX_DENSE,
        try_corners=Flag(True, "try CROWN's minimizing box corners as counterexamples before any program"),
    )

    def __init__(self, *, time_limit: float = 10.0, mip_rel_gap: float = 1e9, intermediate: str = "crown",
                 max_dense: int = 2**24, try_corners: bool = True) -> None:
        self._set(locals())

    def check_norm(self, threat: ThreatModel) -> None:
        if threat.norm not in self.norms:
            raise RobenchError(f"milp verifies L-inf balls only (an {threat.norm} ball makes the program quadratic); "
                               "use crown or ibp for l2")

    def check(self, target: nn.Module, threat: ThreatModel, example_shape: tuple[int, ...] | None = None) -> None:
        self.check_norm(threat)
        ops = read_layers(target, self.name)
        if example_shape is not None:
            dense_network(ops, tuple(example_shape), self.name, self.max_dense, torch.device("cpu"))

    def certify(self, target: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel, *,
                seeds: Tensor | None = None) -> Certification:
        check_examples(x, y)
        self.check_norm(threat)
        start = time.perf_counter()
        model = DenseModel(target, x, threat, self.name, self.max_dense)
        shared = (time.perf_counter() - start) / len(x)
        n = len(x)
        status = torch.full((n,), UNKNOWN, dtype=torch.int8)
        counterexample = x.detach().clone()
        seconds = torch.zeros(n, dtype=torch.float64)
        margin_lower = torch.zeros(n, dtype=torch.float64)
        programs = torch.zeros(n, dtype=torch.int64)
        binaries = torch.zeros(n, dtype=torch.int64)
        timed_out = torch.zeros(n, dtype=torch.bool)
        for i in range(n):
            begin = time.perf_counter()
            outcome = self._one(model, target, x[i : i + 1], y[i : i + 1], threat, begin)
            status[i], margin_lower[i], programs[i], binaries[i], timed_out[i] = outcome[:5]
            if outcome[5] is not None:
                counterexample[i] = outcome[5][0]
            seconds[i] = shared + time.perf_counter() - begin
        return Certification(status.to(x.device), counterexample, seconds,
                             {"margin_lower": margin_lower, "programs": programs, "binaries": binaries,
                              "timed_out": timed_out})

    @torch.no_grad()
    def _one(self, model: DenseModel, target: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel, begin: float):
        label = int(y)
        if int(target(x).argmax(1)) != label:
            return COUNTEREXAMPLE, float("nan"), 0, 0, False, x
        margins, bounds = crown_margin_bounds(target, x, y, threat, intermediate=self.intermediate, model=model,
                                              return_layers=True)
        margins = margins[0].cpu()
        others = margins.clone()
        others[label] = float("inf")
        worst = float(others.min())
        if worst > 0:
            return CERTIFIED, worst, 0, 0, False, None
        lo32 = (x - threat.epsilon).clamp(min=threat.bounds[0])
        hi32 = (x + threat.epsilon).clamp(max=threat.bounds[1])
        if self.try_corners:  # CROWN's own witnesses: the box corner minimizing each margin bound
            rows, const = margin_rows(model.layers[-1], y.to(x.device))
            corners = spec_witness(model.layers, bounds, rows, const, x, threat)[0].to(x.dtype)
            corners = torch.minimum(torch.maximum(corners, lo32), hi32)
            wrong = target(corners).argmax(1) != label
            wrong[label] = False
            if wrong.any():
                j = int(torch.where(wrong, others.to(x.device), torch.inf).argmin())
                return COUNTEREXAMPLE, worst, 0, 0, False, corners[j : j + 1]
        box_lower, box_upper = (b.flatten(1)[0].cpu().numpy() for b in input_box(x, threat))
        program = _Program(model.layers, [b[0].cpu().numpy() for b in bounds.lower],
                           [b[0].cpu().numpy() for b in bounds.upper], box_lower, box_upper)
        out = model.layers[-1]
        w, b = out.weight.cpu().numpy(), out.bias.cpu().numpy()
        solved, unconfirmed = 0, False
        for j in torch.argsort(others).tolist():
            if j == label or others[j] > 0:
                continue
            for gap in dict.fromkeys((self.mip_rel_gap, EXACT_GAP)):
                remaining = self.time_limit - (time.perf_counter() - begin)
                if remaining <= 0:
                    return UNKNOWN, worst, solved, program.binaries, True, None
                result = program.solve(w[j] - w[label], float(b[j] - b[label]), remaining, gap)
                solved += 1
                if result.status == 2:  # infeasible: class j never reaches z_y
                    break
                if result.x is None:  # time limit (or solver trouble) without a solution
                    return UNKNOWN, worst, solved, program.binaries, result.status == 1, None
                point = torch.as_tensor(result.x[: program.n_inputs], dtype=x.dtype, device=x.device).view_as(x)
                point = torch.minimum(torch.maximum(point, lo32), hi32)
                if int(target(point).argmax(1)) != label:
                    return COUNTEREXAMPLE, worst, solved, program.binaries, False, point
                if gap == EXACT_GAP or result.status != 0:
                    unconfirmed = True
                    break
            # here class j is safe (infeasible) or its point did not verify: on to the next class
        if unconfirmed:
            return UNKNOWN, worst, solved, program.binaries, False, None
        return CERTIFIED, worst, solved, program.binaries, False, None
