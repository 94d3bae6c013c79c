"""robench: adversarial-robustness evaluation that weak attacks cannot fool."""
import os as _os

__version__ = "0.1.0"

# torch's OpenMP threads spin-wait for work by default; on a shared machine they burn the cores
# other processes need (measured at load 6 on 2 cores: a run 2-3x faster, SPSA 7x, with PASSIVE).
# OpenMP reads this once, when torch loads it: it takes effect when robench is imported before
# torch (the command line always is), and never overrides a value the user set.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def evaluate(*args, **kwargs):  # noqa: ANN002, ANN003 - the signature lives in robench.api.evaluate
    """``robench.evaluate(model, x, y, defenses=..., suite=..., epsilons=...)``: see ``robench.api.evaluate``."""
    from robench.api import evaluate as _evaluate

    return _evaluate(*args, **kwargs)
