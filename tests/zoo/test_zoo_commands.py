"""``robench zoo``: list shows every model and its cache state; train reports errors in one line."""
from __future__ import annotations

from click.testing import CliRunner

from robench.zoo.commands import describe_meta, zoo, zoo_entries


def test_list_shows_every_zoo_model_untrained_in_a_fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ROBENCH_CACHE", str(tmp_path))
    result = CliRunner().invoke(zoo, ["list"])
    assert result.exit_code == 0, result.output
    names = [line.split()[0] for line in result.output.splitlines()[1:]]
    for name in ("cnn", "infonce-views", "infonce-views-probe", "nwj-probe", "js-probe", "interpolated-probe",
                 "wpc-probe", "vqvae", "vqvae-probe", "pixelcnn", "acn", "acn-probe", "acn-knn"):
        assert name in names
    assert "cached" not in result.output.replace("not trained", "")


def test_entries_have_distinct_cache_files(digits):
    paths = [entry.path for entry in zoo_entries(digits)]
    assert len(set(paths)) == len(paths)


def test_describe_meta_picks_the_headline_figures():
    assert describe_meta({"clean_test_accuracy": 0.9712, "train_seconds": 12.3}) == "clean acc 0.9712, 12s to train"
    assert describe_meta({"test_bits_per_dim": 1.5}) == "1.500 bits/dim"
    assert describe_meta({}) == "-"


def test_train_rejects_unknown_models():
    result = CliRunner().invoke(zoo, ["train", "cpc-prob"])
    assert result.exit_code != 0
    assert "unknown model" in result.output and "cpc-probe" in result.output
