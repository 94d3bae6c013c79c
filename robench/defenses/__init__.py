"""Defense blocks: ``factory(model, **params) -> nn.Module`` registered by name.

A block returns a module that sets ``differentiable`` and ``randomized`` (see ``robench.target``)
and, where it is not differentiable, ``bpda``: the differentiable stand-in that BPDA uses for its
backward pass (identity by default).
"""
from robench.defenses import preprocessing  # noqa: F401
