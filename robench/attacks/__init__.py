"""Attacks: SPSA and Square (gradient-free), APGD and gradient attacks through foolbox; each registers itself."""
from robench.attacks import apgd, gradient, spsa, square  # noqa: F401
from robench.attacks.base import Attack, AttackResult  # noqa: F401
