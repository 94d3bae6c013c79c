"""robench.testing, the public conformance kit: it passes good plugins, fails broken ones with a
sentence naming the fault, and runs from a plugin author's own test file outside this repository."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from robench.attacks.base import Attack, AttackResult
from robench.certify.base import CERTIFIED, Certification, Certifier
from robench.testing import (
    DefenseUnderTest, check_attack, check_certifier, check_defense, check_attack_counts_queries_exactly,
    check_attack_is_batch_independent, check_attack_proposals_in_threat_model, check_certifier_is_sound,
    check_defense_logits, check_defense_randomness_is_declared, parametrize_with_checks,
)


class Noise(Attack):
    """A correct toy attack: one random point of the ball per example, from the example's own stream."""

    name = "noise"
    gradient_free = True

    def run(self, target, x, y, threat, *, seeds):
        from robench import rng

        delta = threat.epsilon * rng.rademacher(seeds, 0, tuple(x.shape[1:]), x.dtype)
        x_adv = threat.project(x + delta * (0.5 if threat.norm == "linf" else 1 / x[0].numel() ** 0.5), x)
        with torch.no_grad():
            target(x_adv)
        return AttackResult(x_adv, torch.ones(len(x), dtype=torch.long))


class OutsideTheBall(Noise):
    def run(self, target, x, y, threat, *, seeds):
        result = super().run(target, x, y, threat, seeds=seeds)
        return AttackResult((x + 2 * threat.epsilon).clamp(0, 1), result.queries)


class Miscounts(Noise):
    def run(self, target, x, y, threat, *, seeds):
        result = super().run(target, x, y, threat, seeds=seeds)
        with torch.no_grad():
            target(result.x_adv)  # a second forward it does not count
        return result


class BatchWideGenerator(Noise):
    def run(self, target, x, y, threat, *, seeds):
        generator = torch.Generator().manual_seed(0)  # one stream for the whole batch
        delta = (torch.rand(x.shape, generator=generator) * 2 - 1) * threat.epsilon * 0.1
        with torch.no_grad():
            target(x)
        return AttackResult(threat.project(x + delta, x), torch.ones(len(x), dtype=torch.long))


def test_a_correct_attack_passes_every_check():
    check_attack(Noise())


@pytest.mark.parametrize("attack, check, says", [
    (OutsideTheBall(), check_attack_proposals_in_threat_model, "outside the linf ball"),
    (Miscounts(), check_attack_counts_queries_exactly, "target was asked for"),
    (BatchWideGenerator(), check_attack_is_batch_independent, "changes when it runs alone"),
])
def test_broken_attacks_fail_with_a_sentence(attack, check, says):
    with pytest.raises(AssertionError, match=says):
        check(attack)
    with pytest.raises(AssertionError):
        check_attack(attack)


class UndeclaredNoise(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x + 0.05 * torch.randn_like(x))


class Renames(nn.Module):
    def __init__(self, model):
        super().__init__()
        model.eval_mode_of_mine = "changed"  # writes onto the wrapped model
        self.model = model

    def forward(self, x):
        return self.model(x)


def test_defense_checks_pass_a_plain_wrapper_and_fail_broken_ones():
    check_defense(lambda model: nn.Sequential(nn.Identity(), model))
    with pytest.raises(AssertionError, match="does not declare randomized"):
        check_defense_randomness_is_declared(DefenseUnderTest(UndeclaredNoise))
    with pytest.raises(AssertionError, match="modified the model it wraps"):
        check_defense_logits(DefenseUnderTest(Renames))


class CertifiesEverything(Certifier):
    name = "optimist"
    norms = ("linf", "l2")

    def certify(self, target, x, y, threat, *, seeds=None):
        n = len(x)
        return Certification(torch.full((n,), CERTIFIED, dtype=torch.int8), x.clone(), torch.zeros(n))


def test_an_unsound_certifier_is_caught_by_sampling_the_ball():
    with pytest.raises(AssertionError, match="certif"):
        check_certifier_is_sound(CertifiesEverything(), "linf")
    with pytest.raises(AssertionError):
        check_certifier(CertifiesEverything())


def test_the_kit_passes_robench_s_own_certifiers():
    from robench.certify import CROWN, IBP, MILP

    for certifier in (IBP(), CROWN(), MILP(time_limit=5.0)):
        check_certifier(certifier)


@parametrize_with_checks([Noise()])
def test_parametrize_with_checks_gives_one_case_per_check(obj, check):
    check(obj)


PLUGIN = '''
"""A plugin author's attack, in a package of their own."""
import torch
from robench.attacks.base import Attack, AttackResult
from robench import rng


class Jitter(Attack):
    name = "jitter"
    gradient_free = True

    def __init__(self, *, scale: float = 0.5) -> None:
        self.scale = scale

    def run(self, target, x, y, threat, *, seeds):
        x_adv = threat.project(x + self.scale * threat.epsilon * rng.rademacher(seeds, 0, tuple(x.shape[1:]), x.dtype), x)
        with torch.no_grad():
            target(x_adv)
        return AttackResult(x_adv, torch.ones(len(x), dtype=torch.long))
'''

PLUGIN_TEST = '''
from robench.testing import parametrize_with_checks
from myattack import Jitter


@parametrize_with_checks([Jitter(scale=0.1)])
def test_robench_contract(obj, check):
    check(obj)
'''


@pytest.mark.slow
def test_a_plugin_attack_outside_the_repository_passes_the_kit_in_its_own_test_file(tmp_path):
    (tmp_path / "myattack.py").write_text(textwrap.dedent(PLUGIN))
    (tmp_path / "test_myattack.py").write_text(textwrap.dedent(PLUGIN_TEST))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["OMP_NUM_THREADS"] = "1"
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_myattack.py"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    from robench.testing import attack_checks

    assert f"{len(list(attack_checks()))} passed" in done.stdout, done.stdout[-2000:]
