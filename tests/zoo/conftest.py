"""Zoo tests train tiny models: one thread avoids oversubscribing a shared 2-core machine."""
from __future__ import annotations

import pytest
import torch

from robench.data import Dataset, load_digits


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def digits() -> Dataset:
    return load_digits()


@pytest.fixture(scope="session")
def tiny_digits(digits: Dataset) -> Dataset:
    """200 training and 100 test digits: enough for properties, fast to train on."""
    return Dataset("tiny-digits", digits.x_train[:200], digits.y_train[:200], digits.x_test[:100], digits.y_test[:100], 10)
