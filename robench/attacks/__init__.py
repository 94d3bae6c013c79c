"""Attacks: SPSA, Square, random search and HopSkipJump (gradient-free), PGD, APGD, FAB-T and MI-FGSM (native), other gradient attacks through foolbox.

Every module of this package is imported here, so an attack registers itself by being a file in
it: adding one edits nothing else.
"""
import importlib
import pkgutil

from robench.attacks.base import Attack, AttackResult  # noqa: F401

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
