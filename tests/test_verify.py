"""verify.py: only proposals inside the threat model that a fresh forward pass misclassifies count."""
import pytest
import torch
from torch import nn

from robench.threat import ThreatModel
from robench.verify import predict_correct, verify


def test_out_of_ball_or_bounds_proposals_are_rejected_not_counted(linear_binary):
    x = torch.full((4, 1, 4, 4), 0.5)
    y = linear_binary(x).argmax(1)
    w = linear_binary.w.detach()
    flip = -torch.sign(w) * (1 if y[0] == 1 else -1)
    needed = float((x[0].flatten() @ w.flatten()).abs() / w.abs().sum())
    threat = ThreatModel("linf", min(0.45, 1.2 * needed))
    assert 1.2 * needed < 0.45
    far = x + 1.0 * flip  # flips the class but is far outside the ball and the bounds
    near = threat.project(x + flip, x)  # the optimal L-inf attack: w's sign pattern
    proposals = torch.stack([far[0], near[1], x[2], torch.full_like(x[3], float("nan"))])
    check = verify(linear_binary, x, proposals, y, threat)
    assert check.in_threat.tolist() == [False, True, True, False]
    assert not check.broken[0] and check.rejected[0]
    assert check.broken[1] and check.misclassified[1]
    assert not check.broken[2] and not check.rejected[2]
    assert not check.broken[3]


class CoinFlip(nn.Module):
    """A randomized target that is right with probability p."""

    randomized = True

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x):
        right = torch.rand(len(x)) < self.p
        return torch.stack([right.float(), (~right).float()], dim=1)


def test_randomized_predictions_are_decided_by_majority_vote():
    torch.manual_seed(0)
    x = torch.zeros(200, 1)
    y = torch.zeros(200, dtype=torch.long)
    mostly_right, _ = predict_correct(CoinFlip(0.8), x, y, draws=25)
    mostly_wrong, _ = predict_correct(CoinFlip(0.2), x, y, draws=25)
    assert mostly_right.float().mean() > 0.95 and mostly_wrong.float().mean() < 0.05


class RowCoinFlip(CoinFlip):
    """CoinFlip declaring its draws per row: votes may run as stacked copies."""

    independent_rows = True

    def __init__(self, p: float) -> None:
        super().__init__(p)
        self.calls: list[int] = []

    def forward(self, x):
        self.calls.append(len(x))
        return super().forward(x)


@pytest.mark.parametrize("max_batch", [4096, 60, 7])
def test_stacked_votes_are_the_same_majority_vote_in_fewer_calls(max_batch):
    x, y = torch.zeros(200, 1), torch.zeros(200, dtype=torch.long)
    torch.manual_seed(0)
    target = RowCoinFlip(0.8)
    mostly_right, margins = predict_correct(target, x, y, draws=25, max_batch=max_batch)
    assert mostly_right.float().mean() > 0.95 and max(target.calls) <= max_batch
    assert sum(target.calls) == 25 * 200  # every row voted 25 times
    assert len(target.calls) <= 25 * -(-200 // max_batch)  # never more calls than one vote per call
    assert max_batch < 200 * 25 or len(target.calls) == 2  # 4096 rows: 163 examples x 25, then 37 x 25
    # a row's margin is the mean over its own 25 draws: +1 right, -1 wrong, so it lies on that grid
    assert torch.allclose((margins * 25 + 25) / 2, ((margins * 25 + 25) / 2).round(), atol=1e-5)
    torch.manual_seed(0)
    mostly_wrong, _ = predict_correct(RowCoinFlip(0.2), x, y, draws=25, max_batch=max_batch)
    assert mostly_wrong.float().mean() < 0.05
