"""Target tags (robench/tags.py): read from the whole module tree once per run, a card's flags
winning, nothing written onto a user's module; a randomized block nested in a plain
``nn.Sequential`` is verified by the majority vote and attacked with EOT."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import robench
from robench_testing import TINY_SUITE, write_suite
from robench.attacks.adaptive import AdaptiveTarget, adaptive_target
from robench.defenses.noise import GaussianNoiseVote
from robench.defenses.preprocessing import bit_depth
from robench.errors import RobenchError
from robench.tags import Declared, GaussianSmoothing, TargetTags, target_tags, with_overrides
from robench.target import queries_per_row
from robench.verify import PREDICTION_DRAWS


class Jitter(nn.Module):
    """Small Gaussian input noise on every call: a randomized block that robench is not told about
    by the card or the top module (``randomized`` is counted, to see how often it is read)."""

    reads = 0

    def __init__(self, sigma: float = 0.02) -> None:
        super().__init__()
        self.sigma = sigma

    @property
    def randomized(self) -> bool:
        type(self).reads += 1
        return True

    def forward(self, x):
        return x + self.sigma * torch.randn_like(x)


def _nested(seed: int = 0) -> nn.Sequential:
    generator = torch.Generator().manual_seed(seed)
    model = nn.Sequential(Jitter(), nn.Flatten(), nn.Linear(16, 3))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=generator))
    return model.eval()


def _data(model: nn.Module, n: int = 8):
    x = torch.rand(n, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(0)
    with torch.no_grad():
        y = model[1:](x).argmax(1)  # the labels the noise-free model gives
    return x, y


def test_a_randomized_block_anywhere_in_the_tree_makes_the_target_randomized():
    model = _nested()
    tags = target_tags(model)
    assert tags.randomized and tags.differentiable and not tags.stacks_draws
    assert target_tags(model[1:]) == TargetTags()  # the plain rest: differentiable and deterministic
    quantized = nn.Sequential(bit_depth(model[1:], bits=3))
    assert target_tags(quantized).non_differentiable == (quantized[0],) and not target_tags(quantized).differentiable


def test_card_flags_win_and_nothing_is_written_onto_the_module():
    block = bit_depth(nn.Sequential(nn.Flatten(), nn.Linear(16, 3)), bits=3)
    before = copy.copy(block.__dict__)
    tags = with_overrides(target_tags(block), block, {"randomized": True, "differentiable": True})
    assert tags.randomized and tags.differentiable and tags.non_differentiable == ()
    assert target_tags(block, overrides={"randomized": None}) == target_tags(block)  # None: the card says nothing
    assert "randomized" not in block.__dict__ and block.__dict__ == before
    assert not target_tags(block).randomized and not target_tags(block).differentiable
    with pytest.raises(RobenchError, match="unknown override"):
        target_tags(block, overrides={"stochastic": True})


def test_wrappers_declare_their_tags_whole():
    model = _nested()
    adaptive = adaptive_target(model, eot_samples=4)
    assert isinstance(adaptive, AdaptiveTarget) and adaptive.eot_samples == 4
    assert target_tags(adaptive) == TargetTags(differentiable=True, randomized=True, queries_per_row=4)
    assert queries_per_row(adaptive) == 4
    declared = TargetTags(randomized=False)
    assert target_tags(Declared(model, declared)) is declared  # the walk does not look inside


def test_smoothing_is_a_tag_of_the_root():
    base = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    vote = GaussianNoiseVote(base, sigma=0.25, votes=3)
    assert target_tags(vote).smoothing == GaussianSmoothing(base, 0.25)
    assert target_tags(nn.Sequential(vote)).smoothing is None  # a smoothed block inside is not a smoothed target


def test_a_nested_randomized_block_gets_the_majority_vote_and_eot(tmp_path):
    """The honesty fix: before, only the top module's flag was read, so a Sequential holding a
    randomized block was verified on one draw while BPDA/EOT (which scanned the tree) averaged."""
    model = _nested()
    x, y = _data(model)
    suite = write_suite(tmp_path, TINY_SUITE)
    evaluation = robench.evaluate(model, x, y, defenses=("none",), suite=suite, epsilons=(0.1,), diagnostics=False,
                                  device="cpu", progress=False)
    examples = evaluation.examples
    assert (examples["draws"] == PREDICTION_DRAWS).all()
    pgd = examples[(examples["attack"] == "pgd") & examples["attacked"]]
    assert len(pgd) and (pgd["queries"] % 10 == 0).all() and pgd["queries"].max() >= 10  # EOT: 10 draws a row


def test_tags_are_read_once_per_run_and_the_model_is_left_as_it_was(tmp_path):
    model = _nested().train()  # handed over in training mode: attacked in eval mode, handed back as it came
    x, y = _data(model)
    suite = write_suite(tmp_path, TINY_SUITE)
    card = tmp_path / "none-flagged.toml"
    card.write_text('name = "none-flagged"\nfactory = "none"\nrandomized = true\ndifferentiable = false\n')
    before = {name: copy.copy(module.__dict__) for name, module in model.named_modules()}
    state = {k: v.clone() for k, v in model.state_dict().items()}
    Jitter.reads = 0
    evaluation = robench.evaluate(model, x, y, defenses=("none", str(card)), suite=suite, epsilons=(0.05, 0.1),
                                  diagnostics=False, device="cpu", progress=False)
    assert Jitter.reads == 2  # one walk of the tree per defense, however many units read the tags
    assert {name: module.__dict__ for name, module in model.named_modules()} == before
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert not hasattr(model, "differentiable") and not hasattr(model, "randomized") and model.training
    flagged = evaluation.examples[evaluation.examples["defense"] == "none-flagged"]
    assert (flagged["draws"] == PREDICTION_DRAWS).all()
