"""Certifiers: the other side of the bracket (certified <= true robust accuracy <= attacked).

Each certifier takes a target, examples and a threat model and returns a :class:`Certification`:
per example ``certified`` / ``counterexample`` / ``unknown`` (codes in ``status``), the proposed
counterexamples (to be checked by ``robench.verify`` like any attack's proposal) and the time spent.

=============  ======================================================  ===========
method         what                                                    norms
=============  ======================================================  ===========
``ibp``        interval bound propagation (Gowal et al. 2018)          linf, l2
``crown``      backward linear relaxation (Zhang et al. 2018)          linf, l2
``milp``       exact mixed-integer verification (Tjeng et al. 2019)    linf
``smoothing``  randomized smoothing, CERTIFY (Cohen et al. 2019)       l2
=============  ======================================================  ===========

``make_certifier("crown", intermediate="ibp")`` builds one from a name and keyword parameters
(as a suite card's ``[[certify]]`` table would give them), with one-line errors for unknown names
and parameters. Layers read by ibp/crown/milp: see ``robench.certify.layers``.
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

#: method name -> certifier class (keyword-only hyperparameters with defaults)
CERTIFIERS: dict[str, type[Certifier]] = {"ibp": IBP, "crown": CROWN, "milp": MILP, "smoothing": Smoothing}


def certifier_params(method: str) -> dict[str, Any]:
    """The parameters a method takes, with their defaults."""
    cls = _lookup(method)
    return {name: p.default for name, p in inspect.signature(cls.__init__).parameters.items()
            if p.kind is inspect.Parameter.KEYWORD_ONLY}


def _lookup(method: str) -> type[Certifier]:
    if method not in CERTIFIERS:
        raise RobenchError(f"unknown certifier {method!r}{did_you_mean(str(method), tuple(CERTIFIERS))}")
    return CERTIFIERS[method]


def make_certifier(method: str, **params: Any) -> Certifier:
    """A certifier from its method name and keyword parameters (unknown ones refused in one line)."""
    cls = _lookup(method)
    known = certifier_params(method)
    for name in params:
        if name not in known:
            raise RobenchError(f"certifier {method!r} has no parameter {name!r}{did_you_mean(name, tuple(known))}")
    return cls(**params)


__all__ = [
    "CERTIFIERS", "CERTIFIED", "COUNTEREXAMPLE", "UNKNOWN", "STATUS_NAMES", "SUPPORTED", "Certification", "Certifier",
    "IBP", "CROWN", "MILP", "Smoothing", "make_certifier", "certifier_params",
    "ibp_margin_bounds", "ibp_logit_bounds", "crown_margin_bounds", "crown_logit_bounds",
]
