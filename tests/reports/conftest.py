"""A synthetic run directory in the output contract of ``robench evaluate --out DIR``, made in milliseconds."""
from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from robench.risk import summarize

ATTACKS = (("pgd", False), ("spsa", True))


def make_run_dir(
    path: Path,
    robust: dict[tuple[str, float], tuple[int, int]],
    *,
    clean: float = 0.9,
    diagnostics: bool = True,
    adversarial: bool = True,
    failed_units: Iterable[dict[str, Any]] = (),
    tolerances: dict[str, float] | None = None,
    suite: str = "tiny",
    seed: int = 0,
    sequence: tuple[int, int] | None = None,
) -> Path:
    """Write results.csv, examples.csv, run.json (+ diagnostics.csv, adversarial.npz).

    ``robust[(defense, epsilon)] = (k, n)``: k of n examples survive every attack. Of the rest,
    the first tenth of n is misclassified clean (up to k's limit), PGD breaks a third and SPSA
    breaks all, so SPSA is the strongest attack and the worst case equals SPSA.

    adversarial.npz holds 6 x 6 grey images, or with ``sequence=(channels, length)`` sequences
    N x C x L (a sine per channel).
    """
    path.mkdir(parents=True, exist_ok=True)
    rows = []
    for (defense, epsilon), (k, n) in robust.items():
        wrong = min(int(round((1 - clean) * n)), n - k)
        for attack, _ in ATTACKS:
            for i in range(n):
                clean_correct = i >= wrong
                broken = (not clean_correct) or (i >= wrong and i < n - k and (attack == "spsa" or (i - wrong) % 3 == 0))
                rows.append({"defense": defense, "model": "toy", "dataset": "synthetic", "norm": "linf",
                             "epsilon": float(epsilon), "attack": attack, "example": i, "label": i % 3,
                             "clean_correct": clean_correct, "broken": broken, "rejected": False,
                             "queries": 10 if attack == "pgd" else 400, "distance": 0.5 * epsilon,
                             "margin": -1.0 if broken else 1.0, "draws": 1, "attacked": clean_correct,
                             "certified": False, "certify_status": "", "seconds": 0.01})
    examples = pd.DataFrame(rows)
    results = summarize(examples)
    results.to_csv(path / "results.csv", index=False)
    examples.drop(columns=["seconds"]).to_csv(path / "examples.csv", index=False)
    defenses = list(dict.fromkeys(d for d, _ in robust))
    run = {
        "config": {"suite": suite, "norm": "linf", "seed": seed, "epsilons": sorted({e for _, e in robust})},
        "seed": seed, "device": "cpu", "executor": "local",
        "dataset": {"name": "synthetic", "fingerprint": "abc123", "input_shape": [1, 6, 6] if sequence is None else list(sequence), "n_test": 100,
                    "n_examples": max(n for _, n in robust.values())},
        "model": {"name": "toy", "meta": {"clean_test_accuracy": 0.91234567}},
        "defenses": [{"name": d, "factory": "none", "params": {"bits": 3}, "paper": "A paper", "description": "",
                      "differentiable": None, "randomized": None, "tolerance": (tolerances or {}).get(d), "source": ""}
                     for d in defenses],
        "suite": {"name": suite, "source": "", "attacks": [
            {"label": a, "attack": a, "repr": f"{a.upper()}(steps=10)", "gradient_free": free} for a, free in ATTACKS]},
        "versions": {"robench": "0.1.0", "torch": "2.x"},
        "timings": {"started": 1_790_000_000.0, "seconds": 12.5, "units": []},
        "rejected_proposals": 0,
        "failed_units": list(failed_units),
    }
    (path / "run.json").write_text(json.dumps(run, indent=2))
    if diagnostics:
        diag = [{"defense": d, "epsilon": e, "check": "gradient_free_beats_gradient", "fired": True,
                 "detail": "spsa broke 7 examples no gradient attack broke"} for d, e in robust]
        diag += [{"defense": d, "epsilon": e, "check": "made_up_check", "fired": False, "detail": "a detail sentence"}
                 for d, e in robust]
        pd.DataFrame(diag).to_csv(path / "diagnostics.csv", index=False)
    if adversarial:
        generator = np.random.default_rng(seed)
        keys = [(d, e) for d, e in robust for _ in range(3)]
        if sequence is None:
            x = generator.uniform(0, 1, size=(len(keys), 1, 6, 6)).astype(np.float32)
        else:
            channels, length = sequence
            phase = generator.uniform(0, 2 * np.pi, size=(len(keys), channels, 1))
            x = (0.5 + 0.4 * np.sin(np.linspace(0, 4 * np.pi, length)[None, None, :] + phase)).astype(np.float32)
        eps = np.array([e for _, e in keys], dtype=np.float32).reshape(-1, *[1] * (x.ndim - 1))
        x_adv = np.clip(x + eps * np.sign(generator.normal(size=x.shape)), 0, 1).astype(np.float32)
        np.savez(path / "adversarial.npz", defense=np.array([d for d, _ in keys]), epsilon=np.array([e for _, e in keys]),
                 attack=np.array(["spsa"] * len(keys)), example=np.array([i % 3 for i in range(len(keys))]), x=x, x_adv=x_adv)
    return path


@pytest.fixture
def run_dir_factory(tmp_path: Path):
    counter = iter(range(1000))

    def factory(robust: dict[tuple[str, float], tuple[int, int]], **options: Any) -> Path:
        return make_run_dir(tmp_path / f"run{next(counter)}", robust, **options)

    return factory
