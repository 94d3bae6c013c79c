"""The model zoo: supervised baselines and representation-learning models used as targets.

The PixelDefend defense built on the zoo's PixelCNN lives in ``robench.defenses.purify``.
"""
from robench.zoo import cnn  # noqa: F401  (registers models)
from robench.zoo import encoders, mlp, pixelcnn, probes, vqvae  # noqa: F401  (register models)
