"""Data sets as tensors in [lo, hi]: images (N, C, H, W) or sequences (N, C, L); nothing is downloaded.

``digits`` is scikit-learn's bundled 8x8 handwritten digits (1,797 images), the embedded default.
``npz:PATH`` (or a path ending in .npz) loads a user's own file holding ``x`` and ``y``, so MNIST or
CIFAR-10 can be brought in without robench fetching anything. ``synthetic`` makes random images of
any shape for tests and benchmarks.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from robench.errors import RobenchError
from robench.registry import datasets


@dataclass(frozen=True)
class Dataset:
    """A train/test split of inputs in ``bounds`` (images N x C x H x W or sequences N x C x L), integer labels."""

    name: str
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    num_classes: int
    bounds: tuple[float, float] = (0.0, 1.0)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_test.shape[1:])

    @property
    def fingerprint(self) -> str:
        """Identifies the data's content, for cache keys and run configurations."""
        import hashlib

        digest = hashlib.blake2b(digest_size=8)
        for t in (self.x_train, self.y_train, self.x_test, self.y_test):
            digest.update(t.detach().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()


def split(x: np.ndarray, y: np.ndarray, *, test_fraction: float, seed: int) -> tuple[np.ndarray, ...]:
    """A fixed, seeded, stratified train/test split."""
    from sklearn.model_selection import train_test_split

    stratify = y if len(np.unique(y)) < len(y) * test_fraction else None
    return tuple(train_test_split(x, y, test_size=test_fraction, random_state=seed, stratify=stratify))


def _to_tensors(name: str, x: np.ndarray, y: np.ndarray, num_classes: int, test_fraction: float, seed: int) -> Dataset:
    x_train, x_test, y_train, y_test = split(x, y, test_fraction=test_fraction, seed=seed)
    return Dataset(
        name=name,
        x_train=torch.from_numpy(np.ascontiguousarray(x_train, dtype=np.float32)),
        y_train=torch.from_numpy(np.asarray(y_train, dtype=np.int64)),
        x_test=torch.from_numpy(np.ascontiguousarray(x_test, dtype=np.float32)),
        y_test=torch.from_numpy(np.asarray(y_test, dtype=np.int64)),
        num_classes=num_classes,
    )


@datasets.register("digits", description="scikit-learn's bundled 8x8 handwritten digits, 1x8x8 in [0, 1]")
def load_digits(*, seed: int = 0, test_fraction: float = 0.3) -> Dataset:
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    x = (bunch.images / 16.0).astype(np.float32)[:, None, :, :]
    return _to_tensors("digits", x, bunch.target.astype(np.int64), 10, test_fraction, seed)


@datasets.register("synthetic", description="random images (for tests and timing); shape via shape=C,H,W")
def load_synthetic(
    *, n: int = 512, shape: tuple[int, ...] = (3, 32, 32), num_classes: int = 10, seed: int = 0
) -> Dataset:
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand((n, *shape), generator=generator)
    y = torch.randint(0, num_classes, (n,), generator=generator)
    return _to_tensors("synthetic", x.numpy(), y.numpy(), num_classes, 0.5, seed)


@datasets.register("npz", description="a local .npz file with arrays x (N,H,W[,C] or N,C,H,W) and y; uint8 or float in [0, 1]")
def load_npz(path: str | Path, *, seed: int = 0, test_fraction: float = 0.3) -> Dataset:
    path = Path(path)
    if not path.is_file():
        raise RobenchError(f"npz file {str(path)!r} does not exist; give the path of a file holding arrays x and y")
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = {"x", "y"} - set(archive.files)
            if missing:
                raise RobenchError(
                    f"npz file {str(path)!r} lacks array(s) {', '.join(sorted(missing))}; it must hold x (images) and y (labels)"
                )
            x, y = archive["x"], archive["y"]
    except RobenchError:
        raise
    except Exception as exc:  # zipfile.BadZipFile, ValueError on object arrays, ...
        raise RobenchError(f"cannot read npz file {str(path)!r} ({exc}); save it with numpy.savez(path, x=..., y=...)") from None
    return dataset_from_arrays(path.stem, x, y, seed=seed, test_fraction=test_fraction)


#: a 3-D array (N, A, B) with A at most this is N sequences of A channels, else N one-channel images
SEQUENCE_MAX_CHANNELS = 4


def validate_arrays(name: str, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate and normalise user arrays: uint8 → /255, float must lie in [0, 1]; images as
    N x C x H x W (from N x H x W, N x H x W x C or N x C x H x W), sequences as N x C x L."""
    if len(x) != len(y):
        raise RobenchError(f"data set {name!r}: x has {len(x)} rows but y has {len(y)}; they must match")
    if not np.issubdtype(y.dtype, np.integer) or y.ndim != 1:
        raise RobenchError(f"data set {name!r}: y must be a 1-D integer array of labels, got {y.dtype} with shape {y.shape}")
    if len(y) and y.min() < 0:
        raise RobenchError(f"data set {name!r}: labels must be >= 0, found {int(y.min())}")
    if x.dtype == np.uint8:
        x = x.astype(np.float32) / 255.0
    elif np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float32)
        if not np.isfinite(x).all():
            raise RobenchError(f"data set {name!r}: x holds NaN or infinite values")
        if len(x) and (x.min() < 0.0 or x.max() > 1.0):
            raise RobenchError(
                f"data set {name!r}: float x must lie in [0, 1], found [{x.min():.3g}, {x.max():.3g}]; rescale it or save uint8"
            )
    else:
        raise RobenchError(f"data set {name!r}: x must be uint8 or float, got {x.dtype}")
    if x.ndim == 3 and x.shape[1] > SEQUENCE_MAX_CHANNELS:
        x = x[:, None]  # (N, H, W): one-channel images
    elif x.ndim == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        x = np.transpose(x, (0, 3, 1, 2))
    elif x.ndim not in (3, 4):
        raise RobenchError(f"data set {name!r}: x must have shape (N, H, W), (N, H, W, C) or (N, C, H, W) for images, "
                           f"or (N, C, L) with C <= {SEQUENCE_MAX_CHANNELS} for sequences; got {x.shape}")
    return np.ascontiguousarray(x, dtype=np.float32), y.astype(np.int64)


def dataset_from_arrays(name: str, x: np.ndarray, y: np.ndarray, *, seed: int = 0, test_fraction: float = 0.3) -> Dataset:
    """Validate user arrays (see ``validate_arrays``) and split them into train and test."""
    if len(x) < 4:
        raise RobenchError(f"data set {name!r} has {len(x)} examples; need at least 4")
    x, y = validate_arrays(name, x, y)
    return _to_tensors(name, x, y, int(y.max()) + 1, test_fraction, seed)


def load_dataset(spec: str, *, seed: int = 0) -> Dataset:
    """Resolve ``--dataset``: a registered name, ``npz:PATH``, or a path ending in ``.npz``."""
    if spec.startswith("npz:"):
        return load_npz(spec[4:], seed=seed)
    if spec.endswith(".npz"):
        return load_npz(spec, seed=seed)
    return datasets.get(spec)(seed=seed)


def select_examples(data: Dataset, n_examples: int | None) -> tuple[Tensor, Tensor, Tensor]:
    """The first ``n_examples`` of the test split with their ids (ids index the test split)."""
    n = len(data.x_test) if n_examples is None else n_examples
    if n < 1:
        raise RobenchError(f"--n-examples must be >= 1, got {n}")
    n = min(n, len(data.x_test))
    ids = torch.arange(n)
    return data.x_test[:n], data.y_test[:n], ids


def n_features(shape: tuple[int, ...]) -> int:
    return math.prod(shape)
