"""The iterative base (robench/attacks/iterative.py) and the foolbox adapter's per-example row count."""
import torch

from robench_testing import conv_problem
from robench.attacks.gradient import _ExampleCounter
from robench.attacks.pgd import PGD
from robench.threat import ThreatModel


def test_restarts_run_only_on_examples_still_robust_and_counts_add_up():
    model, x, y, seeds = conv_problem("iterative")
    threat = ThreatModel("linf", 0.03)
    one = PGD(steps=5, restarts=1).run(model, x, y, threat, seeds=seeds)
    three = PGD(steps=5, restarts=3).run(model, x, y, threat, seeds=seeds)
    with torch.no_grad():
        broken_first = model(one.x_adv).argmax(1) != y
    # an example the first run broke is never restarted: same proposal, plus the one check forward
    assert torch.equal(three.x_adv[broken_first], one.x_adv[broken_first])
    assert torch.equal(three.queries[broken_first], one.queries[broken_first] + 1)
    assert (three.queries[~broken_first] > one.queries[~broken_first]).all()
    assert (three.queries <= PGD(steps=5, restarts=3).budget(threat)).all()


def test_foolbox_rows_are_counted_per_example():
    counter = _ExampleCounter(torch.nn.Identity())
    counter.reset(4)
    counter(torch.zeros(8, 2))  # two copies of the chunk: two rows each
    counter(torch.zeros(3, 2))  # part of a chunk: by position
    assert counter.rows_per_example.tolist() == [3, 3, 3, 2]
