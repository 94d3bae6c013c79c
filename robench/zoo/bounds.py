"""Variational lower bounds on mutual information (Poole et al., "On Variational Bounds of Mutual
Information", ICML 2019), as functions of a critic score matrix.

Every bound takes ``scores[i, j] = f(x_i, y_j)`` for a batch of K pairs: the diagonal holds the
positive pairs drawn from p(x, y), the off-diagonal entries stand in for samples of p(x)p(y). Each
returns a scalar estimate in nats whose gradient trains the critic (maximise it). The marginal
terms average over the K(K-1) off-diagonal entries, as in the paper's reference code.

Also here: separable and concatenated critics (Sec. 2 of the paper's experiments), and the
correlated-Gaussian problem with known mutual information used to test the bounds (Sec. 4).
"""
from __future__ import annotations

import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robench.errors import RobenchError

__all__ = [
    "infonce", "nwj", "tuba", "dv", "js", "js_shifted", "js_fgan", "interpolated", "BOUNDS", "NEEDS_BASELINE",
    "SeparableCritic", "ConcatCritic", "mlp",
    "rho_for_mi", "correlated_gaussian", "gaussian_log_ratio",
    "BOUND_NAMES", "estimate", "GaussianCritic", "train_gaussian_critic", "staircase", "optimal_scores",
    "gaussian_estimates",
]


def _check(scores: Tensor) -> int:
    if scores.dim() != 2 or scores.shape[0] != scores.shape[1] or scores.shape[0] < 2:
        raise RobenchError(
            f"MI bound: scores must be a square K x K matrix with K >= 2 (diagonal = positive pairs), got {tuple(scores.shape)}"
        )
    return scores.shape[0]


def _offdiag_logmeanexp(scores: Tensor) -> Tensor:
    """log of the mean of exp(scores) over the K(K-1) off-diagonal entries (the p(x)p(y) samples)."""
    k = scores.shape[0]
    eye = torch.eye(k, dtype=torch.bool, device=scores.device)
    masked = scores.masked_fill(eye, float("-inf"))
    return torch.logsumexp(masked.flatten(), dim=0) - math.log(k * (k - 1))


def infonce(scores: Tensor) -> Tensor:
    """InfoNCE / CPC (van den Oord et al. 2018; Poole Eq. 12): E[f(x_i,y_i) - log 1/K sum_j e^{f(x_i,y_j)}].

    Low variance but never exceeds log K: it saturates when the true MI is large.
    """
    k = _check(scores)
    return (scores.diagonal() - torch.logsumexp(scores, dim=1)).mean() + math.log(k)


def tuba(scores: Tensor, log_baseline: Tensor | float = 0.0) -> Tensor:
    """TUBA (Poole Eq. 8): 1 + E_p[f - a(y)] - E_{p(x)p(y)}[e^{f - a(y)}] with log-baseline a(y).

    ``log_baseline`` is a scalar or one value per column y_j (a learned function of y).
    """
    _check(scores)
    log_baseline = torch.as_tensor(log_baseline, dtype=scores.dtype, device=scores.device)
    if log_baseline.dim() == 1:
        log_baseline = log_baseline[None, :]  # a(y_j) shifts column j
    shifted = scores - log_baseline
    return 1.0 + shifted.diagonal().mean() - torch.exp(_offdiag_logmeanexp(shifted))


def nwj(scores: Tensor) -> Tensor:
    """NWJ / f-GAN KL (Nguyen, Wainwright, Jordan 2010; Poole Eq. 9): TUBA with a(y) = e, i.e. log a = 1.

    Unbiased but its variance grows exponentially with the true MI.
    """
    return tuba(scores, 1.0)


def dv(scores: Tensor) -> Tensor:
    """Donsker-Varadhan (Poole Eq. 4): E_p[f] - log E_{p(x)p(y)}[e^f]; a bound, but biased as a minibatch estimate."""
    _check(scores)
    return scores.diagonal().mean() - _offdiag_logmeanexp(scores)


def js_fgan(scores: Tensor) -> Tensor:
    """Jensen-Shannon f-GAN objective (Nowozin et al. 2016): E_p[-softplus(-f)] - E_{p(x)p(y)}[softplus(f)].

    It trains a critic well (low variance) but is not itself an MI estimate.
    """
    k = _check(scores)
    diag = scores.diagonal()
    positive = -F.softplus(-diag).mean()
    negative = (F.softplus(scores).sum() - F.softplus(diag).sum()) / (k * (k - 1))
    return positive - negative


def _nwj_value_js_gradient(scores: Tensor, shift: float) -> Tensor:
    value = nwj(scores + shift)
    surrogate = js_fgan(scores)
    return surrogate + (value - surrogate).detach()


def js(scores: Tensor) -> Tensor:
    """JS-trained critic evaluated with NWJ (Poole Sec. 2.4, "JS"): value NWJ(f), gradient of JS f-GAN.

    As the paper's reference notebook computes it. The JS critic's optimum is f* = log p(x,y)/p(x)p(y),
    where NWJ(f*) = I - 1/e: a bias of 1/e nats at the optimum, in exchange for a smaller spread. Measured
    with that optimal critic on the correlated-Gaussian task (``gaussian_estimates(name, None, I,
    batches=500, batch_size=64, seed=0)``, dim 20): mean 1.64 / 7.70 nats, std 0.25 / 0.67 at I = 2 / 8.
    ``js_shifted`` reads the same critic at f + 1 instead.
    """
    return _nwj_value_js_gradient(scores, 0.0)


def js_shifted(scores: Tensor) -> Tensor:
    """``js`` read as NWJ(f + 1): tight at the JS optimum (NWJ's optimum is 1 + f*), but the marginal
    term e^(f+1) is e times larger, and so is its share of the spread. Measured as for ``js``: mean
    2.01 / 8.14 nats, std 0.27 / 1.48 at I = 2 / 8: no bias, but 2.2 times the spread at 8 nats. The
    gradient is the same, so the shift is a choice of read-out, not of critic.
    """
    return _nwj_value_js_gradient(scores, 1.0)


def _leave_one_out_logmeanexp(scores: Tensor) -> Tensor:
    """m[i, j] = log mean_{l != j} e^{scores[i, l]}: the InfoNCE baseline without sample j (Poole Eq. 15).

    O(K^2) and stable: for j other than the row's argmax, subtract e^{s_ij} from a sum that keeps the
    maximum's term (>= 1, so no cancellation); for the argmax itself, a logsumexp with it masked out.
    """
    k = scores.shape[0]
    top, arg = scores.max(dim=1, keepdim=True)
    total = torch.exp(scores - top).sum(dim=1, keepdim=True)
    rest = (total - torch.exp(scores - top)).scatter(1, arg, 1.0)  # argmax entry: a safe placeholder, no 0/0 in backward
    loo = top + torch.log(rest)
    without_max = torch.logsumexp(scores.scatter(1, arg, float("-inf")), dim=1, keepdim=True)
    return loo.scatter(1, arg, without_max) - math.log(k - 1)


def interpolated(scores: Tensor, log_baseline: Tensor | float, alpha: float = 0.01) -> Tensor:
    """Interpolated bound I_alpha (Poole Eq. 15): a TUBA bound whose baseline mixes the InfoNCE
    leave-one-out average (weight ``alpha``) with a learned baseline e^{a(y)} (weight 1 - alpha).

    alpha = 0 is TUBA with ``log_baseline``; as alpha grows the variance drops and the estimate is capped,
    trading bias for variance. The cap is 1 + log((K - 1) / alpha) < 1 + log(K / alpha), not log(K / alpha):
    each joint term is at most log((K - 1) / alpha) (the leave-one-out mean still holds the positive
    pair), and the marginal term, which is subtracted, is positive; a critic with large positive and
    very negative off-diagonal scores under a learned baseline approaches it.
    """
    k = _check(scores)
    if not 0.0 <= alpha <= 1.0:
        raise RobenchError(f"interpolated bound: alpha must lie in [0, 1], got {alpha}")
    # Poole's reference code indexes rows by y: s[i, j] = f(x_j, y_i), the baseline is a function of y_i
    s = scores.T
    log_baseline = torch.as_tensor(log_baseline, dtype=scores.dtype, device=scores.device)
    learned = log_baseline.expand(k)[:, None].expand(k, k)
    nce = _leave_one_out_logmeanexp(s)  # [i, j]: mean over the x's paired with y_i, leaving out x_j
    parts = []
    if alpha > 0:
        parts.append(nce + math.log(alpha))
    if alpha < 1:
        parts.append(learned + math.log1p(-alpha))
    base = torch.logsumexp(torch.stack(parts), dim=0)
    # marginal term: pairs (x_j, y_i), j != i, baseline of y_i leaving out its positive x_i
    marginal = torch.exp(_offdiag_logmeanexp(s - base.diagonal()[:, None]))
    # joint term: positive pair of y_i, baseline leaving out one negative x_j, averaged over j != i
    joint = s.diagonal()[:, None] - base
    joint_term = (joint.sum() - joint.diagonal().sum()) / (k * (k - 1))
    return 1.0 + joint_term - marginal


#: the bounds that need nothing but the score matrix, by name
BOUNDS = {"infonce": infonce, "nwj": nwj, "dv": dv, "js": js, "js-shifted": js_shifted}


def mlp(in_dim: int, out_dim: int, *, hidden: int = 256, layers: int = 2) -> nn.Sequential:
    """ReLU MLP (the paper's critics use 2 hidden layers of 256 units)."""
    blocks: list[nn.Module] = []
    width = in_dim
    for _ in range(layers):
        blocks += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    blocks.append(nn.Linear(width, out_dim))
    return nn.Sequential(*blocks)


class SeparableCritic(nn.Module):
    """f(x, y) = g(x)^T h(y): one forward pass per sample, K x K scores by a matrix product."""

    def __init__(self, g: nn.Module, h: nn.Module) -> None:
        super().__init__()
        self.g, self.h = g, h

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return self.g(x) @ self.h(y).T


class ConcatCritic(nn.Module):
    """f(x, y) = F([x, y]): more expressive, K^2 forward passes."""

    def __init__(self, f: nn.Module) -> None:
        super().__init__()
        self.f = f

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        k = x.shape[0]
        pairs = torch.cat([x[:, None, :].expand(k, k, -1), y[None, :, :].expand(k, k, -1)], dim=2)
        return self.f(pairs.reshape(k * k, -1)).reshape(k, k)


def rho_for_mi(mi: float, dim: int = 20) -> float:
    """Correlation giving I(x; y) = -dim/2 log(1 - rho^2) nats for componentwise-correlated Gaussians."""
    return math.sqrt(1.0 - math.exp(-2.0 * mi / dim))


def correlated_gaussian(
    mi: float, batch_size: int, *, dim: int = 20, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """x ~ N(0, I), y = rho x + sqrt(1 - rho^2) eps, with rho chosen so that I(x; y) = ``mi`` (Poole Sec. 4)."""
    rho = rho_for_mi(mi, dim)
    x = torch.randn(batch_size, dim, generator=generator)
    eps = torch.randn(batch_size, dim, generator=generator)
    return x, rho * x + math.sqrt(1.0 - rho**2) * eps


def gaussian_log_ratio(x: Tensor, y: Tensor, mi: float) -> Tensor:
    """The optimal critic's scores log p(y_j | x_i) / p(y_j), K x K, for ``correlated_gaussian``."""
    dim = x.shape[1]
    rho = rho_for_mi(mi, dim)
    var = 1.0 - rho**2
    cond = -((y[None, :, :] - rho * x[:, None, :]) ** 2).sum(-1) / (2 * var) - 0.5 * dim * math.log(var)
    marg = -(y**2).sum(-1) / 2
    return cond - marg[None, :]


BOUND_NAMES = ("infonce", "nwj", "tuba", "dv", "js", "js-shifted", "interpolated")
#: the bounds that use the learned baseline a(y) (the notebook's "unnormalized" baseline); the rest use none
NEEDS_BASELINE = ("tuba", "interpolated")


def estimate(name: str, scores: Tensor, log_baseline: Tensor | float = 0.0, *, alpha: float = 0.01) -> Tensor:
    """Any bound by name; ``log_baseline`` (a(y), one per column) is used by tuba and interpolated."""
    if name == "tuba":
        return tuba(scores, log_baseline)
    if name == "interpolated":
        return interpolated(scores, log_baseline, alpha)
    if name not in BOUNDS:
        raise RobenchError(f"unknown MI bound {name!r}; valid: {', '.join(BOUND_NAMES)}")
    return BOUNDS[name](scores)


class GaussianCritic(nn.Module):
    """A critic f(x, y) plus, where the bound uses one, a learned log-baseline a(y): Poole et al.'s setup
    (Sec. 5, Fig. 2, and their notebook): separable g(x)^T h(y) with g, h MLPs of 2 hidden layers x 256
    and 32-d embeddings, or concat F([x, y]) of 2 x 256; the baseline is an MLP of 2 x 512."""

    def __init__(self, dim: int = 20, *, kind: str = "separable", hidden: int = 256, layers: int = 2, embed: int = 32,
                 baseline: bool = False, baseline_hidden: int = 512) -> None:
        super().__init__()
        if kind == "separable":
            self.critic: nn.Module = SeparableCritic(mlp(dim, embed, hidden=hidden, layers=layers),
                                                     mlp(dim, embed, hidden=hidden, layers=layers))
        elif kind == "concat":
            self.critic = ConcatCritic(mlp(2 * dim, 1, hidden=hidden, layers=layers))
        else:
            raise RobenchError(f"unknown critic kind {kind!r}; valid: separable, concat")
        self.baseline = mlp(dim, 1, hidden=baseline_hidden, layers=2) if baseline else None

    def forward(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor | float]:
        log_baseline = self.baseline(y).squeeze(1) if self.baseline is not None else 0.0
        return self.critic(x, y), log_baseline


def _gaussian_critic(name: str, dim: int, kind: str, seed: int) -> GaussianCritic:
    if name not in BOUND_NAMES:
        raise RobenchError(f"unknown MI bound {name!r}; valid: {', '.join(BOUND_NAMES)}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return GaussianCritic(dim, kind=kind, baseline=name in NEEDS_BASELINE)


def staircase(
    name: str, mis: tuple[float, ...] | list[float], *, steps_per_stage: int, batch_size: int = 64, dim: int = 20,
    lr: float = 5e-4, seed: int = 0, kind: str = "separable", alpha: float = 0.01,
) -> Iterator[tuple[float, GaussianCritic, list[float]]]:
    """Poole et al.'s Fig. 2 protocol: one critic and one Adam optimizer at a constant learning rate,
    trained on correlated Gaussians whose true MI steps through ``mis``, ``steps_per_stage`` steps each.

    After each stage yields (true MI, the critic in eval mode, the training estimates of that stage);
    training resumes (in train mode) when the next stage is asked for.
    """
    critic = _gaussian_critic(name, dim, kind, seed)
    generator = torch.Generator().manual_seed(seed + 1)
    optimizer = torch.optim.Adam(critic.parameters(), lr=lr)
    for mi in mis:
        critic.train()
        history = []
        for _ in range(steps_per_stage):
            x, y = correlated_gaussian(mi, batch_size, dim=dim, generator=generator)
            value = estimate(name, *critic(x, y), alpha=alpha)
            optimizer.zero_grad(set_to_none=True)
            (-value).backward()
            optimizer.step()
            history.append(value.item())
        yield mi, critic.eval(), history


def train_gaussian_critic(
    name: str, mi: float, *, steps: int = 500, batch_size: int = 64, dim: int = 20, lr: float = 5e-4,
    seed: int = 0, kind: str = "separable", alpha: float = 0.01,
) -> GaussianCritic:
    """Maximise bound ``name`` on correlated Gaussians with I(x; y) = ``mi`` (Adam, constant lr): one
    stage of :func:`staircase`."""
    for _, critic, _ in staircase(name, (mi,), steps_per_stage=steps, batch_size=batch_size, dim=dim, lr=lr,
                                  seed=seed, kind=kind, alpha=alpha):
        return critic
    raise AssertionError("unreachable")


def optimal_scores(name: str, x: Tensor, y: Tensor, mi: float) -> Tensor:
    """The optimal critic of bound ``name``'s training objective: log p(y|x)/p(y), plus 1 for NWJ (whose
    optimum is 1 + log ratio). ``js`` and ``js-shifted`` get the JS objective's optimum, the log ratio itself."""
    scores = gaussian_log_ratio(x, y, mi)
    return scores + 1.0 if name == "nwj" else scores


@torch.no_grad()
def gaussian_estimates(
    name: str, critic: GaussianCritic | None, mi: float, *, batches: int = 50, batch_size: int = 64, dim: int = 20,
    seed: int = 0, alpha: float = 0.01,
) -> Tensor:
    """One estimate per fresh batch; ``critic=None`` uses :func:`optimal_scores` (and a zero log-baseline)."""
    generator = torch.Generator().manual_seed(seed)
    values = []
    for _ in range(batches):
        x, y = correlated_gaussian(mi, batch_size, dim=dim, generator=generator)
        if critic is None:
            values.append(estimate(name, optimal_scores(name, x, y, mi), 0.0, alpha=alpha))
        else:
            values.append(estimate(name, *critic(x, y), alpha=alpha))
    return torch.stack(values)
