"""robench: adversarial-robustness evaluation that weak attacks cannot fool."""
__version__ = "0.1.0"
