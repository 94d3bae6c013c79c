"""VQ-VAE: quantization snaps to the codebook, and the straight-through estimator reaches the encoder."""
from __future__ import annotations

import torch

from robench.zoo import vqvae
from robench.zoo.encoders import fit


def make() -> vqvae.VQVAE:
    torch.manual_seed(0)
    return vqvae.VQVAE(1, 8, 8, num_codes=8, code_dim=4, hidden=8)


def test_quantized_codes_are_codebook_vectors(tiny_digits):
    model = make()
    z_q, _, _ = model.quantize(tiny_digits.x_train[:6])
    vectors = z_q.permute(0, 2, 3, 1).reshape(-1, 4)
    distances = torch.cdist(vectors, model.quantizer.codebook)
    assert distances.min(1).values.max().item() < 1e-3  # cdist rounding
    assert model(tiny_digits.x_train[:6]).shape == (6, 4 * 4 * 4)


def test_straight_through_gradient_reaches_the_encoder(tiny_digits):
    model = make()
    x = tiny_digits.x_train[:8]
    z_e = model.encoder(x)
    z_q, codebook_loss, commitment_loss = model.quantizer(z_e)
    # the quantizer's backward pass is the identity: d z_q / d z_e = I
    upstream = torch.randn_like(z_q)
    (grad,) = torch.autograd.grad(z_q, z_e, upstream, retain_graph=True)
    torch.testing.assert_close(grad, upstream)
    # the reconstruction loss alone trains the encoder through the argmin
    model.zero_grad()
    logits = model.decoder(z_q)
    torch.nn.functional.binary_cross_entropy_with_logits(logits, x).backward(retain_graph=True)
    assert model.encoder[0].weight.grad.abs().sum() > 0
    # codebook loss moves only the codebook, commitment only the encoder
    model.zero_grad()
    codebook_loss.backward(retain_graph=True)
    assert model.quantizer.codebook.grad.abs().sum() > 0 and model.encoder[0].weight.grad is None
    model.zero_grad()
    commitment_loss.backward()
    assert model.quantizer.codebook.grad is None and model.encoder[0].weight.grad.abs().sum() > 0


def test_training_reduces_the_loss(tiny_digits):
    model = make()
    x = tiny_digits.x_train
    before = model.loss(x).item()
    fit("vqvae", model, lambda batch, _: model.loss(batch), x, steps=60, batch_size=32, seed=0, lr=5e-3)
    assert model.loss(x).item() < before
