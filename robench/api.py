"""The one obvious call from Python: ``robench.evaluate(model, x, y, ...)``.

The command line names everything (a registered model or ``module:callable``, a data set), so a run
can be resumed or shipped to Ray workers. From a notebook a user has a model object and tensors
instead; they go straight to the same runner as objects (local executor, same verification, same
tables), the way ``foolbox`` attacks take ``(model, inputs, criterion)`` and AutoAttack takes
``(model, x, y)``. Nothing is registered, and nothing of the call outlives it.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from robench.assemble import Evaluation
from robench.data import Dataset, validate_arrays
from robench.errors import RobenchError
from robench.progress import Progress
from robench.runner import evaluate_config
from robench.spec import EvalConfig

#: the names a call's results give its model object and arrays
MODEL_NAME, DATA_NAME = "python-model", "python-data"


def interactive() -> bool:
    """A REPL, a notebook kernel, or stderr on a terminal: where a silent minute looks like a hang."""
    import sys

    return hasattr(sys, "ps1") or bool(sys.flags.interactive) or "ipykernel" in sys.modules or sys.stderr.isatty()


def _numpy(array: Tensor | np.ndarray, what: str) -> np.ndarray:
    if isinstance(array, Tensor):
        array = array.detach().cpu()
        # numpy has no bfloat16 (nor float8): widen such inputs to float32, exactly
        return (array.float() if array.is_floating_point() and array.dtype not in (torch.float16, torch.float32, torch.float64)
                else array).numpy()
    if isinstance(array, np.ndarray):
        return array
    raise RobenchError(f"{what} must be a torch.Tensor or a numpy array, got {type(array).__name__}")


def _names(value: object, what: str) -> tuple[str, ...]:
    """A card name or path, or a sequence of them (a lone string is one name, never its letters)."""
    if isinstance(value, (str, Path)):
        return (str(value),)
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, (str, Path)) for v in value):
        return tuple(str(v) for v in value)
    raise RobenchError(f"{what} must be a card name or path, or a non-empty list of them, got {value!r}")


def _numbers(value: object, what: str) -> tuple[float, ...]:
    """One number or a sequence of numbers, each finite (bools are not numbers)."""
    items = (value,) if isinstance(value, (int, float)) and not isinstance(value, bool) else value
    try:
        numbers = tuple(items)  # type: ignore[arg-type]
    except TypeError:
        numbers = ()
    if not numbers and items != () or any(isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v)
                                          for v in numbers):
        raise RobenchError(f"{what} must be a finite number or a sequence of them, got {value!r}")
    return tuple(float(v) for v in numbers)


def _check_arguments(*, defenses: object, suite: object, norm: object, epsilons: object, seed: object,
                     normalize: object, out: object) -> tuple[tuple[str, ...], str, tuple[float, ...], tuple | None]:
    """Every argument of :func:`evaluate` checked before any work, each refusal one RobenchError
    naming the argument (the API is what notebooks call: no TypeError from deep inside)."""
    names = _names(defenses, "defenses")
    (suite_name,) = _names(suite, "suite")
    if not isinstance(norm, str):
        raise RobenchError(f"norm must be 'linf' or 'l2', got {norm!r}")
    eps = _numbers(epsilons, "epsilons")
    if any(e <= 0 for e in eps):
        raise RobenchError(f"epsilons must be > 0, got {epsilons!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise RobenchError(f"seed must be an integer, got {seed!r}")
    norm_pair = None
    if normalize is not None:
        if not isinstance(normalize, (list, tuple)) or len(normalize) != 2:
            raise RobenchError(f"normalize must be (mean, std), each a number or one per channel, got {normalize!r}")
        mean, std = _numbers(normalize[0], "normalize's mean"), _numbers(normalize[1], "normalize's std")
        if len(mean) != len(std) or not mean or any(v <= 0 for v in std):
            raise RobenchError(f"normalize needs as many means as stds and stds > 0, got {normalize!r}")
        norm_pair = (mean, std)
    if out is not None:
        if not isinstance(out, (str, Path)):
            raise RobenchError(f"out must be a folder path, got {out!r}")
        if Path(out).exists() and not Path(out).is_dir():
            raise RobenchError(f"out={str(out)!r} is a file, not a folder; choose another out")
    return names, suite_name, eps, norm_pair


#: said once per process (a notebook calls evaluate many times)
_SPIN_WARNED = False

SPIN_WAIT_MESSAGE = (
    "torch was imported before robench, so OpenMP's idle threads spin-wait (OMP_WAIT_POLICY was not "
    "PASSIVE when torch loaded) and on a busy machine this call may run several times slower; "
    "import robench before torch, or set OMP_WAIT_POLICY=PASSIVE before Python starts, or call "
    "torch.set_num_threads(1)"
)


def spin_wait_warning() -> str | None:
    """The warning :func:`evaluate` gives when idle OpenMP threads spin (torch imported before
    robench, no ``OMP_WAIT_POLICY`` set, more than one thread); None otherwise. Whether threads
    spin depends only on the import order, so the user sees it at once rather than as a slow run."""
    import robench

    if robench.SPIN_WAIT and torch.get_num_threads() > 1:
        return SPIN_WAIT_MESSAGE
    return None


def _warn_once_if_spinning() -> None:
    global _SPIN_WARNED
    message = spin_wait_warning()
    if message and not _SPIN_WARNED:
        import warnings

        _SPIN_WARNED = True
        warnings.warn(message, RuntimeWarning, stacklevel=3)


def evaluate(
    model: nn.Module,
    x: Tensor | np.ndarray,
    y: Tensor | np.ndarray,
    *,
    defenses: Sequence[str] = ("none",),
    suite: str = "quick",
    norm: str = "linf",
    epsilons: Sequence[float] = (),
    seed: int = 0,
    device: str = "auto",
    max_batch: int | None = None,
    diagnostics: bool = True,
    train: tuple[Tensor | np.ndarray, Tensor | np.ndarray] | None = None,
    out: str | Path | None = None,
    normalize: tuple[Sequence[float], Sequence[float]] | None = None,
    progress: bool | None = None,
) -> Evaluation:
    """Attack ``model`` on the examples ``x`` (N, C, H, W in [0, 1], or uint8) with labels ``y``.

    Every defense (card names or paths) wraps ``model``; every attack of ``suite`` runs at every
    epsilon; verified worst case and intervals come back as ``Evaluation`` (``.results``,
    ``.examples``, ``.diagnostics`` are pandas frames). Defenses that train a model of their own
    (e.g. ``adv-trained``) need ``train=(x_train, y_train)``. ``out`` writes the usual run
    directory (results.csv, ..., report.html). ``normalize=(mean, std)`` (per channel) wraps a
    model that expects normalized inputs; the threat model stays in pixel space. ``progress``
    prints progress in model queries to stderr (a bar on a terminal, a line every 30 s otherwise);
    by default only in interactive use (a REPL, a notebook or a terminal). ``model`` is left as it
    was (robench writes no flag onto it; its train/eval modes are restored), except that it stays on
    ``device``.
    """
    _warn_once_if_spinning()
    defenses, suite, epsilons, normalize = _check_arguments(
        defenses=defenses, suite=suite, norm=norm, epsilons=epsilons, seed=seed, normalize=normalize, out=out)
    if not isinstance(model, nn.Module):
        raise RobenchError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    x_test, y_test = validate_arrays("examples", _numpy(x, "x"), _numpy(y, "y"))
    if len(x_test) == 0:
        raise RobenchError("no examples: x and y are empty")
    if train is not None:
        x_train, y_train = validate_arrays("train", _numpy(train[0], "train x"), _numpy(train[1], "train y"))
    else:
        x_train, y_train = x_test[:0], y_test[:0]
    num_classes = int(max(y_test.max(), y_train.max() if len(y_train) else 0)) + 1
    data = Dataset(DATA_NAME, torch.from_numpy(x_train), torch.from_numpy(y_train), torch.from_numpy(x_test),
                   torch.from_numpy(y_test), num_classes=num_classes)
    config = EvalConfig(dataset=DATA_NAME, model=MODEL_NAME, defenses=tuple(defenses), suite=suite, norm=norm,
                        epsilons=tuple(float(e) for e in epsilons), n_examples=len(x_test), seed=seed, device=device,
                        max_batch=max_batch, diagnostics=diagnostics,
                        normalize=None if normalize is None else (tuple(map(float, normalize[0])), tuple(map(float, normalize[1]))))
    shown = Progress(enabled=interactive() if progress is None else bool(progress))
    modes = [(module, module.training) for module in model.modules()]
    try:
        evaluation = evaluate_config(config, model=model, data=data, on_unit=shown.update, on_plan=shown.start)
    finally:
        shown.close()
        for module, training in modes:  # attacked in eval mode; handed back in the mode it came in
            module.training = training
    if out is not None:
        from robench.output import prepare_out_dir, write_evaluation

        write_evaluation(evaluation, prepare_out_dir(out))
    return evaluation
