"""robench's `autoattack` and `standard` suites against the reference AutoAttack, on real MNIST.

    PYTHONPATH=/tmp/ta python benchmarks/autoattack.py [--examples 500] [--threads 2] [--json PATH] [--quick]

The peer is torchattacks' ``AutoAttack(version='standard')`` (APGD-CE, APGD-T, FAB-T, Square), installed
for the benchmark only: ``pip install --no-deps --target /tmp/ta torchattacks`` (a plain install pulls
torchvision and with it a CUDA build of torch; torchattacks' AutoAttack imports without it). Targets:
the ``mnist-cnn`` zoo model at L-inf 0.1 and 0.3, and the mnist PGD-trained model (``adv-trained``'s
factory on mnist, eps 0.3) at 0.3; the first ``--examples`` test examples of robench's mnist split.

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


def _peer(model, x, y, eps: float, seed: int):
    import torchattacks

    attack = torchattacks.AutoAttack(model, norm="Linf", eps=eps, version="standard", n_classes=10, seed=seed)
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
        with torch.no_grad():
            clean = model(x).argmax(1) == y
        x_peer, peer_seconds = _peer(model, x, y, eps, args.seed)
        check = verify(model, x, x_peer, y, threat)
        peer_broken = clean & check.broken
        peer_outside = clean & check.misclassified & ~check.in_threat
        row = {"target": name, "eps": eps, "n": n, "clean": int(clean.sum()),
               "peer": {"robust": int((clean & ~peer_broken).sum()), "seconds": round(peer_seconds, 1),
                        "outside_ball": int(peer_outside.sum())}}
        for suite in args.suites.split(","):
            broken, seconds, _ = _robench(model, x, y, eps, suite, args.seed)
            row[suite] = {
                "robust": int((clean & ~broken).sum()), "seconds": round(seconds, 1),
                "peer_only": int((peer_broken & ~broken).sum()), "robench_only": int((broken & ~peer_broken).sum()),
                "time_vs_peer": round(seconds / max(peer_seconds, 1e-9), 2),
            }
        figures.append(row)
        print(json.dumps(row), flush=True)
    print()
    print("| target | eps | AutoAttack (peer) robust | s | " + " | ".join(
        f"robench {s} robust | peer-only | robench-only | s | x peer" for s in args.suites.split(",")) + " |")
    print("|---|---:|---:|---:|" + "---:|---:|---:|---:|---:|" * len(args.suites.split(",")))
    for row in figures:
        cells = [row["target"], f"{row['eps']:g}", f"{row['peer']['robust'] / row['n']:.3f}", f"{row['peer']['seconds']}"]
        for suite in args.suites.split(","):
            r = row[suite]
            cells += [f"{r['robust'] / row['n']:.3f}", str(r["peer_only"]), str(r["robench_only"]), str(r["seconds"]),
                      f"{r['time_vs_peer']}x"]
        print("| " + " | ".join(cells) + " |")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    sys.exit(main())
