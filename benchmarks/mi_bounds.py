"""MI bounds against the ground truth on correlated Gaussians (Poole et al. 2019, Fig. 2).

For each bound, one separable critic is trained on a staircase of true MI values (I = 2, 4, 6, 8, 10
nats, x and y in R^20, batch 64); after each stage it is evaluated on fresh batches. The table gives
mean and standard deviation of the estimates; the optimal critic log p(y|x)/p(y) is shown beside it,
so a reader sees which gap comes from the bound (InfoNCE's log K cap, NWJ's variance) and which from
training. Writes mi_bounds.csv and mi_bounds.png.

    python benchmarks/mi_bounds.py --steps 300 --out /tmp/mi
"""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import pandas as pd

from robench.zoo import bounds

MI_VALUES = (2.0, 4.0, 6.0, 8.0, 10.0)


def run(*, steps: int, batch_size: int, eval_batches: int, seed: int) -> pd.DataFrame:
    rows = []
    for name in bounds.BOUND_NAMES:
        critic = None
        for stage, mi in enumerate(MI_VALUES):
            critic = bounds.train_gaussian_critic(name, mi, steps=steps, batch_size=batch_size, seed=seed + stage,
                                                  critic=critic, lr=5e-4)
            trained = bounds.gaussian_estimates(name, critic, mi, batches=eval_batches, batch_size=batch_size, seed=1000 + stage)
            optimal = bounds.gaussian_estimates(name, None, mi, batches=eval_batches, batch_size=batch_size, seed=1000 + stage)
            rows.append({"bound": name, "true_mi": mi, "trained_mean": trained.mean().item(), "trained_std": trained.std().item(),
                         "optimal_mean": optimal.mean().item(), "optimal_std": optimal.std().item()})
    return pd.DataFrame(rows)


def plot(table: pd.DataFrame, path: Path, batch_size: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(table["bound"]))
    fig, axes = plt.subplots(1, len(names), figsize=(3 * len(names), 3), sharey=True)
    for ax, name in zip(axes, names):
        part = table[table["bound"] == name]
        ax.plot(part["true_mi"], part["true_mi"], "k-", lw=1, label="true MI")
        ax.axhline(math.log(batch_size), color="grey", ls=":", lw=1, label="log K")
        ax.errorbar(part["true_mi"], part["trained_mean"], yerr=part["trained_std"], fmt="o-", ms=3, label="trained critic")
        ax.errorbar(part["true_mi"], part["optimal_mean"], yerr=part["optimal_std"], fmt="s--", ms=3, alpha=0.6, label="optimal critic")
        ax.set_title(name)
        ax.set_xlabel("true MI (nats)")
        ax.set_ylim(-2, 14)
    axes[0].set_ylabel("estimate (nats)")
    axes[-1].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=300, help="training steps per MI stage (the paper: 4000)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--eval-batches", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out"))
    args = parser.parse_args()
    start = time.perf_counter()
    table = run(steps=args.steps, batch_size=args.batch_size, eval_batches=args.eval_batches, seed=args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out / "mi_bounds.csv", index=False)
    plot(table, args.out / "mi_bounds.png", args.batch_size)
    wide = table.pivot(index="bound", columns="true_mi", values="trained_mean").loc[list(bounds.BOUND_NAMES)]
    spread = table.pivot(index="bound", columns="true_mi", values="trained_std").loc[list(bounds.BOUND_NAMES)]
    cells = wide.map(lambda v: f"{v:6.2f}") + " ± " + spread.map(lambda v: f"{v:.2f}")
    print(f"trained critics, estimate ± std over {args.eval_batches} batches of {args.batch_size} (nats); columns: true MI")
    print(cells.to_string())
    optimal = table.pivot(index="bound", columns="true_mi", values="optimal_mean").loc[list(bounds.BOUND_NAMES)]
    print("\noptimal critic (log density ratio), mean estimate:")
    print(optimal.round(2).to_string())
    print(f"\n{time.perf_counter() - start:.0f}s; wrote {args.out / 'mi_bounds.csv'} and {args.out / 'mi_bounds.png'}")


if __name__ == "__main__":
    main()
