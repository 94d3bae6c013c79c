"""MI bounds against the ground truth on correlated Gaussians (Poole et al. 2019, Sec. 5 and Fig. 2).

The paper's setup, as its reference notebook runs it: x, y in R^20, batch 64, a true MI that steps
through 2, 4, 6, 8, 10 nats; for each bound ONE critic and ONE Adam optimizer at a constant learning
rate of 5e-4 train through the whole staircase. Critics: separable g(x)^T h(y) (g, h: 2 hidden layers
x 256, 32-d embeddings) or concat F([x, y]) (2 x 256); TUBA and the interpolated bound (alpha = 0.01)
also learn a log-baseline a(y) (2 x 512). After each stage the critic is read on fresh batches; the
optimal critic log p(y|x)/p(y) (+1 for NWJ) is read beside it, so a reader sees which gap comes from
the bound (InfoNCE's log K cap, NWJ's variance, JS's 1/e) and which from training. ``js`` and
``js-shifted`` are the same JS-trained critic read as NWJ(f) and NWJ(f + 1).

The paper trains 4,000 steps per stage; ``--steps`` defaults to what fits in about ten minutes on
two shared cores (see benchmarks/RESULTS.md). Writes mi_bounds.csv and mi_bounds.png under --out.

    OMP_NUM_THREADS=2 python benchmarks/mi_bounds.py --out benchmarks/out
"""
from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle OpenMP threads must not spin on a shared machine

import pandas as pd  # noqa: E402
import torch  # noqa: E402

from robench.zoo import bounds  # noqa: E402

MI_VALUES = (2.0, 4.0, 6.0, 8.0, 10.0)
#: trained critics and their read-outs: js-shifted is the JS critic read at f + 1, not a critic of its own
READOUTS = {"infonce": ("infonce",), "nwj": ("nwj",), "tuba": ("tuba",), "dv": ("dv",), "js": ("js", "js-shifted"),
            "interpolated": ("interpolated",)}
ROWS = [name for names in READOUTS.values() for name in names]


def run(*, steps: int, batch_size: int, eval_batches: int, seed: int, kind: str, lr: float) -> pd.DataFrame:
    rows = []
    for trained_with, readouts in READOUTS.items():
        start = time.perf_counter()
        stages = bounds.staircase(trained_with, MI_VALUES, steps_per_stage=steps, batch_size=batch_size, lr=lr,
                                  seed=seed, kind=kind)
        for stage, (mi, critic, history) in enumerate(stages):
            tail = torch.tensor(history[-max(1, len(history) // 10):])
            for name in readouts:
                trained = bounds.gaussian_estimates(name, critic, mi, batches=eval_batches, batch_size=batch_size,
                                                    seed=1000 + stage)
                optimal = bounds.gaussian_estimates(name, None, mi, batches=eval_batches, batch_size=batch_size,
                                                    seed=1000 + stage)
                rows.append({"critic": kind, "bound": name, "true_mi": mi, "steps_per_stage": steps,
                             "trained_mean": trained.mean().item(), "trained_std": trained.std().item(),
                             "train_tail_mean": tail.mean().item() if name == trained_with else float("nan"),
                             "optimal_mean": optimal.mean().item(), "optimal_std": optimal.std().item()})
        print(f"  {trained_with}: {time.perf_counter() - start:.0f}s", flush=True)
    return pd.DataFrame(rows)


def plot(table: pd.DataFrame, path: Path, batch_size: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(table["bound"]))
    fig, axes = plt.subplots(1, len(names), figsize=(2.8 * len(names), 3), sharey=True)
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
    fig.suptitle(f"{table['critic'].iloc[0]} critic, {table['steps_per_stage'].iloc[0]} steps per stage", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=2000, help="training steps per MI stage (the paper: 4000)")
    parser.add_argument("--critic", choices=("separable", "concat"), default="separable")
    parser.add_argument("--lr", type=float, default=5e-4, help="Adam's constant learning rate (the paper's 5e-4)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--eval-batches", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out"))
    args = parser.parse_args()
    start = time.perf_counter()
    print(f"{args.critic} critic, {args.steps} steps per stage, {torch.get_num_threads()} torch threads", flush=True)
    table = run(steps=args.steps, batch_size=args.batch_size, eval_batches=args.eval_batches, seed=args.seed,
                kind=args.critic, lr=args.lr)
    args.out.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out / "mi_bounds.csv", index=False)
    plot(table, args.out / "mi_bounds.png", args.batch_size)
    wide = table.pivot(index="bound", columns="true_mi", values="trained_mean").loc[ROWS]
    spread = table.pivot(index="bound", columns="true_mi", values="trained_std").loc[ROWS]
    cells = wide.map(lambda v: f"{v:6.2f}") + " ± " + spread.map(lambda v: f"{v:.2f}")
    print(f"trained critics, estimate ± std over {args.eval_batches} fresh batches of {args.batch_size} (nats); "
          "columns: true MI")
    print(cells.to_string())
    optimal = table.pivot(index="bound", columns="true_mi", values="optimal_mean").loc[ROWS]
    optimal_spread = table.pivot(index="bound", columns="true_mi", values="optimal_std").loc[ROWS]
    print("\noptimal critic (log density ratio; +1 for nwj), estimate ± std:")
    print((optimal.map(lambda v: f"{v:6.2f}") + " ± " + optimal_spread.map(lambda v: f"{v:.2f}")).to_string())
    print(f"\n{time.perf_counter() - start:.0f}s; wrote {args.out / 'mi_bounds.csv'} and {args.out / 'mi_bounds.png'}")


if __name__ == "__main__":
    main()
