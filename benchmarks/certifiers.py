"""Time per example of each certifier, and what it settles, on the zoo's small MLP and the digits CNN.

    python benchmarks/certifiers.py [--n 100] [--threads 1] [--milp-time-limit 5] [--json PATH]

For each model (the zoo's ``mlp``, ``ibp-mlp`` and ``cnn`` on the embedded digits, trained and
cached on first use) at the data set's default L-inf epsilon, on the first ``--n`` test examples:
``ibp``, ``crown`` and ``milp`` (``smoothing`` certifies the gaussian-noise defense under L2; it
runs on the MLP wrapped in that defense). Per certifier: wall seconds per example (the
certification's own ``seconds``, which shares batch work equally), and the shares certified,
counterexample (a verified break) and unknown. The figures are absolute seconds on this machine:
compare certifiers within one run, and give the load average with them (printed first).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

from robench.certify import make_certifier
from robench.data import load_dataset
from robench.registry import load_builtins, models, defenses
from robench.threat import ThreatModel
from robench.verify import verify


def run_one(name: str, certifier, model, x, y, threat) -> dict:
    start = time.perf_counter()
    cert = certifier.certify(model, x, y, threat)
    wall = time.perf_counter() - start
    counter = cert.found_counterexample
    verified = verify(model, x, cert.counterexample, y, threat).broken if counter.any() else counter
    n = len(x)
    return {"certifier": name, "n": n, "seconds_per_example": wall / n,
            "median_seconds": float(cert.seconds.median()), "max_seconds": float(cert.seconds.max()),
            "certified": float(cert.certified.float().mean()), "counterexample": float((counter & verified).float().mean()),
            "unknown": float(cert.unknown.float().mean()), "unverified_counterexamples": int((counter & ~verified).sum())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--milp-time-limit", type=float, default=5.0)
    parser.add_argument("--models", default="mlp,ibp-mlp,cnn")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"load average {os.getloadavg()[0]:.2f}, {args.threads} thread(s), torch {torch.__version__}", flush=True)
    load_builtins()
    data = load_dataset("digits")
    x, y = data.x_test[: args.n], data.y_test[: args.n]
    eps = data.default_epsilon("linf")
    rows = []
    for model_name in args.models.split(","):
        model = models.get(model_name)(data).eval()
        threat = ThreatModel("linf", eps, data.bounds)
        for method, params in (("ibp", {}), ("crown", {}), ("milp", {"time_limit": args.milp_time_limit})):
            row = {"model": model_name, "norm": "linf", "epsilon": eps, **run_one(method, make_certifier(method, **params), model, x, y, threat)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    noisy = defenses.get("gaussian_noise")(models.get("mlp")(data).eval(), sigma=0.25, votes=16).eval()
    l2 = ThreatModel("l2", data.default_epsilon("l2") / 4, data.bounds)
    row = {"model": "mlp+gaussian-noise(0.25)", "norm": "l2", "epsilon": l2.epsilon,
           **run_one("smoothing", make_certifier("smoothing", n0=100, n=1000), noisy, x, y, l2)}
    rows.append(row)
    print(json.dumps(row), flush=True)
    print(f"\n{'model':26s} {'certifier':10s} {'eps':>5s} {'s/example':>10s} {'certified':>9s} {'counter':>8s} {'unknown':>8s}")
    for r in rows:
        print(f"{r['model']:26s} {r['certifier']:10s} {r['epsilon']:5.3g} {r['seconds_per_example']:10.4f} "
              f"{r['certified']:9.3f} {r['counterexample']:8.3f} {r['unknown']:8.3f}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    sys.exit(main())
