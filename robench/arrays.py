"""Array plumbing for data sets: one memory layout, and a cache of prepared arrays.

Kept apart from ``robench.data`` (which says what each data set is) because both are about how
arrays are stored, not what they hold.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

log = logging.getLogger(__name__)

_SPLITS = ("x_train", "y_train", "x_test", "y_test")


def canonical_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= max(size, 1)
    return tuple(reversed(strides))


def canonical_layout(t: Tensor) -> Tensor:
    """``t`` with row-major strides, including on its size-1 dimensions.

    Torch calls a tensor contiguous whatever the stride of a size-1 dimension, but convolutions do
    not ignore it: a 1-channel image batch made by ``x[:, None]`` has strides (64, 1, 8, 1), which
    reads as channels-last, and runs another kernel than the same values loaded from a file,
    (64, 64, 8, 1). The last float bits differ, and training amplifies them: a run on freshly
    prepared digits and one on the cached copy gave different margins. Every data set is laid out
    one way, so a number never depends on where its tensors came from."""
    if tuple(t.stride()) == canonical_strides(tuple(t.shape)):
        return t
    out = torch.empty(t.shape, dtype=t.dtype, device=t.device)
    out.copy_(t)
    return out


def _version(package: str) -> str:
    """An installed distribution's version ("" if absent), without importing it."""
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return ""


#: bump when a built-in data set's preparation changes, so cached arrays are made anew
ARRAYS_VERSION = 1


def _cached_arrays(name: str, key: dict[str, object], make: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """A built-in data set's split arrays from ``$ROBENCH_CACHE/data`` (or ``make()``, then cached).

    Preparing them imports scikit-learn (its split) and reads the source files, about as long as
    importing torch; every run, every Ray worker and every CLI call would pay it. The key holds the
    settings and the source packages' versions, so a new version makes the arrays anew; an
    unreadable file is remade, and a cache that cannot be written only costs the time."""
    import hashlib
    import io
    import json
    import os

    from robench.io import atomic_write_bytes

    digest = hashlib.blake2b(json.dumps({"name": name, "v": ARRAYS_VERSION, **key}, sort_keys=True, default=str).encode(),
                             digest_size=8).hexdigest()
    path = Path(os.environ.get("ROBENCH_CACHE", Path.home() / ".cache" / "robench")).expanduser() / "data" / f"{name}-{digest}.npz"
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as archive:
                return {split_name: archive[split_name] for split_name in _SPLITS}
        except Exception as exc:  # a truncated or foreign file: make it anew
            log.warning("cached data %s is unreadable (%s); making it anew", path, exc)
    arrays = make()
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    try:
        atomic_write_bytes(path, buffer.getvalue())
    except OSError as exc:
        log.warning("could not cache data set %s at %s (%s); continuing without it", name, path, exc)
    return arrays
