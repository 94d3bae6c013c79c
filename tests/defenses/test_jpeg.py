"""JPEG block (robench/defenses/jpeg.py): a faithful codec whose gradient is zero."""
import io

import numpy as np
import pytest
import torch
from torch import nn

from robench.defenses.jpeg import JPEG, dct_matrix, jpeg, quantization_table
from robench.errors import RobenchError
from robench.target import is_differentiable, is_randomized


def _digits_like(n=32, seed=0):
    """Smooth-ish 8x8 images on 17 grey levels, like scikit-learn's digits."""
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, 1, 3, 3, generator=g)
    x = nn.functional.interpolate(base, size=(8, 8), mode="bilinear", align_corners=False)
    return torch.round(x * 16) / 16


def test_shapes_bounds_and_flags():
    block = jpeg(nn.Identity(), quality=75)
    assert not is_differentiable(block) and not is_randomized(block)
    for shape in [(4, 1, 8, 8), (3, 3, 13, 10), (2, 2, 16, 9)]:
        x = torch.rand(shape, generator=torch.Generator().manual_seed(1))
        y = block(x)
        assert y.shape == x.shape and y.dtype == x.dtype
        assert y.min() >= 0 and y.max() <= 1
        assert torch.allclose(y * 255, torch.round(y * 255), atol=1e-4)  # decoded to 8-bit pixels


def test_dct_is_orthonormal_and_tables_follow_libjpeg_scaling():
    d = dct_matrix()
    assert torch.allclose(d @ d.T, torch.eye(8), atol=1e-6)
    assert quantization_table(50)[0, 0] == 16 and quantization_table(50, chroma=True)[0, 0] == 17
    assert quantization_table(100).max() == 1 and quantization_table(1).max() == 255
    assert (quantization_table(30) >= quantization_table(80)).all()


def test_error_falls_with_quality_and_recompression_changes_little():
    x = _digits_like()
    errors = []
    for quality in (10, 30, 50, 75, 95):
        block = JPEG(nn.Identity(), quality)
        once = block.transform(x)
        twice = block.transform(once)
        errors.append((once - x).abs().mean().item())
        assert (twice - once).abs().mean() < 0.5 * (once - x).abs().mean() + 1e-3  # near-idempotent
    assert errors == sorted(errors, reverse=True)
    assert errors[-1] < 0.01


def test_matches_libjpeg_up_to_its_integer_dct():
    image_module = pytest.importorskip("PIL.Image")
    x = torch.round(_digits_like(16, seed=3) * 255) / 255
    ours = JPEG(nn.Identity(), 75).transform(x)
    theirs = []
    for image in x:
        buffer = io.BytesIO()
        image_module.fromarray((image[0].numpy() * 255).round().astype(np.uint8)).save(buffer, format="JPEG", quality=75)
        buffer.seek(0)
        theirs.append(np.asarray(image_module.open(buffer)).astype(np.float32) / 255)
    difference = (ours[:, 0] - torch.from_numpy(np.stack(theirs))).abs()
    assert difference.mean() < 2 / 255


def test_raw_gradient_is_zero():
    x = _digits_like(4).requires_grad_(True)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    jpeg(model)(x).sum().backward()
    assert x.grad is not None and x.grad.abs().max() == 0


@pytest.mark.parametrize("quality", [0, 101, 7.5, True, "75"])
def test_bad_quality(quality):
    with pytest.raises(RobenchError, match="quality must be an integer from 1 to 100"):
        jpeg(nn.Identity(), quality=quality)
