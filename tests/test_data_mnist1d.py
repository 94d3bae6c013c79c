"""MNIST-1D (robench/data.py ``mnist1d``): generated locally, fixed, in [0, 1], never downloaded."""
import random
import socket

import numpy as np
import pytest
import torch

from robench.data import MNIST1D_RANGE, load_dataset

pytest.importorskip("mnist1d")


@pytest.fixture
def offline(monkeypatch):
    """Any network use fails the test: sockets cannot connect and requests cannot send."""

    def refuse(*args, **kwargs):
        raise AssertionError("MNIST-1D tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    import requests

    monkeypatch.setattr(requests.Session, "request", refuse)
    monkeypatch.setattr(requests, "get", refuse)


def test_mnist1d_generates_offline_with_shape_range_classes(offline, tmp_path, monkeypatch):
    monkeypatch.setenv("ROBENCH_CACHE", str(tmp_path))  # an empty cache: it must generate, not load
    numpy_state, python_state = np.random.get_state()[1].copy(), random.getstate()
    data = load_dataset("mnist1d")
    assert (np.random.get_state()[1] == numpy_state).all() and random.getstate() == python_state, \
        "the caller's global RNGs are untouched by make_dataset's set_seed"
    assert data.x_train.shape == (4000, 1, 40) and data.x_test.shape == (1000, 1, 40)
    assert data.x_train.dtype == torch.float32 and data.y_test.dtype == torch.int64
    assert data.num_classes == 10 and sorted(data.y_test.unique().tolist()) == list(range(10))
    for x in (data.x_train, data.x_test):
        assert 0.0 < x.min() and x.max() < 1.0, "the fixed map keeps every value strictly inside [0, 1]: no clipping"
    assert str(MNIST1D_RANGE[1]).rstrip("0").rstrip(".") in data.description
    assert data.default_epsilon("linf") < data.default_epsilon("l2")
    assert list((tmp_path / "data").glob("mnist1d-*.npz")), "the generated arrays are cached"


def test_mnist1d_is_deterministic_and_the_cache_returns_the_same_data(offline, tmp_path, monkeypatch):
    monkeypatch.setenv("ROBENCH_CACHE", str(tmp_path))
    first = load_dataset("mnist1d")  # generates
    cached = load_dataset("mnist1d")  # loads the cache
    monkeypatch.setenv("ROBENCH_CACHE", str(tmp_path / "other"))
    again = load_dataset("mnist1d", seed=5)  # generates again, elsewhere: the package's seed is fixed
    assert first.fingerprint == cached.fingerprint == again.fingerprint


def test_mnist1d_map_is_the_documented_affine_of_the_package_output(offline, tmp_path, monkeypatch):
    from mnist1d.data import get_dataset_args, make_dataset

    monkeypatch.setenv("ROBENCH_CACHE", str(tmp_path))
    raw = make_dataset(get_dataset_args())
    lo, hi = MNIST1D_RANGE
    data = load_dataset("mnist1d")
    expected = torch.from_numpy(((raw["x_test"] - lo) / (hi - lo)).astype(np.float32))[:, None]
    assert torch.equal(data.x_test, expected)
    assert torch.equal(data.y_train, torch.from_numpy(raw["y"]).long())


def test_a_corrupt_mnist1d_cache_is_regenerated(tmp_path, monkeypatch):
    monkeypatch.setenv("ROBENCH_CACHE", str(tmp_path))
    good = load_dataset("mnist1d")
    (path,) = (tmp_path / "data").glob("mnist1d-*.npz")
    path.write_bytes(b"not an npz")
    assert load_dataset("mnist1d").fingerprint == good.fingerprint
