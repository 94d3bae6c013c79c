"""EOT through a randomized defense: one stacked forward of k copies against k calls, same run.

    python benchmarks/eot.py [--defense parallel-purify] [--model cnn1d] [--dataset mnist1d]
                             [--n 25] [--eot 10] [--draws 15] [--repeats 3] [--threads 1]

Times the two costs a randomized target adds to an attack, on the first ``--n`` test examples:
the EOT gradient (``adaptive_target(target, eot_samples=k)``: forward, cross-entropy, backward)
and the verifier's majority vote (``predict_correct`` over ``--draws`` draws). Each is timed with
the draws stacked (the target declares ``independent_rows``) and with one call per draw (the
flag switched off for the measurement), median of ``--repeats``, and reported as a ratio. Both
paths compute the same estimator; the benchmark also checks that the two EOT means agree in
expectation (the mean log-probability over 20 repeats each, up to the draws' noise).
The cached zoo model and defense are built on first use (training included).
"""
from __future__ import annotations

import argparse
import os
from dataclasses import replace

import torch

from robench.attacks.adaptive import adaptive_target
from robench.data import load_dataset
from robench.resolve import build_defense, defense_cards, load_model
from robench.tags import target_tags
from robench.verify import predict_correct
from timing import median_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--defense", default="parallel-purify")
    parser.add_argument("--model", default="cnn1d")
    parser.add_argument("--dataset", default="mnist1d")
    parser.add_argument("--n", type=int, default=25)
    parser.add_argument("--eot", type=int, default=10)
    parser.add_argument("--draws", type=int, default=15)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"load average {os.getloadavg()[0]:.2f}, {args.threads} thread(s)")
    data = load_dataset(args.dataset)
    target = build_defense(defense_cards((args.defense,), data)[0], load_model(args.model, data).eval(), data).eval()
    tags = target_tags(target)
    if not tags.stacks_draws:
        raise SystemExit(f"{args.defense} does not declare independent_rows: nothing to compare")
    x = torch.as_tensor(data.x_test[: args.n]).float()
    y = torch.as_tensor(data.y_test[: args.n]).long()

    rows = {}
    for stacked in (True, False):
        as_declared = replace(tags, independent_rows=stacked)  # per draw: as if the blocks had not declared it
        eot = adaptive_target(target, eot_samples=args.eot, tags=as_declared)

        def gradient() -> None:
            inp = x.detach().requires_grad_(True)
            torch.nn.functional.cross_entropy(eot(inp), y).backward()

        with torch.no_grad():
            mean_logp = torch.stack([eot(x).gather(1, y[:, None]).mean() for _ in range(20)])
        rows[stacked] = (median_seconds(gradient, args.repeats),
                         median_seconds(lambda: predict_correct(target, x, y, draws=args.draws, tags=as_declared), args.repeats),
                         float(mean_logp.mean()), float(mean_logp.std() / 20**0.5))
    for name, i in (("EOT gradient", 0), ("majority vote", 1)):
        print(f"{name:14s} stacked {rows[True][i]:.3f} s, per draw {rows[False][i]:.3f} s: {rows[False][i] / rows[True][i]:.1f}x")
    (a, sa), (b, sb) = rows[True][2:], rows[False][2:]
    print(f"mean log p(y): stacked {a:.4f} +- {sa:.4f}, per draw {b:.4f} +- {sb:.4f}")


if __name__ == "__main__":
    main()
