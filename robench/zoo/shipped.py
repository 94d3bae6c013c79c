"""The models whose weights ship inside the package (``robench/zoo/weights/``), and how they are made.

A fresh install then trains nothing for the default run and the README's commands: the digits
``cnn``, ``mlp`` and ``ibp-mlp``, the models of the default defenses that train one of their own
(``adv-trained``, ``lipschitz``, ``thermometer-16``) on digits and on mnist, ``mnist-cnn`` and
mnist1d's ``cnn1d``. Each file keeps the name the cache gives it (``<name>-<cache key>.pt``),
so the factory's own cache key finds it (``robench.zoo.cache.cached_model``), and a change of a
model's configuration, code version or data changes the key and the model trains as before.

The weights are not a second source of truth: :func:`ship` builds every recipe from code
(``robench.zoo.cache.from_code``) into a cache, exactly as a cold run would, and copies what it
produced; ``tests/zoo/test_shipped.py`` checks that every recipe still asks for the shipped file.
Run ``python scripts/ship-weights.py`` after changing a shipped model.
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from robench.zoo.cache import MANIFEST, SHIPPED_DIR, Loaded, cache_dir, from_code, shipped_manifest, watch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Recipe:
    """A registered zoo ``model``, or the model a ``defense`` card trains for itself, on a data set,
    with the factory's default settings (seed 0): what a default run builds."""

    dataset: str
    model: str | None = None
    defense: str | None = None

    def __post_init__(self) -> None:
        if (self.model is None) == (self.defense is None):
            raise ValueError("a recipe names a model or a defense, not both")

    @property
    def label(self) -> str:
        return f"{self.model or 'defense ' + str(self.defense)} on {self.dataset}"

    def as_dict(self) -> dict[str, str]:
        return {key: value for key, value in (("dataset", self.dataset), ("model", self.model), ("defense", self.defense))
                if value is not None}


#: what ships: what the default run (digits, every default defense) and the README's commands build
RECIPES: tuple[Recipe, ...] = (
    Recipe("digits", model="cnn"),
    Recipe("digits", model="mlp"),
    Recipe("digits", model="ibp-mlp"),
    Recipe("digits", defense="adv-trained"),
    Recipe("digits", defense="lipschitz"),
    Recipe("digits", defense="thermometer-16"),
    Recipe("mnist", model="mnist-cnn"),
    Recipe("mnist", defense="adv-trained"),
    Recipe("mnist", defense="lipschitz"),
    Recipe("mnist", defense="thermometer-16"),
    Recipe("mnist1d", model="cnn1d"),
)


def build(recipe: Recipe) -> nn.Module:
    """What a run builds for the recipe: the model's factory on the data set, or the defense card's
    factory with the card's parameters (a defense that trains its own model ignores the one given)."""
    from robench.cards import load_defense_card
    from robench.data import load_dataset
    from robench.registry import defenses, models

    data = load_dataset(recipe.dataset)
    if recipe.model is not None:
        return models.get(recipe.model)(data)
    card = load_defense_card(str(recipe.defense))
    return defenses.get(card.factory)(None, data=data, **dict(card.params))


def files_of(recipe: Recipe) -> list[Loaded]:
    """The cached models that building ``recipe`` returns (loaded or trained), in order."""
    with watch() as loaded:
        build(recipe)
    return loaded


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def ship(recipes: tuple[Recipe, ...] = RECIPES, *, weights: Path = SHIPPED_DIR) -> list[dict[str, Any]]:
    """Build every recipe from code (the user cache, ``$ROBENCH_CACHE``, is used and filled; the
    shipped weights are never read), copy the files into ``weights`` and write its manifest:
    per file its recipe, sha256, size and metadata. Files no recipe produced any more are removed.
    Returns the manifest's entries."""
    entries: dict[str, dict[str, Any]] = {}
    with from_code():
        for recipe in recipes:
            for loaded in files_of(recipe):
                log.info("%s: %s (%s)", recipe.label, loaded.file, "trained" if loaded.source == "trained" else "from the cache")
                entries.setdefault(loaded.file, {"file": loaded.file, "name": loaded.name, "recipe": recipe.as_dict(),
                                                 "meta": loaded.meta})
    weights.mkdir(parents=True, exist_ok=True)
    for file, entry in entries.items():
        target = weights / file
        shutil.copyfile(cache_dir() / file, target)
        entry["sha256"], entry["bytes"] = _sha256(target), target.stat().st_size
    for stale in weights.glob("*.pt"):
        if stale.name not in entries:
            log.info("removing %s: no recipe produces it any more", stale.name)
            stale.unlink()
    ordered = [entries[file] for file in entries]
    manifest = {"about": "weights robench ships: made by scripts/ship-weights.py, which builds robench.zoo.shipped.RECIPES "
                         "from code; each file is checked against its sha256 when loaded",
                "models": [{key: entry[key] for key in ("file", "name", "recipe", "sha256", "bytes", "meta")} for entry in ordered]}
    (weights / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=False) + "\n", encoding="utf-8")
    shipped_manifest.cache_clear()
    return manifest["models"]
