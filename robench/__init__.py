"""robench: adversarial-robustness evaluation that weak attacks cannot fool."""
import os as _os
import sys as _sys

__version__ = "0.1.0"

# torch's OpenMP threads spin-wait for work by default; on a shared machine they burn the cores
# other processes need (measured at load 6 on 2 cores: a run 2-3x faster, SPSA 7x, with PASSIVE).
# OpenMP reads this once, when torch loads it: it takes effect when robench is imported before
# torch (the command line always is), and never overrides a value the user set. When torch came
# first (the usual order in a notebook), setting it now changes nothing: robench.api says so.
SPIN_WAIT = "torch" in _sys.modules and "OMP_WAIT_POLICY" not in _os.environ
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def __getattr__(name: str):  # noqa: ANN202 - PEP 562: ``robench.evaluate`` without importing torch at ``import robench``
    if name == "evaluate":
        from robench.api import evaluate

        return evaluate
    raise AttributeError(f"module 'robench' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), "evaluate"])
