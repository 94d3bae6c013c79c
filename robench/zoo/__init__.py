"""The model zoo: supervised baselines and representation-learning models used as targets."""
from robench.zoo import cnn  # noqa: F401  (registers models)
