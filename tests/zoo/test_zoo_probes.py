"""Linear probes: frozen encoders, logits for attack, cached, and they learn the labels."""
from __future__ import annotations

import pytest
import torch

from robench.zoo import encoders, probes
from robench.zoo.training import seeded_init


def tiny_probe(data, steps: int = 20):
    def build():
        return encoders.ContrastiveModel(1, 8, 8, objective="infonce-views", dim=32, head_dim=16)

    def trained():
        model = seeded_init(0, build)
        encoders.train_contrastive(model, data.x_train, steps=steps, batch_size=32, seed=0)
        return model

    return probes.probe_model("tiny-infonce-views-probe", data, seed=0, encoder_config={"steps": steps, "dim": 32},
                              build_encoder=build, trained_encoder=trained, epochs=30)


def test_probe_learns_labels_with_a_frozen_encoder(digits):
    probe = tiny_probe(digits)
    assert probe.robench_meta["clean_test_accuracy"] > 0.8  # chance is 0.1
    assert all(not p.requires_grad for p in probe.encoder.parameters())
    assert all(p.requires_grad for p in probe.linear.parameters())
    # a target: logits for N x 1 x 8 x 8 inputs in [0, 1], with input gradients for white-box attacks
    x = digits.x_test[:4].clone().requires_grad_(True)
    logits = probe(x)
    assert logits.shape == (4, 10)
    logits[:, 0].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_cached_probe_reloads_identically(tiny_digits):
    first = tiny_probe(tiny_digits, steps=3)
    second = tiny_probe(tiny_digits, steps=3)  # from the cache, without training
    x = tiny_digits.x_test[:8]
    torch.testing.assert_close(first(x), second(x))
    assert second.robench_meta == first.robench_meta
    # the encoder stays in eval mode when the probe is put in train mode (frozen statistics)
    second.train()
    assert not second.encoder.training


def test_probe_config_changes_with_its_encoder(tiny_digits):
    a = probes.probe_config(tiny_digits, seed=0, encoder_config={"steps": 1})
    b = probes.probe_config(tiny_digits, seed=0, encoder_config={"steps": 2})
    assert a != b and a["encoder"] == {"steps": 1}


@pytest.mark.slow
def test_real_js_probe_reaches_the_required_accuracy_through_the_cli(digits):
    """``robench zoo train js-probe`` with the shipped configuration (about 25 s on one core)."""
    from click.testing import CliRunner

    from robench.zoo.commands import zoo

    result = CliRunner().invoke(zoo, ["train", "js-probe"])
    assert result.exit_code == 0, result.output
    assert "trained in" in result.output
    listing = CliRunner().invoke(zoo, ["list"])
    line = next(l for l in listing.output.splitlines() if l.startswith("js-probe "))
    assert "cached" in line
    accuracy = float(line.split("clean acc ")[1].split(",")[0])
    assert accuracy >= 0.85
