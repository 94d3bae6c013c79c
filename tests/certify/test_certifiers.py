"""The certifier contract (robench/certify/__init__.py, base.py): the registry and its one-line
errors, the Certification record, and the bracket's soundness end to end: no certified example is
broken by PGD, and every counterexample verifies, on a conv net with normalization, BatchNorm and
max pooling read through the dense form."""
import pytest
import torch
from torch import nn

from robench import rng
from robench.attacks.pgd import PGD
from robench.certify import (
    CERTIFIED, COUNTEREXAMPLE, CROWN, IBP, MILP, STATUS_NAMES, UNKNOWN, Certification, Smoothing,
    certifier_params, make_certifier,
)
from robench.errors import RobenchError
from robench.registry import certifiers
from robench.target import Normalized
from robench.threat import ThreatModel
from robench.verify import verify
from robench.zoo.cnn import SmallCNN


CERTIFIERS = certifiers.names()


def test_registry_builds_certifiers_from_names_and_parameters():
    assert set(CERTIFIERS) == {"ibp", "crown", "milp", "smoothing"}
    crown = make_certifier("crown", intermediate="ibp")
    assert isinstance(crown, CROWN) and crown.intermediate == "ibp"
    assert repr(make_certifier("milp", time_limit=2)) == (
        "MILP(time_limit=2.0, mip_rel_gap=1000000000.0, intermediate='crown', max_dense=16777216, try_corners=True)")
    assert repr(Smoothing(n=50)) == "Smoothing(n0=100, n=50, alpha=0.001, batch=1000, seed=0)"
    assert certifier_params("smoothing") == {"n0": 100, "n": 1000, "alpha": 0.001, "batch": 1000, "seed": 0}
    with pytest.raises(RobenchError, match=r"unknown certifier 'crwn' \(did you mean 'crown'\?\)"):
        make_certifier("crwn")
    with pytest.raises(RobenchError, match=r"certifier 'milp' has no parameter 'timelimit' \(did you mean 'time_limit'\?\)"):
        make_certifier("milp", timelimit=3)
    with pytest.raises(RobenchError, match="crown: intermediate must be one of 'crown', 'ibp', got"):
        make_certifier("crown", intermediate="lp")
    assert [c.name for c in map(make_certifier, CERTIFIERS)] == list(CERTIFIERS)
    assert {m: make_certifier(m).norms for m in CERTIFIERS} == {
        "ibp": ("linf", "l2"), "crown": ("linf", "l2"), "milp": ("linf",), "smoothing": ("l2",)}
    # declared, not decided by name: the assembly's soundness check reads ``sound``
    assert {m: make_certifier(m).sound for m in CERTIFIERS} == {"ibp": True, "crown": True, "milp": True, "smoothing": False}
    assert make_certifier("smoothing", n0=10, n=90).budget(ThreatModel("l2", 0.5)) == 100
    assert make_certifier("milp").budget(ThreatModel("linf", 0.1)) == 0


def test_certification_record():
    parts = [Certification(torch.tensor([CERTIFIED, UNKNOWN], dtype=torch.int8), torch.zeros(2, 3), torch.ones(2),
                           {"margin_lower": torch.tensor([1.0, -1.0])}),
             Certification(torch.tensor([COUNTEREXAMPLE], dtype=torch.int8), torch.ones(1, 3), torch.ones(1),
                           {"margin_lower": torch.tensor([-2.0]), "other": torch.zeros(1)})]
    joined = Certification.cat(parts)
    assert joined.names() == ["certified", "unknown", "counterexample"] and len(joined) == 3
    assert joined.certified.tolist() == [True, False, False] and joined.unknown.tolist() == [False, True, False]
    assert joined.found_counterexample.tolist() == [False, False, True]
    assert set(joined.details) == {"margin_lower"} and STATUS_NAMES[UNKNOWN] == "unknown"


def conv_target() -> nn.Module:
    """A SmallCNN (features/classifier) behind the input normalization, with BatchNorm added."""
    generator = torch.Generator().manual_seed(21)
    model = SmallCNN(1, 8, 8, 4, width_mult=2)
    model.features.insert(1, nn.BatchNorm2d(2))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.5)
        model.features[1].running_mean.uniform_(-0.2, 0.2, generator=generator)
        model.features[1].running_var.uniform_(0.5, 1.5, generator=generator)
    return Normalized(model.eval(), (0.5,), (0.25,)).eval()


def test_no_certified_example_is_broken_and_every_counterexample_verifies():
    target = conv_target()
    x = torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    y = target(x).argmax(1)
    y[:2] = (y[:2] + 1) % 4  # two clean mistakes: counterexample = x itself
    seeds = rng.example_seeds(0, "certify-test", torch.arange(len(x)))
    seen = set()
    for eps in (0.01, 0.04):
        threat = ThreatModel("linf", eps)
        attack = PGD(steps=20, restarts=2).run(target, x, y, threat, seeds=seeds)
        broken = verify(target, x, attack.x_adv, y, threat).broken
        results = {c.name: c.certify(target, x, y, threat) for c in (IBP(), CROWN(), MILP(time_limit=2.0))}
        for name, result in results.items():
            assert not (result.certified & broken).any(), f"{name} certified an example PGD breaks"
            found = result.found_counterexample
            assert verify(target, x[found], result.counterexample[found], y[found], threat).broken.all(), name
            assert torch.equal(result.counterexample[~found], x[~found])
            assert found[:2].all() and torch.equal(result.counterexample[:2], x[:2])
            seen.update(result.names())
        exact = results["milp"]
        assert (exact.certified | ~results["crown"].certified).all()
        assert (results["crown"].certified | ~results["ibp"].certified).all()
    assert {"certified", "counterexample"} <= seen


def test_l2_certifiers_are_sound_against_pgd():
    target = conv_target()
    x = torch.rand(12, 1, 8, 8, generator=torch.Generator().manual_seed(4))
    y = target(x).argmax(1)
    threat = ThreatModel("l2", 0.15)
    seeds = rng.example_seeds(0, "certify-l2", torch.arange(len(x)))
    broken = verify(target, x, PGD(steps=20).run(target, x, y, threat, seeds=seeds).x_adv, y, threat).broken
    for certifier in (IBP(), CROWN()):
        result = certifier.certify(target, x, y, threat)
        assert not (result.certified & broken).any()
    assert CROWN().certify(target, x, y, threat).certified.any()


def test_check_refuses_before_any_work():
    target = conv_target()
    for certifier in (IBP(), CROWN(), MILP()):
        certifier.check(target, ThreatModel("linf", 0.1), (1, 8, 8))
    with pytest.raises(RobenchError, match="milp verifies L-inf balls only"):
        MILP().check(target, ThreatModel("l2", 0.1))
    with pytest.raises(RobenchError, match="smoothing certifies L2 balls only"):
        Smoothing().check(target, ThreatModel("linf", 0.1))
    with pytest.raises(RobenchError, match="smoothing certifies the gaussian-noise defense"):
        Smoothing().check(target, ThreatModel("l2", 0.1))
    assert MILP().supports("linf") and not MILP().supports("l2")


def test_certify_timing_and_batches_do_not_change_answers():
    target = conv_target()
    x = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(8))
    y = target(x).argmax(1)
    threat = ThreatModel("linf", 0.02)
    whole = CROWN().certify(target, x, y, threat)
    pieces = CROWN(max_batch=4).certify(target, x, y, threat)
    assert torch.equal(whole.status, pieces.status)
    assert torch.allclose(whole.details["margin_lower"], pieces.details["margin_lower"], atol=1e-9)
    assert whole.seconds.shape == (6,) and (whole.seconds > 0).all()
    ibp = IBP(max_batch=2).certify(target, x, y, threat)
    assert torch.equal(ibp.status, IBP().certify(target, x, y, threat).status)
