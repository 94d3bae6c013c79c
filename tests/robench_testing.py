"""Helpers shared by test modules (a plain module: conftest files of subfolders would shadow it)."""


def write_suite(directory, text: str, name: str = "suite.toml") -> str:
    """Write an attack-suite card for a test and return its path."""
    path = directory / name
    path.write_text(text)
    return str(path)


#: a suite small enough for end-to-end tests: PGD (white-box) and SPSA (gradient-free)
TINY_SUITE = """
name = "tiny"
[[attack]]
attack = "pgd"
[attack.params]
steps = 10
rel_stepsize = 0.25
[[attack]]
attack = "spsa"
[attack.params]
steps = 15
samples = 32
"""
