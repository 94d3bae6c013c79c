"""Attacks: SPSA (gradient-free) and gradient attacks through foolbox; each registers itself."""
from robench.attacks import gradient, spsa  # noqa: F401
from robench.attacks.base import Attack, AttackResult  # noqa: F401
