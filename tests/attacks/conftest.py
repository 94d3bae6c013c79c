"""Fixtures shared by the attack tests."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn


@pytest.fixture(scope="module")
def digits_mlp():
    """A small MLP trained for a second on scikit-learn's digits (full-batch Adam, seeded)."""
    from robench.data import load_digits

    data = load_digits()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    generator = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.1)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(100):
        optimizer.zero_grad()
        F.cross_entropy(model(data.x_train), data.y_train).backward()
        optimizer.step()
    model.eval()
    torch.set_num_threads(threads)
    x, y = data.x_test[:120], data.y_test[:120]
    keep = model(x).argmax(1) == y
    return model, x[keep], y[keep]
