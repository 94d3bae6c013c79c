"""``robench zoo``: list the zoo's models (cached or not, with their clean accuracy) and train them.

Thin click commands; the lead wires them in with ``main.add_command(zoo)``. Progress bars come from
the training loops' progress hook (``robench.zoo.encoders.progress_callback``), so library code
never prints.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from robench.console import friendly_errors
from robench.errors import RobenchError

if TYPE_CHECKING:
    from robench.data import Dataset

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ZooEntry:
    name: str
    role: str  # classifier, encoder or density
    config: dict[str, Any]

    @property
    def path(self) -> Path:
        from robench.zoo.cache import cache_dir, cache_key

        return cache_dir() / f"{self.name}-{cache_key(self.name, self.config)}.pt"


def zoo_entries(data: Dataset, *, seed: int = 0) -> list[ZooEntry]:
    """Every zoo model with the configuration its factory caches under (factories' defaults)."""
    from robench.zoo import acn, cnn, encoders, pixelcnn, probes, vqvae

    entries = [ZooEntry("cnn", "classifier", {"code": cnn.CODE_VERSION, "data": data.fingerprint, "seed": seed, "epochs": 30})]
    for objective in encoders.OBJECTIVES:
        config = encoders.encoder_config(objective, data, seed=seed)
        entries.append(ZooEntry(f"{objective}-probe", "classifier", probes.probe_config(data, seed=seed, encoder_config=config)))
        entries.append(ZooEntry(objective, "encoder", config))
    vq = vqvae.vqvae_config(data, seed=seed)
    entries.append(ZooEntry("vqvae-probe", "classifier", probes.probe_config(data, seed=seed, encoder_config=vq)))
    entries.append(ZooEntry("vqvae", "encoder", vq))
    entries.append(ZooEntry("pixelcnn", "density", pixelcnn.pixelcnn_config(data, seed=seed)))
    ac = acn.acn_config(data, seed=seed)
    entries.append(ZooEntry("acn-probe", "classifier", probes.probe_config(data, seed=seed, encoder_config=ac)))
    entries.append(ZooEntry("acn-knn", "classifier", acn.knn_config(data, seed=seed)))
    entries.append(ZooEntry("acn", "encoder", ac))
    return entries


_METRICS = (("clean_test_accuracy", "clean acc {:.4f}"), ("test_bits_per_dim", "{:.3f} bits/dim"),
            ("final_bound_nats", "bound {:.2f} nats"), ("test_reconstruction_mse", "recon mse {:.4f}"),
            ("test_kl_bits", "code {:.1f} bits/image"))


def describe_meta(meta: dict[str, Any]) -> str:
    """The headline figure of a trained model's metadata."""
    parts = [fmt.format(meta[key]) for key, fmt in _METRICS if key in meta]
    if "train_seconds" in meta:
        parts.append(f"{meta['train_seconds']:.0f}s to train")
    return ", ".join(parts) or "-"


def cached_meta(entry: ZooEntry) -> dict[str, Any] | None:
    """The stored metadata if ``entry`` is in the cache, else None (reads weights_only, never trains)."""
    import torch

    if not entry.path.exists():
        return None
    try:
        return dict(torch.load(entry.path, map_location="cpu", weights_only=True).get("meta", {}))
    except Exception:  # unreadable: cached_model will retrain it
        return None


@click.group("zoo")
def zoo() -> None:
    """The model zoo: MI-bound encoders, VQ-VAE, PixelCNN and their linear-probe classifiers."""


@zoo.command("list")
@click.option("--dataset", default="digits", show_default=True, help="Data set the models are trained on.")
@click.option("--seed", default=0, show_default=True, type=int, help="Training seed.")
def list_models(dataset: str, seed: int) -> None:
    """Show every zoo model, whether it is cached, and its clean test accuracy (or other headline figure)."""
    from robench.data import load_dataset

    try:
        data = load_dataset(dataset)
    except RobenchError as exc:
        raise click.ClickException(str(exc)) from None
    rows = []
    for entry in zoo_entries(data, seed=seed):
        meta = cached_meta(entry)
        rows.append((entry.name, entry.role, "cached" if meta is not None else "not trained",
                     describe_meta(meta) if meta is not None else "-"))
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
