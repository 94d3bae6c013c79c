"""Certifiers: the other side of the bracket (certified <= true robust accuracy <= attacked).

Each certifier takes a target, examples and a threat model and returns a :class:`Certification`:
per example ``certified`` / ``counterexample`` / ``unknown`` (codes in ``status``), the proposed
counterexamples (to be checked by ``robench.verify`` like any attack's proposal) and the time spent.

=============  ======================================================  ===========  =====
method         what                                                    norms        sound
=============  ======================================================  ===========  =====
``ibp``        interval bound propagation (Gowal et al. 2018)          linf, l2     yes
``crown``      backward linear relaxation (Zhang et al. 2018)          linf, l2     yes
``milp``       exact mixed-integer verification (Tjeng et al. 2019)    linf         yes
``smoothing``  randomized smoothing, CERTIFY (Cohen et al. 2019)       l2           no
=============  ======================================================  ===========  =====

Each registers itself in ``robench.registry.certifiers`` (as attacks do), so a plugin or a
``file.py:Class`` reference adds one without touching robench. ``make_certifier("crown",
intermediate="ibp")`` builds one from a name and keyword parameters (as a suite card's
``[[certify]]`` table gives them), with one-line errors for unknown names and parameters. Layers
read by ibp/crown/milp: see ``robench.certify.layers``.
"""
from __future__ import annotations

import inspect
from typing import Any

from robench.certify.base import (
    CERTIFIED, COUNTEREXAMPLE, STATUS_NAMES, UNKNOWN, Certification, Certifier,
)
from robench.certify.crown import CROWN, crown_logit_bounds, crown_margin_bounds
from robench.certify.ibp import IBP, ibp_logit_bounds, ibp_margin_bounds
from robench.certify.layers import SUPPORTED
from robench.certify.milp import MILP
from robench.certify.smoothing import Smoothing
from robench.errors import RobenchError, did_you_mean
from robench.registry import certifiers


def certifier_params(method: str) -> dict[str, Any]:
    """The parameters a method takes, with their defaults."""
    cls = certifiers.get(method)
    init = cls.__init__ if inspect.isclass(cls) else cls
    return {name: p.default for name, p in inspect.signature(init).parameters.items()
            if p.kind is inspect.Parameter.KEYWORD_ONLY}


def make_certifier(method: str, **params: Any) -> Certifier:
    """A certifier from its registered name (or ``module:Class`` reference) and keyword parameters
    (unknown ones refused in one line)."""
    factory = certifiers.get(method)
    known = certifier_params(method)
    for name in params:
        if name not in known:
            raise RobenchError(f"certifier {method!r} has no parameter {name!r}{did_you_mean(name, tuple(known))}")
    certifier = factory(**params)
    if not callable(getattr(certifier, "certify", None)):
        raise RobenchError(f"certifier {method!r} built a {type(certifier).__name__}, which has no certify method; "
                           "subclass robench.certify.Certifier")
    return certifier


__all__ = [
    "CERTIFIED", "COUNTEREXAMPLE", "UNKNOWN", "STATUS_NAMES", "SUPPORTED", "Certification", "Certifier",
    "IBP", "CROWN", "MILP", "Smoothing", "make_certifier", "certifier_params",
    "ibp_margin_bounds", "ibp_logit_bounds", "crown_margin_bounds", "crown_logit_bounds",
]


def _import_every_module() -> None:
    """Every module of this package registers its certifiers on import: a new certifier is a file
    here and nothing else (as attacks are)."""
    import importlib
    import pkgutil

    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")


_import_every_module()
