"""Defense blocks: ``factory(model, **params) -> nn.Module`` registered by name.

A block returns a module that sets ``differentiable`` and ``randomized`` (read into the target's
tags by ``robench.tags``; see ``robench.target``)
and, where it is not differentiable, ``bpda`` (a ``Preprocessed`` block's differentiable stand-in
for its transform, identity by default) or ``bpda_forward`` (a stand-in for the whole forward
pass): what BPDA (``robench.attacks.adaptive``) backpropagates through.
"""
from robench.defenses import preprocessing  # noqa: F401
from robench.defenses import jpeg, noise, resize_pad, robust_training, saturation, thermometer  # noqa: F401
from robench.defenses import purify  # noqa: F401,E402  (PixelDefend-style purification; a colleague's module)
from robench.defenses import sequence_purify  # noqa: F401,E402  (WaveNet / Parallel WaveNet purifiers for sequences)

import importlib as _importlib  # noqa: E402
import pkgutil as _pkgutil  # noqa: E402

# every module of this package registers its factories on import: a new defense is a file here
# and a card, nothing else
for _module in _pkgutil.iter_modules(__path__):
    _importlib.import_module(f"{__name__}.{_module.name}")
