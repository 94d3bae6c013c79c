"""Stand-ins that let old peer libraries import on current torch; used only by the benchmark.

advertorch 0.2.3 imports ``torch.autograd.gradcheck.zero_gradients`` (removed in torch 1.9) and,
in places, ``torchvision.transforms`` (PyPI's torchvision does not load on every CPU build of
torch). Nothing here is imported by robench itself.
"""
from __future__ import annotations

import importlib
import sys
import types


def _zero_gradients(x) -> None:
    """torch < 1.9's helper: zero the .grad of a tensor or of every tensor in an iterable."""
    import torch

    if isinstance(x, torch.Tensor):
        if x.grad is not None:
            x.grad.detach_()
            x.grad.zero_()
    else:
        for item in x:
            _zero_gradients(item)


def install() -> list[str]:
    """Install the shims that are needed; return a note for each one installed."""
    notes = []
    gradcheck = importlib.import_module("torch.autograd.gradcheck")  # the module, not the function
    if not hasattr(gradcheck, "zero_gradients"):
        gradcheck.zero_gradients = _zero_gradients
        notes.append("torch.autograd.gradcheck.zero_gradients (stand-in)")
    try:
        import torchvision.transforms  # noqa: F401
    except Exception:  # noqa: BLE001 - any failure to import means we stub it
        for name in ("torchvision", "torchvision.transforms", "torchvision.datasets"):
            sys.modules.pop(name, None)
        torchvision = types.ModuleType("torchvision")
        transforms = types.ModuleType("torchvision.transforms")
        datasets = types.ModuleType("torchvision.datasets")
        torchvision.transforms, torchvision.datasets = transforms, datasets
        sys.modules.update({"torchvision": torchvision, "torchvision.transforms": transforms, "torchvision.datasets": datasets})
        notes.append("torchvision (empty stub)")
    return notes
