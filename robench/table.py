"""Plain-text summary table for the terminal (formatting happens only here and in reports)."""
from __future__ import annotations

import pandas as pd

from robench.schema import WORST_CASE


#: marks an attack's cell when it was given fewer examples than were clean-correct (a cascade)
PARTIAL = "*"
#: marks a certifier's cell: certified accuracy, a lower bound
CERTIFIED = ">="


def given_fewer(cell: pd.Series) -> bool:
    """True if an attack's results row was given fewer examples than were clean-correct: in a
    cascade it saw only what earlier attacks left standing, so its number is not that attack alone."""
    return "attacked" in cell.index and pd.notna(cell["attacked"]) and \
        int(cell["attacked"]) < int(round(cell["clean_accuracy"] * cell["n_examples"]))


def summary_table(results: pd.DataFrame) -> str:
    """Per (defense, epsilon): clean accuracy, robust accuracy per attack, worst case with its CI.

    In a cascade an attack sees only what earlier attacks left standing; its cell is marked, and a
    footnote says so, so that the number is not read as that attack alone on every example.
    """
    attacks = [a for a in results["attack"].unique() if a != WORST_CASE]
    partial = certifiers = False
    rows = []
    for (defense, epsilon), group in results.groupby(["defense", "epsilon"], sort=False):
        by_attack = group.set_index("attack")
        worst = by_attack.loc[WORST_CASE]
        row = {"defense": defense, "eps": f"{epsilon:g}", "clean": f"{worst['clean_accuracy']:.3f}"}
        for attack in attacks:
            if attack not in by_attack.index:
                row[attack] = "-"
                continue
            cell = by_attack.loc[attack]
            if "certified_accuracy" in cell.index and pd.notna(cell["certified_accuracy"]):
                row[attack] = f"{CERTIFIED}{cell['certified_accuracy']:.3f}"  # a certifier: a lower bound
                certifiers = True
                continue
            fewer = given_fewer(cell)
            partial |= fewer
            row[attack] = f"{cell['robust_accuracy']:.3f}" + (PARTIAL if fewer else "")
        row["worst-case"] = f"{worst['robust_accuracy']:.3f}"
        if "certified_accuracy" in worst.index and pd.notna(worst["certified_accuracy"]):
            row["certified"] = f"{worst['certified_accuracy']:.3f}"
        row["95% CI"] = f"[{worst['robust_accuracy_low']:.3f}, {worst['robust_accuracy_high']:.3f}]"
        row["risk"] = f"{worst['adversarial_risk']:.3f}"
        row["n"] = str(int(worst["n_examples"]))
        rows.append(row)
    table = pd.DataFrame(rows).to_string(index=False)
    if certifiers:
        table += (f"\n{CERTIFIED}: certified accuracy, a lower bound on the true robust accuracy (the worst case is the "
                  "upper bound); certified = any certifier of the suite")
    if partial:
        table += (f"\n{PARTIAL} cascade: the attack was given only the examples earlier attacks left standing "
                  "(results.csv: attacked); the worst case is over the whole suite")
    return table
