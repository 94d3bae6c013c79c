"""Attacks: SPSA, Square, random search and HopSkipJump (gradient-free), PGD and APGD (native), other gradient attacks through foolbox; each registers itself."""
from robench.attacks import apgd, gradient, pgd, spsa, square  # noqa: F401
from robench.attacks import fab  # noqa: F401
from robench.attacks import decision, random_search  # noqa: F401
from robench.attacks.base import Attack, AttackResult  # noqa: F401
