"""verify.py: only proposals inside the threat model that a fresh forward pass misclassifies count."""
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
