"""``robench zoo``: list the zoo's models (cached or not, with their clean accuracy) and train them.

Thin click commands; the lead wires them in with ``main.add_command(zoo)``. Progress bars come from
the training loops' progress hook (``robench.zoo.encoders.progress_callback``), so library code
never prints.
"""
from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import click

from robench.console import friendly_errors
from robench.errors import RobenchError

if TYPE_CHECKING:
    from robench.data import Dataset

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ZooRow:
    """One line of ``robench zoo list``: a zoo model (or the model a defense trains for itself), its
    role, where its weights are (``cached`` in the user's cache, ``shipped`` with robench, or
    ``not trained``) and their stored metadata (None when not trained)."""

    name: str
    role: str
    status: str
    meta: dict[str, Any] | None


def _look(factory: Callable[[], object], name: str) -> tuple[str, dict[str, Any] | None] | None:
    """(status, metadata) of what ``factory()`` would load, asked without training (peek); None
    where the factory refuses the data."""
    from robench.zoo.cache import NotCached, peek, watch

    with peek(), watch() as loaded:
        try:
            factory()
        except NotCached:
            return "not trained", None
        except RobenchError as exc:  # fits the kind but not this data (e.g. mnist-cnn on 8x8 digits)
            log.debug("zoo list: %s skipped (%s)", name, exc)
            return None
    # its own file; a factory that caches under another name: the last file it loaded
    mine = [entry for entry in loaded if entry.name == name] or loaded[-1:]
    if not mine:  # nothing cached: it needs no training
        return "cached", {}
    return ("shipped" if mine[-1].source == "shipped" else "cached"), mine[-1].meta


def zoo_status(data: Dataset, *, seed: int = 0) -> list[ZooRow]:
    """A row for every registered zoo model that fits ``data``, with the settings its factory caches
    under by default, then for every defense card that trains a model of its own (role
    ``defense``, with the card's parameters). Asked of the factories themselves
    (``robench.zoo.cache.peek``), so nothing trains and no cache key is copied here."""
    from robench.cards import all_defense_cards
    from robench.registry import defenses, models
    from robench.target import input_kind, supports_input

    kind = input_kind(data.input_shape)
    rows: list[ZooRow] = []
    for entry in models.entries():
        if not supports_input(entry.inputs, kind):
            continue
        found = _look(lambda: entry.factory(data, seed=seed), entry.name)
        if found is not None:
            rows.append(ZooRow(entry.name, entry.extra.get("role", "classifier"), *found))
    for card in all_defense_cards():
        defense = defenses.entry(card.factory)
        if not defense.extra.get("own_model") or not supports_input(defense.inputs, kind):
            continue
        params = dict(card.params)
        if "seed" in inspect.signature(defense.factory).parameters:
            params["seed"] = seed
        found = _look(lambda: defense.factory(None, data=data, **params), card.name)
        if found is not None:
            rows.append(ZooRow(card.name, "defense", *found))
    return rows


_METRICS = (("clean_test_accuracy", "clean acc {:.4f}"), ("test_bits_per_dim", "{:.3f} bits/dim"),
            ("final_bound_nats", "bound {:.2f} nats"), ("test_reconstruction_mse", "recon mse {:.4f}"),
            ("test_kl_bits", "code {:.1f} bits/image"))


def describe_meta(meta: dict[str, Any]) -> str:
    """The headline figure of a trained model's metadata."""
    parts = [fmt.format(meta[key]) for key, fmt in _METRICS if key in meta]
    if "train_seconds" in meta:
        parts.append(f"{meta['train_seconds']:.0f}s to train")
    return ", ".join(parts) or "-"


@click.group("zoo")
def zoo() -> None:
    """The model zoo: classifiers, MI-bound encoders, VQ-VAE, ACN, PixelCNN, the sequence models and their probes."""


@zoo.command("list")
@click.option("--dataset", default="digits", show_default=True, help="Data set the models are trained on.")
@click.option("--seed", default=0, show_default=True, type=int, help="Training seed.")
@friendly_errors
def list_models(dataset: str, seed: int) -> None:
    """Show every zoo model that fits the data set (and the models the defenses train for themselves),
    whether it is available (cached, or shipped with robench) or not trained yet, and its clean test
    accuracy (or other headline figure). Nothing is trained."""
    from robench.data import load_dataset

    data = load_dataset(dataset)
    rows = [(row.name, row.role, row.status, describe_meta(row.meta) if row.meta is not None else "-")
            for row in zoo_status(data, seed=seed)]
    widths = [max(len(r[i]) for r in rows + [("model", "role", "status", "figures")]) for i in range(3)]
    click.echo(f"{'model':<{widths[0]}}  {'role':<{widths[1]}}  {'status':<{widths[2]}}  figures")
    for name, role, status, figures in rows:
        click.echo(f"{name:<{widths[0]}}  {role:<{widths[1]}}  {status:<{widths[2]}}  {figures}")


@zoo.command("train")
@click.argument("name")
@click.option("--dataset", default="digits", show_default=True, help="Data set to train on.")
@click.option("--seed", default=0, show_default=True, type=int, help="Training seed (part of the cache key).")
@friendly_errors
def train(name: str, dataset: str, seed: int) -> None:
    """Train NAME (and the encoder it needs) from code now, with progress bars, into the cache: the
    weights shipped with robench are not used (this reproduces them). A model already in the cache
    is only loaded."""
    import time

    from tqdm import tqdm

    from robench.data import load_dataset
    from robench.registry import models
    from robench.zoo.cache import from_code, watch
    from robench.zoo.encoders import progress_callback

    factory = models.get(name)  # an unknown name: one line and exit 2 (friendly_errors), before any data is loaded
    data = load_dataset(dataset)
    bars: dict[str, tqdm] = {}

    def on_step(model: str, done: int, total: int) -> None:
        if model not in bars:
            bars[model] = tqdm(total=total, desc=f"training {model}", unit="step", leave=True)
        bars[model].update(done - bars[model].n)

    start = time.perf_counter()
    try:
        with progress_callback(on_step), from_code(), watch() as loaded:
            module = factory(data, seed=seed)
    finally:
        for bar in bars.values():
            bar.close()
    seconds = time.perf_counter() - start
    meta = getattr(module, "robench_meta", {})
    trained = any(entry.source == "trained" for entry in loaded)
    state = f"trained in {seconds:.1f}s" if trained else f"loaded from the cache in {seconds:.1f}s"
    click.echo(f"{name}: {state}; {describe_meta(meta)}")
