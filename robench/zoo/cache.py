"""Train-once model cache: ``$ROBENCH_CACHE`` (default ``~/.cache/robench``).

A cached file is keyed by the model's name, its configuration, its code version and the data's
fingerprint, so changing any of them trains anew instead of loading stale weights. Files are
written atomically and loaded with ``weights_only=True`` (a cache directory is not trusted to
hold only our own pickles); a corrupted file is reported, deleted and retrained.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robench.io import atomic_write_bytes

log = logging.getLogger(__name__)


def cache_dir() -> Path:
    return Path(os.environ.get("ROBENCH_CACHE", Path.home() / ".cache" / "robench")).expanduser()


class NotCached(Exception):
    """Raised by :func:`cached_model` inside :func:`peek` where it would have to train."""


#: inside peek(): the metadata of every model loaded, by name; None: train what is missing
_PEEK: ContextVar[dict[str, dict[str, Any]] | None] = ContextVar("robench_zoo_peek", default=None)


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
    path = cache_dir() / f"{name}-{cache_key(name, config)}.pt"
    peeking = _PEEK.get()
    if peeking is not None and not path.exists():
        raise NotCached(name)
    module = build()
    if path.exists():
        try:
            stored = torch.load(path, map_location="cpu", weights_only=True)
            module.load_state_dict(stored["state_dict"])
            module.robench_meta = dict(stored.get("meta", {}))
            if peeking is not None:
                peeking[name] = module.robench_meta
            return module.eval()
        except Exception as exc:  # truncated file, foreign pickle, shape mismatch
            if peeking is not None:
                raise NotCached(name) from None  # a look never deletes: the next real use retrains it
            log.warning("cached model %s is unreadable (%s); retraining", path, exc)
            path.unlink(missing_ok=True)
            module = build()
    log.info("training %s (cached at %s)", name, path)
    meta = train(module)
    module.eval()
    module.robench_meta = dict(meta)
    import io

    buffer = io.BytesIO()
    torch.save({"state_dict": module.state_dict(), "meta": meta}, buffer)
    try:
        atomic_write_bytes(path, buffer.getvalue())
    except OSError as exc:
        log.warning("could not write the model cache %s (%s); continuing without it", path, exc)
    return module
