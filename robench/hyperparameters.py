"""What attacks and certifiers share: hyperparameters that a ``repr`` shows, so a report says
exactly what ran (DESIGN: keyword-only, with the paper's defaults)."""
from __future__ import annotations

from typing import Any


class Hyperparameters:
    """``params()`` are the public attributes set in ``__init__``; ``repr`` lists them."""

    def params(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"
