"""IBP and CROWN bounds (robench/certify/ibp.py, crown.py, layers.py): they contain the margins and
logits of thousands of points of the ball (uniform, box corners, the sphere), CROWN's lie inside
IBP's, and layers that cannot be bounded are refused by name."""
import pytest
import torch
from torch import nn

from robench.certify import CROWN, IBP, crown_logit_bounds, crown_margin_bounds, ibp_logit_bounds, ibp_margin_bounds
from robench.certify.layers import dense_network, read_layers
from robench.defenses.noise import GaussianNoiseVote
from robench.errors import RobenchError
from robench.target import Normalized
from robench.threat import ThreatModel, random_delta
from robench.zoo.cnn import SmallCNN
from robench_testing import SignalNet

POINTS = 1500  # per example and kind (uniform, corners / sphere)


def _randomize(model: nn.Module, seed: int, scale: float = 0.5) -> nn.Module:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            for name, p in module.named_parameters(recurse=False):
                p.copy_(torch.randn(p.shape, generator=generator) * scale + (1.0 if "weight" in name and isinstance(module, nn.modules.batchnorm._BatchNorm) else 0.0))
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.running_mean.copy_(torch.randn(module.running_mean.shape, generator=generator) * 0.2)
                module.running_var.copy_(torch.rand(module.running_var.shape, generator=generator) + 0.5)
    return model.eval()


def mlp() -> nn.Module:
    return _randomize(nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 12), nn.ReLU(),
                                    nn.Linear(12, 12), nn.ReLU(), nn.Linear(12, 5)), 1)


def conv_net() -> nn.Module:
    """Conv, BatchNorm (eval), max pooling with odd, padded windows, average pooling, dropout and
    the input normalization."""
    body = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(3, stride=2, padding=1),
        nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(),
        nn.Sequential(nn.Linear(6 * 2 * 2, 10), nn.BatchNorm1d(10), nn.ReLU(), nn.Dropout(0.3)), nn.Identity(),
        nn.Linear(10, 4),
    )
    return Normalized(_randomize(body, 2), (0.4, 0.6), (0.3, 0.2)).eval()


def signal_net() -> nn.Module:
    return _randomize(nn.Sequential(nn.Conv1d(1, 3, 3), nn.BatchNorm1d(3), nn.ReLU(), nn.MaxPool1d(2), nn.Conv1d(3, 4, 3),
                                    nn.ReLU(), nn.AvgPool1d(2), nn.Flatten(), nn.Linear(8, 3)), 3)


def small_cnn() -> nn.Module:
    return _randomize(SmallCNN(1, 8, 8, 10, width_mult=2), 4, scale=0.4)


MODELS = {  # name: (model, example shape, L-inf epsilon, L2 epsilon)
    "mlp": (mlp, (1, 4, 4), 0.05, 0.15),
    "conv": (conv_net, (2, 8, 8), 0.02, 0.08),
    "signal": (signal_net, (1, 16), 0.05, 0.1),
    "smallcnn": (small_cnn, (1, 8, 8), 0.02, 0.08),
}


def _problem(name: str, n: int = 4):
    build, shape, eps_inf, eps_2 = MODELS[name]
    model = build()
    generator = torch.Generator().manual_seed(5)
    x = torch.rand(n, *shape, generator=generator)
    x[0] = 0.0  # the data bounds clip the ball
    return model, x, model(x).argmax(1), eps_inf, eps_2


def _ball_points(x: torch.Tensor, threat: ThreatModel, count: int) -> torch.Tensor:
    """(N, 2 * count, ...): uniform points of ball ∩ bounds and points on its edge (box corners / sphere)."""
    n, shape = len(x), tuple(x.shape[1:])
    seeds = torch.arange(n * count).view(n, count)
    rows = []
    for i in range(n):
        inside = random_delta(threat.norm, threat.epsilon, shape, seeds=seeds[i])
        edge = random_delta(threat.norm, threat.epsilon, shape, seeds=seeds[i] + 10**6, surface=True)
        if threat.norm == "linf":  # corners: every coordinate at +-eps
            edge = edge.sign() * threat.epsilon
        points = x[i] + torch.cat([inside, edge])
        rows.append(threat.project(points, x[i].expand_as(points)))
    return torch.stack(rows)


def _values(model, x, y, threat):
    points = _ball_points(x, threat, POINTS)
    with torch.no_grad():
        logits = model(points.flatten(0, 1)).view(len(x), points.shape[1], -1).double()
    margins = logits.gather(2, y.view(-1, 1, 1).expand(-1, logits.shape[1], 1)) - logits
    return logits, margins


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_bounds_contain_margins_and_logits_of_the_ball(name, norm):
    model, x, y, eps_inf, eps_2 = _problem(name)
    threat = ThreatModel(norm, eps_inf if norm == "linf" else eps_2)
    logits, margins = _values(model, x, y, threat)
    tol = 1e-5
    ibp_m = ibp_margin_bounds(model, x, y, threat)
    crown_m = crown_margin_bounds(model, x, y, threat)
    assert (margins >= ibp_m.unsqueeze(1) - tol).all()
    assert (margins >= crown_m.unsqueeze(1) - tol).all()
    assert (crown_m >= ibp_m).all(), "CROWN's margin bounds are never looser than IBP's"
    assert (ibp_m.gather(1, y.view(-1, 1)) == 0).all()
    for lower, upper in (ibp_logit_bounds(model, x, threat), crown_logit_bounds(model, x, threat)):
        assert (logits >= lower.unsqueeze(1) - tol).all() and (logits <= upper.unsqueeze(1) + tol).all()
    ibp_lo, ibp_hi = ibp_logit_bounds(model, x, threat)
    crown_lo, crown_hi = crown_logit_bounds(model, x, threat)
    assert (crown_lo >= ibp_lo).all() and (crown_hi <= ibp_hi).all()
    assert (crown_m > ibp_m + 1e-6).any(), "CROWN is strictly tighter somewhere"


@pytest.mark.parametrize("intermediate", ["crown", "ibp"])
def test_crown_intermediate_choices_are_sound(intermediate):
    model, x, y, eps, _ = _problem("conv")
    threat = ThreatModel("linf", eps)
    _, margins = _values(model, x, y, threat)
    bound = crown_margin_bounds(model, x, y, threat, intermediate=intermediate)
    assert (margins >= bound.unsqueeze(1) - 1e-5).all()


def test_dense_form_computes_the_same_function():
    for name in MODELS:
        model, x, _, _, _ = _problem(name)
        layers = dense_network(read_layers(model, "test"), tuple(x.shape[1:]), "test", 2**24, x.device)
        h = x.flatten(1).double()
        for layer in layers:
            z = h @ layer.weight.T + layer.bias
            h = z if layer.relu is None else torch.where(layer.relu, z.clamp(min=0), z)
        assert torch.allclose(h, model(x).double(), atol=1e-5), name


def test_l2_first_layer_uses_the_dual_norm():
    """An affine model's margin over an L2 ball inside the bounds is exact: m(x) - eps ||c||_2."""
    model = _randomize(nn.Sequential(nn.Flatten(), nn.Linear(16, 4)), 6)
    x = torch.full((3, 1, 4, 4), 0.5) + 0.01 * torch.arange(3.0).view(3, 1, 1, 1)
    y = model(x).argmax(1)
    threat = ThreatModel("l2", 0.2)
    w = model[1].weight.double()
    exact = (model(x).double().gather(1, y.view(-1, 1)) - model(x).double()) - 0.2 * (w[y].unsqueeze(1) - w.unsqueeze(0)).norm(dim=2)
    exact = exact.scatter(1, y.view(-1, 1), 0.0)
    assert torch.allclose(ibp_margin_bounds(model, x, y, threat), exact, atol=1e-5)
    assert torch.allclose(crown_margin_bounds(model, x, y, threat), exact, atol=1e-5)
    # with a hidden layer, the L2 bounds are at least the L-inf box's (the box contains the ball)
    model, x, y, _, eps = _problem("mlp")
    assert (ibp_margin_bounds(model, x, y, ThreatModel("l2", eps)) >= ibp_margin_bounds(model, x, y, ThreatModel("linf", eps))).all()


def test_stacked_affine_layers_fold_exactly():
    """z = W2 relu(W1 x) with two copies of one active unit whose difference cancels: CROWN
    composes the linear maps (margin exactly 1), IBP's intervals do not cancel."""
    model = nn.Sequential(nn.Linear(1, 2), nn.ReLU(), nn.Linear(2, 2))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0], [1.0]]))
        model[0].bias.copy_(torch.tensor([1.0, 1.0]))
        model[2].weight.copy_(torch.tensor([[1.0, -1.0], [0.0, 0.0]]))
        model[2].bias.copy_(torch.tensor([1.0, 0.0]))
    x, y = torch.tensor([[0.5]]), torch.tensor([0])
    threat = ThreatModel("linf", 0.5)
    assert IBP().certify(model, x, y, threat).status.tolist() == [0]
    assert CROWN().certify(model, x, y, threat).status.tolist() == [1]
    assert crown_margin_bounds(model, x, y, threat)[0, 1].item() == pytest.approx(1.0)


class _TwoPaths(nn.Module):
    """Has features/classifier, but its forward is not classifier(features(x))."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Flatten(), nn.Linear(16, 16))
        self.classifier = nn.Sequential(nn.ReLU(), nn.Linear(16, 3))

    def forward(self, x):
        return self.classifier(self.features(x) + x.flatten(1))


class _OwnForward(nn.Sequential):
    def forward(self, x):
        return super().forward(x) * 2


class _SneakyLinear(nn.Linear):
    def forward(self, x):
        return super().forward(x).abs()


@pytest.mark.parametrize("model, name", [
    (nn.Sequential(nn.Flatten(), nn.Linear(16, 4), nn.Sigmoid(), nn.Linear(4, 3)), "Sigmoid"),
    (nn.Sequential(nn.Flatten(), nn.Linear(16, 4), nn.Tanh(), nn.Linear(4, 3)), "Tanh"),
    (SignalNet(), "ToySignalNet"),
    (GaussianNoiseVote(nn.Sequential(nn.Flatten(), nn.Linear(16, 3)), sigma=0.1, votes=2), "GaussianNoiseVote"),
    (_OwnForward(nn.Flatten(), nn.Linear(16, 3)), "_OwnForward"),
    (nn.Sequential(nn.Flatten(), _SneakyLinear(16, 3)), "_SneakyLinear"),
    (nn.Sequential(nn.Flatten(), nn.Linear(16, 4), nn.BatchNorm1d(4).train(), nn.Linear(4, 3)), "BatchNorm1d"),
    (nn.Sequential(nn.Conv2d(1, 2, 3), nn.MaxPool2d(2, return_indices=True)), "MaxPool2d"),
])
@pytest.mark.parametrize("certifier", [IBP(), CROWN()])
def test_unsupported_layers_are_refused_by_name(model, name, certifier):
    x = torch.rand(2, 1, 4, 4) if name != "ToySignalNet" else torch.rand(2, 1, 12)
    with pytest.raises(RobenchError, match=rf"{certifier.name} cannot bound {name}\b.*supported: "):
        certifier.certify(model, x, torch.zeros(2, dtype=torch.long), ThreatModel("linf", 0.1))
    with pytest.raises(RobenchError, match=rf"cannot bound {name}\b"):
        certifier.check(model, ThreatModel("linf", 0.1))


def test_a_forward_that_is_not_the_sequence_of_its_layers_is_refused():
    model = _randomize(_TwoPaths(), 7)
    x = torch.rand(3, 1, 4, 4)
    for certifier in (IBP(), CROWN()):
        with pytest.raises(RobenchError, match="cannot bound _TwoPaths: its output differs"):
            certifier.certify(model, x, model(x).argmax(1), ThreatModel("linf", 0.1))


def test_dense_conversion_refuses_above_its_limit():
    model, x, y, eps, _ = _problem("smallcnn")
    with pytest.raises(RobenchError, match=r"crown converts layers to dense matrices.*max_dense"):
        CROWN(max_dense=1000).certify(model, x, y, ThreatModel("linf", eps))
    with pytest.raises(RobenchError, match="max_dense"):
        CROWN(max_dense=1000).check(model, ThreatModel("linf", eps), (1, 8, 8))
    CROWN().check(model, ThreatModel("linf", eps), (1, 8, 8))
