"""Train-once model cache: ``$ROBENCH_CACHE`` (default ``~/.cache/robench``), backed by the
weights that ship with robench (``robench/zoo/weights/``).

A cached file is keyed by the model's name, its configuration, its code version and the data's
fingerprint, so changing any of them trains anew instead of loading stale weights. Files are
written atomically and loaded with ``weights_only=True`` (a cache directory is not trusted to
hold only our own pickles); a corrupted file is reported, deleted and retrained.

Where a model's file is: the user's cache first, then the shipped file of the same name (listed in
``weights/manifest.json`` with its sha256, checked on every load: an altered or missing file is
not used, one warning, and the model trains as if none shipped), then training. The shipped files
are what ``robench/zoo/shipped.py`` builds from code into an empty cache, so a result is the same
whichever of the three a model came from; :func:`from_code` skips them (``robench zoo train``).
"""
from __future__ import annotations

import functools
import hashlib
import io
import json
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from robench.io import atomic_write_bytes

log = logging.getLogger(__name__)


#: the weights that ship inside the package: ``<name>-<cache key>.pt`` files and the manifest
SHIPPED_DIR = Path(__file__).resolve().parent / "weights"
MANIFEST = "manifest.json"


def cache_dir() -> Path:
    return Path(os.environ.get("ROBENCH_CACHE", Path.home() / ".cache" / "robench")).expanduser()


def cache_file(name: str, config: dict[str, Any]) -> str:
    """The file name a model is cached under, in the user's cache and among the shipped weights."""
    return f"{name}-{cache_key(name, config)}.pt"


class NotCached(Exception):
    """Raised by :func:`cached_model` inside :func:`peek` where it would have to train; its
    arguments are the model's name and the file it looked for."""


Source = Literal["cache", "shipped", "trained"]


@dataclass(frozen=True)
class Loaded:
    """One model :func:`cached_model` returned: its name, file name, where its weights came from
    (the user's ``cache``, the ``shipped`` weights, or ``trained`` just now) and its metadata."""

    name: str
    file: str
    source: Source
    meta: dict[str, Any] = field(default_factory=dict, compare=False)


#: inside peek(): the metadata of every model loaded, by name; None: train what is missing
_PEEK: ContextVar[dict[str, dict[str, Any]] | None] = ContextVar("robench_zoo_peek", default=None)
#: the lists of every open watch() block
_WATCHES: ContextVar[tuple[list[Loaded], ...]] = ContextVar("robench_zoo_watches", default=())
#: False inside from_code(): the shipped weights are not looked at
_USE_SHIPPED: ContextVar[bool] = ContextVar("robench_zoo_use_shipped", default=True)
#: shipped files already reported as unusable (one warning per file and process)
_REJECTED: set[str] = set()


@contextmanager
def watch() -> Iterator[list[Loaded]]:
    """Yields a list that collects, in order, every model :func:`cached_model` returns inside the
    block (nested factories included): which file each is, and where it came from."""
    seen: list[Loaded] = []
    token = _WATCHES.set((*_WATCHES.get(), seen))
    try:
        yield seen
    finally:
        _WATCHES.reset(token)


@contextmanager
def from_code() -> Iterator[None]:
    """Inside this block a model that is not in the user's cache is trained, never taken from the
    shipped weights: ``robench zoo train`` reproduces a model from code this way, and the script
    that ships the weights (``scripts/ship-weights.py``) builds them this way."""
    token = _USE_SHIPPED.set(False)
    try:
        yield
    finally:
        _USE_SHIPPED.reset(token)


@functools.lru_cache(maxsize=1)
def shipped_manifest() -> dict[str, dict[str, Any]]:
    """The shipped weights' manifest: file name -> its entry (``sha256``, ``bytes``, the ``recipe``
    that rebuilds it, its ``meta``). Empty when robench ships none or the manifest is unreadable."""
    path = SHIPPED_DIR / MANIFEST
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))["models"]
        return {entry["file"]: entry for entry in entries}
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("the shipped weights' manifest %s is unreadable (%s); no shipped weights are used", path, exc)
        return {}


def shipped_bytes(file: str) -> bytes | None:
    """The shipped weights ``file`` if the manifest lists it and the file's sha256 is the manifest's;
    else None (a listed file that is missing or altered: one warning per process, then it trains)."""
    entry = shipped_manifest().get(file)
    if entry is None:
        return None
    path = SHIPPED_DIR / file
    try:
        data = path.read_bytes()
    except OSError as exc:
        reason = f"unreadable ({exc.strerror or exc})"
    else:
        if hashlib.sha256(data).hexdigest() == entry.get("sha256"):
            return data
        reason = "its sha256 is not the manifest's"
    if file not in _REJECTED:
        _REJECTED.add(file)
        log.warning("shipped weights %s not used: %s; the model is trained instead", path, reason)
    return None


def _record(loaded: Loaded) -> None:
    for seen in _WATCHES.get():
        seen.append(loaded)


@contextmanager
def peek() -> Iterator[dict[str, dict[str, Any]]]:
    """Call zoo factories without training: inside this block :func:`cached_model` loads what is
    cached and raises :class:`NotCached` where it would train. Yields the stored metadata of each
    model loaded, by name. ``robench zoo list`` asks every registered factory this way, so the list
    is the registry's and a model's cache key is computed by its own factory, never copied."""
    seen: dict[str, dict[str, Any]] = {}
    token = _PEEK.set(seen)
    try:
        yield seen
    finally:
        _PEEK.reset(token)


def cache_key(name: str, config: dict[str, Any]) -> str:
    text = json.dumps({"name": name, **config}, sort_keys=True, default=str)
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def cached_model(
    name: str,
    config: dict[str, Any],
    build: Callable[[], nn.Module],
    train: Callable[[nn.Module], dict[str, Any]],
) -> nn.Module:
    """Build the module; load its weights from the cache, or train it and store them.

    ``train`` trains the module in place and returns metadata (e.g. clean accuracy) kept beside
    the weights. The returned module is in eval mode with ``module.robench_meta`` set.
    """
    file = cache_file(name, config)
    path = cache_dir() / file
    peeking = _PEEK.get()
    for source in ("cache", "shipped"):
        if source == "cache":
            if not path.exists():
                continue
            stored_at: Path | io.BytesIO = path
        else:
            shipped = shipped_bytes(file) if _USE_SHIPPED.get() else None
            if shipped is None:
                continue
            stored_at = io.BytesIO(shipped)
        module = build()
        try:
            stored = torch.load(stored_at, map_location="cpu", weights_only=True)
            module.load_state_dict(stored["state_dict"])
            module.robench_meta = dict(stored.get("meta", {}))
        except Exception as exc:  # truncated file, foreign pickle, shape mismatch
            if peeking is not None:
                continue  # a look never deletes: the next real use retrains it (or takes the shipped file)
            if source == "cache":
                log.warning("cached model %s is unreadable (%s); retraining", path, exc)
                path.unlink(missing_ok=True)
            else:
                log.warning("shipped weights %s do not load (%s); the model is trained instead", SHIPPED_DIR / file, exc)
            continue
        if peeking is not None:
            peeking[name] = module.robench_meta
        _record(Loaded(name, file, source, module.robench_meta))
        return module.eval()
    if peeking is not None:
        raise NotCached(name, file)
    module = build()
    log.info("training %s (cached at %s)", name, path)
    meta = train(module)
    module.eval()
    module.robench_meta = dict(meta)
    _record(Loaded(name, file, "trained", module.robench_meta))
    buffer = io.BytesIO()
    torch.save({"state_dict": module.state_dict(), "meta": meta}, buffer)
    try:
        atomic_write_bytes(path, buffer.getvalue())
    except OSError as exc:
        log.warning("could not write the model cache %s (%s); continuing without it", path, exc)
    return module
