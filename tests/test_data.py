"""Data sets (robench/data.py): digits, user npz files, and their validation."""
import numpy as np
import pytest
import torch

from robench.data import load_dataset, load_digits
from robench.errors import RobenchError


def test_digits_is_scaled_split_and_fixed():
    data = load_digits()
    assert data.x_train.shape[1:] == (1, 8, 8) and data.x_test.shape[1:] == (1, 8, 8)
    assert len(data.x_train) + len(data.x_test) == 1797
    assert data.x_train.min() >= 0 and data.x_train.max() <= 1 and data.x_test.max() == 1
    assert data.num_classes == 10
    assert torch.equal(load_digits().x_test, data.x_test)
    assert data.fingerprint == load_digits().fingerprint


@pytest.mark.parametrize("layout", ["nhw", "nhwc", "nchw"])
def test_npz_uint8_and_layouts(tmp_path, layout):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(40, 6, 6, 3), dtype=np.uint8)
    if layout == "nhw":
        x = x[..., 0]
    elif layout == "nchw":
        x = np.transpose(x, (0, 3, 1, 2))
    path = tmp_path / "mine.npz"
    np.savez(path, x=x, y=rng.integers(0, 3, size=40))
    data = load_dataset(str(path))
    assert data.x_test.shape[1:] == ((1, 6, 6) if layout == "nhw" else (3, 6, 6))
    assert 0 <= data.x_test.min() and data.x_test.max() <= 1
    assert data.num_classes == 3


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"x": np.zeros((10, 4, 4), np.uint8), "y": np.zeros(9, np.int64)}, "must match"),
        ({"x": np.full((10, 4, 4), 2.0), "y": np.zeros(10, np.int64)}, r"must lie in \[0, 1\]"),
        ({"x": np.zeros((10, 4, 4), np.int32), "y": np.zeros(10, np.int64)}, "uint8 or float"),
        ({"x": np.zeros((10, 4, 4), np.uint8), "y": np.zeros(10, np.float32)}, "integer array of labels"),
        ({"x": np.zeros((10, 4, 4), np.uint8)}, "lacks array"),
        ({"x": np.zeros((10, 4), np.uint8), "y": np.zeros(10, np.int64)}, "must have shape"),
    ],
)
def test_bad_npz_files(tmp_path, arrays, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(RobenchError, match=message):
        load_dataset(str(path))


def test_missing_npz_and_unknown_dataset():
    with pytest.raises(RobenchError, match="does not exist"):
        load_dataset("nowhere/mnist.npz")
    with pytest.raises(RobenchError, match="unknown dataset 'digitz'.*did you mean 'digits'"):
        load_dataset("digitz")
