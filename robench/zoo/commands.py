"""``robench zoo``: list the zoo's models (cached or not, with their clean accuracy) and train them.

Thin click commands; the lead wires them in with ``main.add_command(zoo)``. Progress bars come from
the training loops' progress hook (``robench.zoo.encoders.progress_callback``), so library code
never prints.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import click

from robench.console import friendly_errors
from robench.errors import RobenchError

if TYPE_CHECKING:
    from robench.data import Dataset

log = logging.getLogger(__name__)


def zoo_status(data: Dataset, *, seed: int = 0) -> list[tuple[str, str, dict[str, Any] | None]]:
    """(name, role, stored metadata or None if not trained) for every registered zoo model that fits
    ``data``, with the settings its factory caches under by default. Asked of the factories
    themselves (``robench.zoo.cache.peek``), so nothing trains and no cache key is copied here."""
    from robench.registry import models
    from robench.target import input_kind, supports_input
    from robench.zoo.cache import NotCached, peek

    kind = input_kind(data.input_shape)
    rows: list[tuple[str, str, dict[str, Any] | None]] = []
    for entry in models.entries():
        if not supports_input(entry.inputs, kind):
            continue
        with peek() as seen:
            try:
                entry.factory(data, seed=seed)
            except NotCached:
                rows.append((entry.name, entry.extra.get("role", "classifier"), None))
                continue
            except RobenchError as exc:  # fits the kind but not this data (e.g. mnist-cnn on 8x8 digits)
                log.debug("zoo list: %s skipped (%s)", entry.name, exc)
                continue
        # its own file's metadata; a factory that caches under another name: the last file it loaded
        meta = seen.get(entry.name) or (list(seen.values())[-1] if seen else {})
        rows.append((entry.name, entry.extra.get("role", "classifier"), meta))
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
    """Show every zoo model that fits the data set, whether it is cached, and its clean test accuracy
    (or other headline figure). Nothing is trained."""
    from robench.data import load_dataset

    data = load_dataset(dataset)
    rows = [(name, role, "cached" if meta is not None else "not trained", describe_meta(meta) if meta is not None else "-")
            for name, role, meta in zoo_status(data, seed=seed)]
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
    """Train NAME (and the encoder it needs) now, with progress bars; a cached model is only loaded."""
    import time

    from tqdm import tqdm

    from robench.data import load_dataset
    from robench.registry import models
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
        with progress_callback(on_step):
            module = factory(data, seed=seed)
    finally:
        for bar in bars.values():
            bar.close()
    seconds = time.perf_counter() - start
    meta = getattr(module, "robench_meta", {})
    state = f"trained in {seconds:.1f}s" if bars else f"loaded from the cache in {seconds:.1f}s"
    click.echo(f"{name}: {state}; {describe_meta(meta)}")
