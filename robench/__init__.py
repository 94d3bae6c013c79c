"""robench: adversarial-robustness evaluation that weak attacks cannot fool."""
__version__ = "0.1.0"


def evaluate(*args, **kwargs):  # noqa: ANN002, ANN003 - the signature lives in robench.api.evaluate
    """``robench.evaluate(model, x, y, defenses=..., suite=..., epsilons=...)``: see ``robench.api.evaluate``."""
    from robench.api import evaluate as _evaluate

    return _evaluate(*args, **kwargs)
