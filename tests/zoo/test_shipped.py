"""The weights that ship with robench: the manifest is true (every file there, its hash, the key its
recipe asks for today), the lookup order is user cache, shipped file, training, an altered file is
not used, and ``robench zoo train`` still reproduces a shipped model from code."""
from __future__ import annotations

import hashlib
import json
import logging

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from robench.zoo import cache
from robench.zoo.cache import MANIFEST, SHIPPED_DIR, NotCached, cached_model, from_code, peek, shipped_manifest, watch
from robench.zoo.shipped import RECIPES, Recipe, files_of

RESHIP = "re-ship the weights: OMP_NUM_THREADS=1 python scripts/ship-weights.py"


def manifest_entries() -> list[dict]:
    return json.loads((SHIPPED_DIR / MANIFEST).read_text(encoding="utf-8"))["models"]


def test_every_listed_file_is_there_with_its_hash_and_nothing_else():
    entries = manifest_entries()
    assert entries, "robench ships weights"
    for entry in entries:
        path = SHIPPED_DIR / entry["file"]
        assert path.is_file(), f"{entry['file']} is listed in the manifest but missing; {RESHIP}"
        data = path.read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"], f"{entry['file']} differs from its manifest hash; {RESHIP}"
        assert len(data) == entry["bytes"]
        assert entry["file"] == f"{entry['name']}-{entry['file'].rsplit('-', 1)[1]}"
    assert sorted(p.name for p in SHIPPED_DIR.glob("*.pt")) == sorted(e["file"] for e in entries), "an unlisted file ships"
    assert sum(e["bytes"] for e in entries) < 8e6, "a few MB at most"


def test_the_manifest_covers_exactly_the_recipes():
    shipped = {tuple(sorted(e["recipe"].items())) for e in manifest_entries()}
    assert shipped == {tuple(sorted(r.as_dict().items())) for r in RECIPES}, f"RECIPES and the manifest differ; {RESHIP}"


@pytest.fixture(scope="module")
def cold_cache(tmp_path_factory):
    """An empty user cache for the module (its data arrays are prepared once)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ROBENCH_CACHE", str(tmp_path_factory.mktemp("cold-cache")))
        yield


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda r: r.label.replace(" ", "-"))
def test_each_recipe_still_asks_for_its_shipped_file(recipe: Recipe, cold_cache):
    """The factory computes the cache key today; a change to a shipped model's configuration, code
    version or data changes it, and the shipped file would silently stop being used."""
    expected = sorted(e["file"] for e in manifest_entries() if e["recipe"] == recipe.as_dict())
    with peek():
        try:
            loaded = files_of(recipe)
        except NotCached as missing:
            name, file = missing.args
            pytest.fail(f"{recipe.label}: its factory now caches {name} as {file}, which does not ship (shipped: "
                        f"{', '.join(expected)}): its configuration, CODE_VERSION or data changed; {RESHIP}")
    assert sorted(entry.file for entry in loaded) == expected
    assert {entry.source for entry in loaded} == {"shipped"}, "a cold cache takes the shipped file"


# ---- the lookup order, on a toy model shipped into a folder of the test's own -----------------------------------------

CONFIG = {"code": 1, "toy": True}


def toy(train_calls: list[int]) -> nn.Module:
    def build() -> nn.Module:
        return nn.Linear(3, 2)

    def train(module: nn.Module) -> dict:
        train_calls.append(1)
        with torch.no_grad():
            module.weight.fill_(0.5)
        return {"clean_test_accuracy": 0.5}

    return cached_model("toy", CONFIG, build, train)


@pytest.fixture
def shipped_toy(tmp_path, monkeypatch):
    """A weights folder that ships a toy model (weight 2.0), and an empty user cache."""
    weights = tmp_path / "weights"
    weights.mkdir()
    file = cache.cache_file("toy", CONFIG)
    module = nn.Linear(3, 2)
    with torch.no_grad():
        module.weight.fill_(2.0)
    torch.save({"state_dict": module.state_dict(), "meta": {"clean_test_accuracy": 0.9}}, weights / file)
    entry = {"file": file, "name": "toy", "recipe": {}, "bytes": (weights / file).stat().st_size, "meta": {},
             "sha256": hashlib.sha256((weights / file).read_bytes()).hexdigest()}
    (weights / MANIFEST).write_text(json.dumps({"models": [entry]}))
    monkeypatch.setattr(cache, "SHIPPED_DIR", weights)
    monkeypatch.setattr(cache, "_REJECTED", set())
    monkeypatch.setenv("ROBENCH_CACHE", str(tmp_path / "user"))
    shipped_manifest.cache_clear()
    yield weights / file
    shipped_manifest.cache_clear()


def test_a_cold_cache_loads_the_shipped_file_and_trains_nothing(shipped_toy, tmp_path):
    calls: list[int] = []
    with watch() as loaded:
        model = toy(calls)
    assert not calls and (model.weight == 2.0).all() and model.robench_meta == {"clean_test_accuracy": 0.9}
    assert [(e.name, e.source) for e in loaded] == [("toy", "shipped")]
    assert not (tmp_path / "user").exists() or not list((tmp_path / "user").glob("*.pt")), "nothing is copied"
    with peek() as seen:
        toy(calls)
    assert seen["toy"] == {"clean_test_accuracy": 0.9} and not calls


def test_the_user_cache_comes_before_the_shipped_file(shipped_toy):
    calls: list[int] = []
    with from_code():  # what `robench zoo train` does: trains into the user cache
        trained = toy(calls)
    assert calls == [1] and (trained.weight == 0.5).all()
    with watch() as loaded:
        again = toy(calls)
    assert calls == [1] and (again.weight == 0.5).all() and loaded[0].source == "cache"


def test_from_code_never_reads_the_shipped_file(shipped_toy):
    calls: list[int] = []
    with from_code(), peek(), pytest.raises(NotCached):
        toy(calls)
    assert not calls


def test_an_altered_shipped_file_is_not_used_one_warning_and_it_trains(shipped_toy, monkeypatch, caplog):
    data = bytearray(shipped_toy.read_bytes())
    data[-30] ^= 0xFF
    shipped_toy.write_bytes(bytes(data))
    calls: list[int] = []
    with caplog.at_level(logging.WARNING, logger="robench.zoo.cache"):
        first = toy(calls)
        monkeypatch.setenv("ROBENCH_CACHE", str(shipped_toy.parent.parent / "other"))
        toy(calls)
    assert calls == [1, 1] and (first.weight == 0.5).all()
    warnings = [r.getMessage() for r in caplog.records if "not used" in r.getMessage()]
    assert len(warnings) == 1 and "sha256" in warnings[0]


def test_a_missing_shipped_file_trains(shipped_toy):
    shipped_toy.unlink()
    calls: list[int] = []
    toy(calls)
    assert calls == [1]


# ---- the commands ------------------------------------------------------------------------------------------------------

def test_zoo_list_shows_the_shipped_models_as_available(tmp_path, monkeypatch):
    from robench.zoo.commands import zoo

    monkeypatch.setenv("ROBENCH_CACHE", str(tmp_path))
    result = CliRunner().invoke(zoo, ["list"])
    assert result.exit_code == 0, result.output
    status = {line.split()[0]: line for line in result.output.splitlines()[1:]}
    for name in ("cnn", "mlp", "ibp-mlp", "adv-trained", "lipschitz", "thermometer-16"):
        assert " shipped " in status[name] and "clean acc" in status[name], status[name]
    assert "not trained" in status["pixelcnn"]
    assert not list(tmp_path.glob("*.pt")), "listing copies nothing"


@pytest.mark.slow
def test_zoo_train_reproduces_the_shipped_cnn_from_code(tmp_path, monkeypatch):
    """``robench zoo train cnn`` in an empty cache trains (it does not take the shipped file) and
    reaches the shipped model's clean accuracy within one point (about 20 s on one core)."""
    from robench.zoo.commands import zoo

    monkeypatch.setenv("ROBENCH_CACHE", str(tmp_path))
    [shipped] = [e for e in manifest_entries() if e["recipe"] == {"dataset": "digits", "model": "cnn"}]
    result = CliRunner().invoke(zoo, ["train", "cnn"])
    assert result.exit_code == 0, result.output
    assert "trained in" in result.output
    [path] = tmp_path.glob("cnn-*.pt")
    assert path.name == shipped["file"]
    accuracy = torch.load(path, weights_only=True)["meta"]["clean_test_accuracy"]
    assert abs(accuracy - shipped["meta"]["clean_test_accuracy"]) <= 0.01
