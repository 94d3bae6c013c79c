"""No early stop on a draw: on a randomized target an attack leaves an example only once the
verifier's majority vote confirms its break (robench.target.confirmed_breaks), and pays for the vote."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from robench import rng
from robench.registry import attacks, load_builtins
from robench.tags import Declared, target_tags
from robench.threat import ThreatModel
from robench.verify import majority_vote

load_builtins()


class EveryFifthCallLies(nn.Module):
    """Answers like its model, except that every fifth call swaps the top two classes: one draw in
    five is a 'lucky' break, while a 15-draw majority never is (3 of 15 calls lie)."""

    randomized = True

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        logits = self.model(x)
        if self.calls % 5:
            return logits
        top2 = logits.topk(2, dim=1).indices
        swapped = logits.clone()
        swapped.scatter_(1, top2[:, :1], logits.gather(1, top2[:, 1:]))
        swapped.scatter_(1, top2[:, 1:], logits.gather(1, top2[:, :1]))
        return swapped


def problem():
    generator = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 3)
    x = torch.rand(8, 1, 4, 4, generator=generator)
    y = model(x).argmax(1)
    return model.eval(), x, y


CASES = {"pgd": {"steps": 10}, "apgd-ce": {"steps": 10}, "spsa": {"steps": 10, "samples": 8}, "mifgsm": {"steps": 10}}


@pytest.mark.parametrize("name", list(CASES))
def test_an_attack_does_not_stop_on_a_lucky_draw(name):
    model, x, y = problem()
    threat = ThreatModel("linf", 1e-4)  # far too small to break anything for real
    seeds = rng.example_seeds(0, name, torch.arange(len(x)))
    attack = attacks.get(name)(**CASES[name])

    lying = EveryFifthCallLies(model)
    tags = target_tags(lying)
    naive = attack.run(Declared(lying, tags), x, y, threat, seeds=seeds)
    lying.calls = 0
    voting = attack.run(Declared(lying, tags, vote=majority_vote(lying, tags)), x, y, threat, seeds=seeds)

    full = int(voting.queries.min())
    assert int(naive.queries.min()) < full, "without the vote some example stops on a lying call (the test can fail)"
    # with the vote nothing stops early: every example pays its whole budget plus the votes it asked for
    plain = attack.run(Declared(model, target_tags(model)), x, y, threat, seeds=seeds)
    assert (voting.queries >= plain.queries).all()
    assert (voting.queries > plain.queries).any(), "the votes are counted as queries"
