"""The model zoo: supervised baselines and representation-learning models used as targets.

The modules below register their models when imported (``robench.registry.load_builtins`` does
that); importing this package itself imports nothing heavy, so ``robench --help`` and
``robench zoo --help`` need no torch. The PixelDefend defense built on the zoo's PixelCNN lives in
``robench.defenses.purify``.
"""

#: the modules that register zoo models
MODEL_MODULES = (
    "robench.zoo.cnn", "robench.zoo.mlp", "robench.zoo.encoders", "robench.zoo.pixelcnn", "robench.zoo.probes",
    "robench.zoo.vqvae", "robench.zoo.wavenet", "robench.zoo.sequence", "robench.zoo.cpc_seq", "robench.zoo.acn",
)
