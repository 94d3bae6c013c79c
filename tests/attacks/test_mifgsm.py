"""MI-FGSM (robench/attacks/mifgsm.py): the momentum step, and what the iterative base gives it."""
import torch

from robench_testing import assert_batch_independent, conv_problem
from robench.attacks.mifgsm import MIFGSM
from robench.attacks.pgd import PGD
from robench.threat import ThreatModel


def test_without_momentum_it_is_iterative_fgsm():
    """mu = 0: g is the L1-normalized gradient, whose sign is the gradient's: PGD from x, alpha = eps / T."""
    model, x, y, seeds = conv_problem("mifgsm")
    threat = ThreatModel("linf", 0.05)
    mi = MIFGSM(steps=6, momentum=0.0).run(model, x, y, threat, seeds=seeds)
    pgd = PGD(steps=6, rel_stepsize=1 / 6, random_start=False).run(model, x, y, threat, seeds=seeds)
    assert torch.allclose(mi.x_adv, pgd.x_adv, atol=1e-6) and torch.equal(mi.queries, pgd.queries)


def test_momentum_breaks_examples_stays_in_the_ball_and_counts_exactly():
    model, x, y, seeds = conv_problem("mifgsm")
    for norm, eps in (("linf", 0.1), ("l2", 0.5)):
        threat = ThreatModel(norm, eps)
        result = assert_batch_independent(MIFGSM(), MIFGSM(max_batch=3), model, x, y, threat, seeds)
        assert threat.contains(result.x_adv, x).all()
        broken = model(result.x_adv).argmax(1) != y
        assert broken.float().mean() > 0.5
        assert (result.queries <= 10).all() and (result.queries[broken] < 10).any()  # early exit
