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


def test_mnist_is_the_real_digits_split_4000_1000_with_its_threat_models():
    from robench.data import load_mnist

    data = load_mnist()
    assert data.x_train.shape == (4000, 1, 28, 28) and data.x_test.shape == (1000, 1, 28, 28)
    assert data.x_test.min() >= 0 and data.x_test.max() <= 1 and data.num_classes == 10
    assert torch.bincount(data.y_test).tolist() == [100] * 10, "stratified: 100 test digits per class"
    assert data.default_epsilon("linf") == 0.3 and data.default_epsilon("l2") == 2.0
    assert torch.equal(load_mnist().x_test, data.x_test), "the split is fixed"


def test_npz_with_its_own_splits_is_used_as_given_in_file_order(tmp_path):
    rng = np.random.default_rng(1)
    x_test = rng.integers(0, 256, size=(7, 5, 5), dtype=np.uint8)
    y_test = np.arange(7) % 3
    path = tmp_path / "given.npz"
    np.savez(path, x_test=x_test, y_test=y_test)
    data = load_dataset(str(path))
    assert len(data.x_test) == 7 and len(data.x_train) == 0, "nothing is split off a given test set"
    assert torch.equal(data.y_test, torch.from_numpy(y_test).long())
    assert torch.allclose(data.x_test[:, 0], torch.from_numpy(x_test).float() / 255)
    np.savez(path, x_test=x_test, y_test=y_test, x_train=x_test, y_train=y_test)
    assert len(load_dataset(str(path)).x_train) == 7


@pytest.mark.parametrize("arrays, message", [
    ({"x_test": np.zeros((4, 3, 3)), "y_test": np.zeros(4, int), "x": np.zeros((4, 3, 3)), "y": np.zeros(4, int)}, "keep one form"),
    ({"x_test": np.zeros((4, 3, 3))}, "without y_test"),
    ({"x_train": np.zeros((4, 3, 3)), "y_train": np.zeros(4, int)}, "no x_test/y_test"),
    ({"x_test": np.float32(1.0), "y_test": np.zeros(4, int)}, "one row per example"),
])
def test_npz_split_mistakes_are_one_line(tmp_path, arrays, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(RobenchError, match=message):
        load_dataset(str(path))


def test_trained_defenses_refuse_a_data_set_without_a_training_split(tmp_path):
    from robench.data import dataset_from_splits
    from robench.defenses.robust_training import adversarial_training

    data = dataset_from_splits("given", np.zeros((4, 1, 8, 8), np.float32), np.arange(4) % 2)
    with pytest.raises(RobenchError, match="training split"):
        adversarial_training(data=data)


def test_digits_arrays_are_cached_and_a_cached_copy_is_the_same_data(tmp_path, monkeypatch):
    """The prepared split is kept under $ROBENCH_CACHE/data, so later runs and Ray workers skip
    scikit-learn; a cached copy gives bit-identical tensors (the same fingerprint, the same model
    cache keys), and an unreadable copy is made anew."""
    monkeypatch.setenv("ROBENCH_CACHE", str(tmp_path))
    fresh = load_dataset("digits")
    (path,) = (tmp_path / "data").glob("digits-*.npz")
    cached = load_dataset("digits")
    assert cached.fingerprint == fresh.fingerprint
    assert torch.equal(cached.x_test, fresh.x_test) and torch.equal(cached.y_train, fresh.y_train)
    assert load_dataset("digits", seed=1).fingerprint != fresh.fingerprint  # the seed is part of the key
    path.write_bytes(b"not an npz")
    assert load_dataset("digits").fingerprint == fresh.fingerprint
    assert path.stat().st_size > 1000  # written again


def test_every_data_set_has_one_memory_layout():
    """x[:, None] gives a 1-channel batch strides that read as channels-last; a convolution then runs
    another kernel and the last float bits differ from the same values loaded from a file. A
    Dataset always holds row-major strides, so a number never depends on where the data came from."""
    from robench.data import Dataset, canonical_strides

    images = torch.from_numpy(np.random.default_rng(0).random((12, 8, 8), dtype=np.float32)[:, None])  # (64, 1, 8, 1)
    assert images.is_contiguous() and images.stride() != canonical_strides(tuple(images.shape))
    labels = torch.arange(12) % 3
    data = Dataset("t", images[:8], labels[:8], images[8:], labels[8:], 3)
    for t in (data.x_train, data.x_test, data.y_train):
        assert t.stride() == canonical_strides(tuple(t.shape))
    assert torch.equal(data.x_test, images[8:])
    assert load_digits().x_test.stride() == canonical_strides(tuple(load_digits().x_test.shape))
