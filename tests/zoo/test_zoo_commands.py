"""``robench zoo``: list shows every model and its cache state; train reports errors in one line.
(The shipped weights' own tests: ``test_shipped.py``.)"""
from __future__ import annotations

import numpy as np
from click.testing import CliRunner

from robench.data import dataset_from_arrays
from robench.zoo.commands import describe_meta, zoo, zoo_status


def test_list_shows_every_zoo_model_untrained_or_shipped_in_a_fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ROBENCH_CACHE", str(tmp_path))
    result = CliRunner().invoke(zoo, ["list"])
    assert result.exit_code == 0, result.output
    names = [line.split()[0] for line in result.output.splitlines()[1:]]
    for name in ("cnn", "infonce-views", "infonce-views-probe", "nwj-probe", "js-probe", "interpolated-probe",
                 "wpc-probe", "vqvae", "vqvae-probe", "pixelcnn", "acn", "acn-probe", "acn-knn"):
        assert name in names
    assert "cached" not in result.output
    assert {line.split()[2] for line in result.output.splitlines()[1:]} <= {"not", "shipped"}


def test_status_trains_nothing_and_shows_what_is_cached(digits, tmp_path, monkeypatch):
    """The list comes from the registry's factories (peek): a cached or shipped model shows its
    stored figures, the rest are "not trained", and asking creates no file."""
    monkeypatch.setenv("ROBENCH_CACHE", str(tmp_path))
    from robench.zoo.cache import from_code
    from robench.zoo.mlp import mlp

    with from_code():
        mlp(digits, epochs=30)  # the factory's defaults, trained into the user cache: what the list looks for
    before = sorted(p.name for p in tmp_path.glob("*.pt"))
    status = {row.name: row for row in zoo_status(digits)}
    assert sorted(p.name for p in tmp_path.glob("*.pt")) == before, "listing must not train"
    assert status["mlp"].status == "cached" and 0.5 < status["mlp"].meta["clean_test_accuracy"] <= 1.0
    assert status["cnn"].status == "shipped" and status["cnn"].meta["clean_test_accuracy"] > 0.95
    assert (status["pixelcnn"].role, status["pixelcnn"].status, status["pixelcnn"].meta) == ("density", "not trained", None)
    assert (status["adv-trained"].role, status["adv-trained"].status) == ("defense", "shipped")  # a defense's own model
    assert "cnn1d" not in status and "mnist-cnn" not in status  # sequences only; 28 x 28 only


def test_status_lists_the_sequence_models_for_sequence_data(tmp_path, monkeypatch):
    monkeypatch.setenv("ROBENCH_CACHE", str(tmp_path))
    rng = np.random.default_rng(0)
    data = dataset_from_arrays("sig", rng.random((60, 1, 40), dtype=np.float32), rng.integers(0, 3, 60), seed=0)
    names = [row.name for row in zoo_status(data) if row.meta is None]
    for name in ("cnn1d", "bytenet", "wavernn", "wavernn-sparse", "cpc-seq", "cpc-seq-probe", "wavenet",
                 "parallel-wavenet", "mlp"):
        assert name in names
    assert "cnn" not in names and "pixelcnn" not in names
    assert not list(tmp_path.rglob("*.pt"))


def test_describe_meta_picks_the_headline_figures():
    assert describe_meta({"clean_test_accuracy": 0.9712, "train_seconds": 12.3}) == "clean acc 0.9712, 12s to train"
    assert describe_meta({"test_bits_per_dim": 1.5}) == "1.500 bits/dim"
    assert describe_meta({}) == "-"


def test_train_rejects_unknown_models():
    result = CliRunner().invoke(zoo, ["train", "cpc-prob"])
    assert result.exit_code != 0
    assert "unknown model" in result.output and "cpc-probe" in result.output
