"""What an evaluation is, by name: the configuration ``plan.json`` stores and a resume compares.

Names only (a registered model or ``module:callable``, a data set name or path, card names or
paths), so a configuration can be stored, compared, and shipped to Ray workers that rebuild the
same objects from it. ``robench.resolve`` turns it into objects.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

import torch

from robench.errors import RobenchError


@dataclass(frozen=True)
class EvalConfig:
    """Everything that determines an evaluation's numbers (and nothing that does not)."""

    dataset: str = "digits"
    model: str = "cnn"
    defenses: tuple[str, ...] = ()  # empty: every registered defense card that fits the data
    suite: str = "quick"
    norm: str = "linf"
    #: empty: the data set's standard epsilon for the norm (digits: L-inf 0.1, L2 1.0; mnist: 0.3, 2.0)
    epsilons: tuple[float, ...] = ()
    n_examples: int = 100
    seed: int = 0
    device: str = "auto"
    max_batch: int | None = None
    #: examples per work unit; results do not depend on it (randomized defenses: for a fixed value)
    shard_size: int = 256
    #: run the gradient-masking probes (robench.diagnostics) for every (defense, epsilon)
    diagnostics: bool = True
    #: per-channel (mean, std) the model expects its inputs normalized by, applied inside the target
    normalize: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    #: absolute folders holding defenses/ and attacks/ cards, looked up before robench's own
    #: (``--cards``, ``$ROBENCH_CARDS``): carried here, so a Ray worker finds what the caller found
    card_dirs: tuple[str, ...] = ()


def config_dict(config: EvalConfig) -> dict[str, Any]:
    """The JSON form of an EvalConfig (tuples become lists), as plan.json and run.json store it."""
    return json.loads(json.dumps(asdict(config), default=str))


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA when present), ``cpu``, ``cuda`` or ``cuda:N``, refused when not available."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise RobenchError(f"unknown device {name!r}; valid choices: auto, cpu, cuda")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RobenchError(f"--device {name} was asked for but no CUDA device is available; use --device auto or cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise RobenchError(f"bad device {name!r}; write cuda or cuda:N") from None
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise RobenchError(f"--device {name}: there are only {torch.cuda.device_count()} CUDA device(s); use cuda:0")
    return device
