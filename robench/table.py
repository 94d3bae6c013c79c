"""Plain-text summary table for the terminal (formatting happens only here and in reports)."""
from __future__ import annotations

import pandas as pd

from robench.schema import WORST_CASE


def summary_table(results: pd.DataFrame) -> str:
    """Per (defense, epsilon): clean accuracy, robust accuracy per attack, worst case with its CI."""
    attacks = [a for a in results["attack"].unique() if a != WORST_CASE]
    rows = []
    for (defense, epsilon), group in results.groupby(["defense", "epsilon"], sort=False):
        by_attack = group.set_index("attack")
        worst = by_attack.loc[WORST_CASE]
        row = {"defense": defense, "eps": f"{epsilon:g}", "clean": f"{worst['clean_accuracy']:.3f}"}
        for attack in attacks:
            row[attack] = f"{by_attack.loc[attack, 'robust_accuracy']:.3f}" if attack in by_attack.index else "-"
        row["worst-case"] = f"{worst['robust_accuracy']:.3f}"
        row["95% CI"] = f"[{worst['robust_accuracy_low']:.3f}, {worst['robust_accuracy_high']:.3f}]"
        row["risk"] = f"{worst['adversarial_risk']:.3f}"
        row["n"] = str(int(worst["n_examples"]))
        rows.append(row)
    return pd.DataFrame(rows).to_string(index=False)
