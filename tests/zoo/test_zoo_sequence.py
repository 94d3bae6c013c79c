"""Sequence classifiers (robench/zoo/sequence.py): shapes, seeding, ByteNet's dilations, the GRU's
final state, and WaveRNN-style pruning that really leaves >= 90% zeros."""
from __future__ import annotations

import pytest
import torch

from robench.data import Dataset, load_dataset
from robench.errors import RobenchError
from robench.registry import models
from robench.target import SEQUENCE
from robench.zoo import sequence as S

pytest.importorskip("mnist1d")

NAMES = ("cnn1d", "bytenet", "wavernn", "wavernn-sparse")
#: tiny training runs: the properties hold after a step as after an hour
TINY = {"cnn1d": {"epochs": 1}, "bytenet": {"epochs": 1, "blocks": 3, "channels": 16},
        "wavernn": {"epochs": 1, "hidden": 16}, "wavernn-sparse": {"epochs": 2, "hidden": 16, "prune_every": 2}}


@pytest.fixture(scope="module")
def tiny_mnist1d() -> Dataset:
    data = load_dataset("mnist1d")
    return Dataset("tiny-mnist1d", data.x_train[:128], data.y_train[:128], data.x_test[:64], data.y_test[:64], 10,
                   epsilons=data.epsilons)


@pytest.mark.parametrize("name", NAMES)
def test_models_map_sequences_to_logits_with_input_gradients(tiny_mnist1d, name):
    entry = models.entry(name)
    assert entry.inputs == (SEQUENCE,)
    model = entry.factory(tiny_mnist1d, **TINY[name])
    x = tiny_mnist1d.x_test[:5].clone().requires_grad_(True)
    logits = model(x)
    assert logits.shape == (5, 10) and torch.isfinite(logits).all()
    logits[:, 0].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0, "white-box attacks need input gradients"
    assert 0.0 <= model.robench_meta["clean_test_accuracy"] <= 1.0


@pytest.mark.parametrize("name", ["cnn1d", "wavernn-sparse"])
def test_training_is_deterministic_given_the_seed(tiny_mnist1d, name, tmp_path, monkeypatch):
    def trained(cache: str, seed: int) -> dict[str, torch.Tensor]:
        monkeypatch.setenv("ROBENCH_CACHE", str(tmp_path / cache))  # a fresh cache: trained, not loaded
        return models.get(name)(tiny_mnist1d, seed=seed, **TINY[name]).state_dict()

    first, again, other = trained("a", 0), trained("b", 0), trained("c", 1)
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert any(not torch.equal(first[k], other[k]) for k in first), "another seed gives another model"


def test_sparse_gru_is_at_least_90_percent_zero_in_every_gate_matrix(tiny_mnist1d):
    model = S.wavernn_sparse(tiny_mnist1d, **TINY["wavernn-sparse"])
    blocks = S.gate_blocks(model.gru)
    assert set(blocks) == {"W_ir", "W_iz", "W_in", "W_hr", "W_hz", "W_hn"}
    for name, block in blocks.items():
        assert (block == 0).float().mean() >= 0.9, name
    weights = torch.cat([model.gru.weight_ih_l0.detach().flatten(), model.gru.weight_hh_l0.detach().flatten()])
    assert (weights == 0).float().mean() >= 0.9 and model.robench_meta["gru_zero_fraction"] >= 0.9
    for name in S.GRU_MATRICES:  # the stored masks are the zeros
        mask = getattr(model, f"mask_{name}")
        assert torch.equal(getattr(model.gru, name).detach() != 0, mask.bool() & (getattr(model.gru, name).detach() != 0))
        assert (mask == 0).float().mean() >= 0.9
    reloaded = S.wavernn_sparse(tiny_mnist1d, **TINY["wavernn-sparse"])  # from the cache
    assert S.zero_fraction(reloaded.gru) == S.zero_fraction(model.gru)
    dense = S.wavernn(tiny_mnist1d, **TINY["wavernn"])
    assert S.zero_fraction(dense.gru) < 0.01, "the dense model is not pruned"


def test_cubic_sparsity_schedule():
    values = [S.sparsity_at(t, total=100, final=0.9) for t in range(0, 121)]
    assert values[0] == 0.0 and values[100] == pytest.approx(0.9) and values[120] == pytest.approx(0.9)
    assert values[50] == pytest.approx(0.9 * (1 - 0.5 ** 3))
    assert all(a <= b for a, b in zip(values, values[1:])), "sparsity never decreases"


def test_magnitude_masks_drop_the_smallest_weights_per_gate():
    gru = torch.nn.GRU(2, 4)
    masks = S.magnitude_masks(gru, 0.5)
    for name in S.GRU_MATRICES:
        weight = getattr(gru, name).detach()
        for block, mask in zip(weight.chunk(3), masks[name].chunk(3)):
            assert int((mask == 0).sum()) == block.numel() // 2
            assert block[mask == 0].abs().max() <= block[mask == 1].abs().min()


def test_bytenet_dilations_double_and_its_receptive_field_covers_the_signal():
    model = S.ByteNet(1, 10, channels=16, blocks=5)
    convs = [block.body[5] for block in model.blocks]
    assert [c.dilation[0] for c in convs] == [1, 2, 4, 8, 16] == list(model.dilations)
    assert all(c.kernel_size == (3,) for c in convs)
    x = torch.rand(1, 1, 40, requires_grad=True)
    features = model.blocks(model.embed(x))
    assert features.shape == (1, 16, 40), "dilated convolutions keep the length"
    features[0, :, 20].sum().backward()
    assert (x.grad[0, 0] != 0).all(), "a middle position sees the whole signal"
    x.grad = None
    model.blocks(model.embed(x))[0, :, -1].sum().backward()
    reach = 1 + 2 + 4 + 8 + 16  # k = 3: each block widens the view by its dilation on either side
    assert (x.grad[0, 0, : 39 - reach] == 0).all() and (x.grad[0, 0, 39 - reach :] != 0).all()


def test_wavernn_classifies_the_grus_final_hidden_state():
    torch.manual_seed(0)
    model = S.GRUClassifier(1, 10, hidden=8).eval()
    x = torch.rand(3, 1, 40)
    cell = torch.nn.GRUCell(1, 8)
    cell.load_state_dict({k.replace("_l0", ""): v for k, v in model.gru.state_dict().items()})
    h = torch.zeros(3, 8)
    for t in range(40):  # time steps = L, features = C
        h = cell(x[:, :, t], h)
    assert torch.allclose(model.final_state(x), h, atol=1e-6)
    assert torch.allclose(model(x), model.head(h), atol=1e-6)


def test_sequence_models_refuse_images(digits):
    with pytest.raises(RobenchError, match="takes sequences"):
        S.cnn1d(digits, epochs=1)
