"""robench's `autoattack` and `standard` suites against the reference AutoAttack, on real MNIST.

    PYTHONPATH=/tmp/ta python benchmarks/autoattack.py [--examples 500] [--threads 2] [--json PATH] [--quick]

The peer is torchattacks' ``AutoAttack(version='standard')`` (APGD-CE, APGD-T, FAB-T, Square), installed
for the benchmark only: ``pip install --no-deps --target /tmp/ta torchattacks`` (a plain install pulls
torchvision and with it a CUDA build of torch; torchattacks' AutoAttack imports without it). Targets:
the ``mnist-cnn`` zoo model at L-inf 0.1 and 0.3, and the mnist PGD-trained model (``adv-trained``'s
factory on mnist, eps 0.3) at 0.3; the first ``--examples`` test examples of robench's mnist split.
torchattacks' AutoAttack builds APGD, APGD-T and FAB with 10 iterations (their class defaults), where
the reference AutoAttack runs 100: the peer runs twice, as shipped and at the reference's budget
(the same four attacks in torchattacks' MultiAttack with 100 iterations); times compare against
the latter, the same budget as robench's ``autoattack`` suite.

For each target and suite: robust accuracy, the examples the peer breaks that robench does not and
the reverse, and wall time, all in one process (ratios, never absolute thresholds). The peer's
proposals are re-checked by robench's own ``verify`` (ball, bounds, misclassification), so a peer
break counts only if it is a real one; a peer break outside the ball is reported as such.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import torch


def _targets(quick: bool):
    from robench.data import load_mnist
    from robench.defenses.robust_training import adversarial_training
    from robench.zoo.cnn import mnist_cnn

    data = load_mnist()
    plain = mnist_cnn(data)
    robust = adversarial_training(data=data)
    cases = [("mnist-cnn", plain, 0.1), ("mnist-cnn", plain, 0.3), ("mnist adv-trained", robust, 0.3)]
    return data, cases[:1] if quick else cases


#: the peer as shipped, and the peer at the reference AutoAttack's budget: torchattacks' AutoAttack
#: builds its APGD, APGD-T and FAB with their class defaults, 10 iterations, where the reference
#: AutoAttack (and robench's autoattack.toml) run 100
PEERS = ("torchattacks-standard", "torchattacks-100")


def _peer(model, x, y, eps: float, seed: int, which: str = "torchattacks-100"):
    import torchattacks

    if which == "torchattacks-standard":
        attack = torchattacks.AutoAttack(model, norm="Linf", eps=eps, version="standard", n_classes=10, seed=seed)
    else:
        attack = torchattacks.MultiAttack([
            torchattacks.APGD(model, eps=eps, norm="Linf", seed=seed, loss="ce", n_restarts=1, steps=100),
            torchattacks.APGDT(model, eps=eps, norm="Linf", seed=seed, n_classes=10, n_restarts=1, steps=100),
            torchattacks.FAB(model, eps=eps, norm="Linf", seed=seed, multi_targeted=True, n_classes=10, n_restarts=1,
                             steps=100),
            torchattacks.Square(model, eps=eps, norm="Linf", seed=seed, n_queries=5000, n_restarts=1, p_init=0.8),
        ])
    started = time.perf_counter()
    x_adv = attack(x, y)
    return x_adv.detach(), time.perf_counter() - started


def _robench(model, x, y, eps: float, suite: str, seed: int):
    import robench

    started = time.perf_counter()
    evaluation = robench.evaluate(model, x, y, defenses=("none",), suite=suite, epsilons=(eps,), seed=seed,
                                  diagnostics=False, device="cpu")
    seconds = time.perf_counter() - started
    rows = evaluation.examples
    worst = rows.groupby("example")["broken"].max()
    clean = rows.groupby("example")["clean_correct"].first()
    return torch.tensor((worst & clean).sort_index().to_numpy()), seconds, evaluation.results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--examples", type=int, default=500)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--suites", default="autoattack,standard")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--quick", action="store_true", help="one target, 20 examples")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    from robench.threat import ThreatModel
    from robench.verify import verify

    n = 20 if args.quick else args.examples
    data, cases = _targets(args.quick)
    x, y = data.x_test[:n], data.y_test[:n]
    figures = []
    print(f"# load average {os.getloadavg()[0]:.1f}; {n} mnist test examples; {args.threads} thread(s)")
    for name, model, eps in cases:
        threat = ThreatModel("linf", eps, (0.0, 1.0))
        # warm-up, untimed: the first passes at each batch size pay for kernel selection, and
        # whoever ran first would pay it alone
        for which in PEERS:
            _peer(model, x[:8], y[:8], eps, args.seed, which)
        _robench(model, x[:8], y[:8], eps, "autoattack", args.seed)
        with torch.no_grad():
            clean = model(x).argmax(1) == y
        row = {"target": name, "eps": eps, "n": n, "clean": int(clean.sum()), "load_average": round(os.getloadavg()[0], 1)}
        peer_broken = torch.zeros(n, dtype=torch.bool)
        for which in PEERS:
            x_peer, seconds = _peer(model, x, y, eps, args.seed, which)
            check = verify(model, x, x_peer, y, threat)
            broken = clean & check.broken
            peer_broken |= broken
            row[which] = {"robust": int((clean & ~broken).sum()), "seconds": round(seconds, 1),
                          "outside_ball": int((clean & check.misclassified & ~check.in_threat).sum())}
        reference_seconds = row["torchattacks-100"]["seconds"]
        for suite in args.suites.split(","):
            broken, seconds, _ = _robench(model, x, y, eps, suite, args.seed)
            row[suite] = {
                "robust": int((clean & ~broken).sum()), "seconds": round(seconds, 1),
                "peer_only": int((peer_broken & ~broken).sum()), "robench_only": int((broken & ~peer_broken).sum()),
                "time_vs_peer_100": round(seconds / max(reference_seconds, 1e-9), 2),
            }
        figures.append(row)
        print(json.dumps(row), flush=True)
    print()
    suites = args.suites.split(",")
    print("| target | eps | peer as shipped (10 it) robust | s | peer at 100 it robust | s | "
          + " | ".join(f"robench {s} robust | peer-only | robench-only | s | x peer-100" for s in suites) + " |")
    print("|---|---:|---:|---:|---:|---:|" + "---:|---:|---:|---:|---:|" * len(suites))
    for row in figures:
        cells = [row["target"], f"{row['eps']:g}"]
        for which in PEERS:
            cells += [f"{row[which]['robust'] / row['n']:.3f}", f"{row[which]['seconds']}"]
        for suite in suites:
            r = row[suite]
            cells += [f"{r['robust'] / row['n']:.3f}", str(r["peer_only"]), str(r["robench_only"]), str(r["seconds"]),
                      f"{r['time_vs_peer_100']}x"]
        print("| " + " | ".join(cells) + " |")
    print("peer-only / robench-only: against the union of both peer runs' verified breaks")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    sys.exit(main())
