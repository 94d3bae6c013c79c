"""Attack speed and strength, robench against the libraries users would pick instead, in one process.

    python benchmarks/attacks.py [--quick] [--json PATH] [--threads 2] [--repeats 3] [--max-batch N]

Two targets: robench's zoo ``cnn`` on the embedded digits (trained and cached on first use) and the
same architecture at CIFAR-10 size (3x32x32) on synthetic inputs (timings do not depend on pixel
content). For each target: the model's own forward (and forward+backward) cost per row over a
sweep of batch sizes (the limit), then every attack and implementation at the same budget: wall
time (median of ``--repeats`` runs after a warm-up), rows the model was asked for (counted by a
wrapper, the same way for every implementation), cost per row, and robust accuracy (robench's
``verify`` on each proposal). For PGD, also the step alone with no early exit, robench against the
plain loop in interleaved runs. Figures are ratios within this run, never absolute thresholds.

Peers (advertorch, foolbox, torchattacks, ART) are imported if present; one that cannot be imported
or fails is reported as "unavailable (reason)". Run it from the benchmark's own environment
(``benchmarks/requirements.txt``); shims for old peers live in ``benchmarks/_shims.py``.
"""
from __future__ import annotations

import argparse
import json
import logging
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _shims  # noqa: E402
from timing import median_seconds as _time  # noqa: E402

from robench import rng  # noqa: E402
from robench.attacks.apgd import APGDCE  # noqa: E402
from robench.attacks.gradient import FOOLBOX_PGD, FoolboxAttack  # noqa: E402
from robench.attacks.pgd import PGD  # noqa: E402
from robench.attacks.spsa import SPSA  # noqa: E402
from robench.attacks.square import Square  # noqa: E402
from robench.threat import ThreatModel  # noqa: E402
from robench.verify import verify  # noqa: E402

log = logging.getLogger("benchmarks.attacks")


class Counted(nn.Module):
    """Counts the rows every implementation asks the model for (same wrapper for all)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.rows = 0

    def forward(self, x: Tensor) -> Tensor:
        self.rows += len(x)
        return self.model(x)


@dataclass
class Workload:
    name: str
    model: nn.Module
    x: Tensor
    y: Tensor
    epsilon: float
    spsa_steps: int
    spsa_samples: int
    square_queries: int
    pgd_steps: int
    limit: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------------------- targets
def digits_workload(n: int, quick: bool) -> Workload:
    from robench.data import load_digits
    from robench.zoo.cnn import cnn

    data = load_digits()
    model = cnn(data).eval()
    x, y = data.x_test[:n], data.y_test[:n]
    return Workload("digits-cnn (1x8x8)", model, x, y, 0.1, 2 if quick else 20, 128, 50 if quick else 500, 2 if quick else 20)


def cifar_workload(n: int, quick: bool) -> Workload:
    from robench.zoo.cnn import SmallCNN
    from robench.zoo.training import seeded_init

    model = seeded_init(0, lambda: SmallCNN(3, 32, 32, 10)).eval()
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(n, 3, 32, 32, generator=generator)
    with torch.no_grad():
        y = model(x).argmax(1)  # every example starts correctly classified
    return Workload("cifar-size cnn (3x32x32, synthetic)", model, x, y, 8 / 255, 2 if quick else 5, 128, 20 if quick else 200, 2 if quick else 10)


# ------------------------------------------------------------------------------------- the limit
def sweep(model: nn.Module, example: Tensor, sizes: list[int], repeats: int) -> dict:
    """Microseconds per row of forward, and of forward+backward, at each batch size."""
    forward, backward = {}, {}
    for size in sizes:
        batch = example[:1].expand(size, *example.shape[1:]).contiguous()

        def fwd() -> None:
            with torch.no_grad():
                model(batch)

        def fwd_bwd() -> None:
            xb = batch.clone().requires_grad_(True)
            torch.autograd.grad(model(xb).sum(), xb)

        forward[size] = _time(fwd, repeats) / size * 1e6
        backward[size] = _time(fwd_bwd, repeats) / size * 1e6
    best_f = min(forward, key=forward.get)
    best_b = min(backward, key=backward.get)
    return {
        "forward_us_per_row": forward,
        "forward_backward_us_per_row": backward,
        "fastest_forward": {"batch": best_f, "us_per_row": forward[best_f]},
        "fastest_forward_backward": {"batch": best_b, "us_per_row": backward[best_b]},
    }


# -------------------------------------------------------------------------------- implementations
def plain_pgd(model: nn.Module, x: Tensor, y: Tensor, eps: float, steps: int, step: float) -> Tensor:
    """The reference loop: sign-gradient steps on cross-entropy, clip to the ball and [0, 1]."""
    generator = torch.Generator().manual_seed(0)
    delta = (torch.rand(x.shape, generator=generator) * 2 - 1) * eps
    x_adv = (x + delta).clamp(0, 1)
    for _ in range(steps):
        x_adv = x_adv.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(model(x_adv), y, reduction="sum"), x_adv)
        x_adv = torch.min(torch.max(x_adv.detach() + step * grad.sign(), x - eps), x + eps).clamp(0, 1)
    return x_adv.detach()


def implementations(w: Workload, max_batch: int | None) -> dict[str, dict[str, Callable]]:
    """attack -> implementation -> fn(counted_model, x, y) -> x_adv (None entries: unavailable)."""
    eps, n = w.epsilon, len(w.x)
    threat = ThreatModel("linf", eps)
    seeds = rng.example_seeds(0, "benchmark", torch.arange(n))
    pgd_step = 2.5 * eps / w.pgd_steps  # Madry et al.'s step, for every implementation
    pairs = w.spsa_samples // 2

    def robench(attack):
        return lambda m, x, y: attack.run(m, x, y, threat, seeds=seeds[: len(x)]).x_adv

    table: dict[str, dict[str, Callable]] = {
        "spsa": {
            "robench": robench(SPSA(steps=w.spsa_steps, samples=w.spsa_samples, max_batch=max_batch)),
        },
        "square": {"robench": robench(Square(queries=w.square_queries, max_batch=max_batch))},
        "pgd": {
            "robench": robench(PGD(steps=w.pgd_steps, abs_stepsize=pgd_step, max_batch=max_batch)),
            "robench (foolbox adapter)": robench(FoolboxAttack("foolbox.LinfPGD", FOOLBOX_PGD, steps=w.pgd_steps, abs_stepsize=pgd_step)),
            "plain torch loop": lambda m, x, y: plain_pgd(m, x, y, eps, w.pgd_steps, pgd_step),
        },
        "apgd-ce": {"robench": robench(APGDCE(steps=w.pgd_steps, max_batch=max_batch))},
    }

    def peer(attack: str, name: str, build: Callable[[], Callable]) -> None:
        try:
            table[attack][name] = build()
        except Exception as exc:  # noqa: BLE001 - a peer that cannot load is reported, not fatal
            table[attack][name] = f"unavailable ({type(exc).__name__}: {str(exc).splitlines()[0][:90]})"

    def advertorch_spsa():
        from advertorch.attacks import LinfSPSAAttack

        def run(m, x, y):
            torch.manual_seed(0)
            return LinfSPSAAttack(m, eps, delta=0.01, lr=0.01, nb_iter=w.spsa_steps, nb_sample=pairs).perturb(x, y)

        return run

    def advertorch_pgd():
        from advertorch.attacks import LinfPGDAttack

        def run(m, x, y):
            torch.manual_seed(0)
            return LinfPGDAttack(m, eps=eps, nb_iter=w.pgd_steps, eps_iter=pgd_step).perturb(x, y)

        return run

    def foolbox_pgd():
        import foolbox as fb

        def run(m, x, y):
            torch.manual_seed(0)
            model = fb.PyTorchModel(m, bounds=(0, 1), device=x.device)
            return fb.attacks.LinfPGD(abs_stepsize=pgd_step, steps=w.pgd_steps)(model, x, y, epsilons=eps)[1]

        return run

    def torchattacks_attack(cls_name: str, **params):
        import torchattacks

        cls = getattr(torchattacks, cls_name)
        return lambda m, x, y: cls(m, **params)(x, y)

    def art_classifier(m):
        from art.estimators.classification import PyTorchClassifier

        return PyTorchClassifier(m, loss=nn.CrossEntropyLoss(), input_shape=tuple(w.x.shape[1:]), nb_classes=10, clip_values=(0.0, 1.0))

    def art_pgd():
        from art.attacks.evasion import ProjectedGradientDescent

        def run(m, x, y):
            attack = ProjectedGradientDescent(art_classifier(m), norm=np.inf, eps=eps, eps_step=pgd_step, max_iter=w.pgd_steps, num_random_init=1, batch_size=n, verbose=False)
            return torch.from_numpy(attack.generate(x.numpy(), y=y.numpy()))

        return run

    def art_square():
        from art.attacks.evasion import SquareAttack

        def run(m, x, y):
            attack = SquareAttack(art_classifier(m), norm=np.inf, eps=eps, max_iter=w.square_queries - 1, p_init=0.05, nb_restarts=1, batch_size=n, verbose=False)
            return torch.from_numpy(attack.generate(x.numpy(), y=y.numpy()))

        return run

    peer("spsa", "advertorch LinfSPSAAttack", advertorch_spsa)
    peer("square", "torchattacks Square", lambda: torchattacks_attack("Square", norm="Linf", eps=eps, n_queries=w.square_queries - 1, p_init=0.05, loss="margin", seed=0))
    peer("square", "ART SquareAttack", art_square)
    peer("pgd", "foolbox LinfPGD", foolbox_pgd)
    peer("pgd", "torchattacks PGD", lambda: torchattacks_attack("PGD", eps=eps, alpha=pgd_step, steps=w.pgd_steps, random_start=True))
    peer("pgd", "advertorch LinfPGDAttack", advertorch_pgd)
    peer("pgd", "ART ProjectedGradientDescent", art_pgd)
    peer("apgd-ce", "torchattacks APGD", lambda: torchattacks_attack("APGD", norm="Linf", eps=eps, steps=w.pgd_steps, loss="ce", seed=0))
    return table


# ------------------------------------------------------------------------------------ measuring
def measure(w: Workload, fn: Callable, repeats: int, budget_s: float) -> dict:
    counted = Counted(w.model).eval()
    threat = ThreatModel("linf", w.epsilon)
    warm = min(8, len(w.x))
    fn(counted, w.x[:warm], w.y[:warm])  # warm-up: imports, allocations, kernel selection
    walls: list[float] = []
    while len(walls) < repeats and (not walls or sum(walls) < budget_s):  # long runs: fewer repeats
        counted.rows = 0
        start = time.perf_counter()
        x_adv = fn(counted, w.x, w.y)
        walls.append(time.perf_counter() - start)
    wall = statistics.median(walls)
    x_adv = torch.as_tensor(x_adv).detach().float()
    check = verify(w.model, w.x, x_adv, w.y, threat)
    return {
        "wall_s": wall,
        "runs": len(walls),
        "rows": counted.rows,
        "rows_per_s": counted.rows / wall,
        "us_per_row": wall / max(counted.rows, 1) * 1e6,
        "robust_accuracy": 1.0 - float(check.broken.float().mean()),
        "outside_threat": int((~check.in_threat).sum()),
    }


_MEMORY_PROBE = """
import resource, sys, torch
torch.set_num_threads({threads})
from robench import rng
from robench.attacks.spsa import SPSA
from robench.threat import ThreatModel
from robench.zoo.cnn import SmallCNN
model = SmallCNN(1, 8, 8, 10).eval()
x = torch.rand(64, 1, 8, 8); y = model(x).argmax(1)
with torch.no_grad():
    model(torch.rand({max_batch}, 1, 8, 8))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
SPSA(steps=2, samples={samples}, early_stop=False, max_batch={max_batch}).run(model, x, y, ThreatModel("linf", 0.1), seeds=rng.example_seeds(0, "m", torch.arange(64)))
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
"""


def spsa_peak_memory(threads: int, max_batch: int, samples_list: list[int]) -> dict:
    """Peak RSS growth (MiB) of SPSA at growing ``samples``, fixed chunk cap, each in a fresh process."""
    out = {}
    for samples in samples_list:
        code = _MEMORY_PROBE.format(threads=threads, samples=samples, max_batch=max_batch)
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
        out[samples] = round(int(result.stdout.strip().splitlines()[-1]) / 1024, 1) if result.returncode == 0 else f"failed: {result.stderr[-200:]}"
    return {"max_batch": max_batch, "peak_rss_growth_mib_by_samples": out}


def pgd_step_overhead(w: Workload, runs: int) -> dict:
    """robench's PGD step against the plain loop's with no early exit: at epsilon 1e-4 no correctly
    classified example breaks, so both run every step on every row (one chunk; interleaved runs, median)."""
    eps = 1e-4
    with torch.no_grad():
        keep = w.model(w.x).argmax(1) == w.y
    x, y = w.x[keep], w.y[keep]
    step = 2.5 * eps / w.pgd_steps
    seeds = rng.example_seeds(0, "benchmark-overhead", torch.arange(len(x)))
    attack = PGD(steps=w.pgd_steps, abs_stepsize=step, max_batch=len(x))
    fns = {"plain": lambda: plain_pgd(w.model, x, y, eps, w.pgd_steps, step),
           "robench": lambda: attack.run(w.model, x, y, ThreatModel("linf", eps), seeds=seeds)}
    walls: dict[str, list[float]] = {name: [] for name in fns}
    for fn in fns.values():
        fn()  # warm-up
    for _ in range(runs):
        for name, fn in fns.items():
            start = time.perf_counter()
            result = fn()
            walls[name].append(time.perf_counter() - start)
    plain_s, robench_s = statistics.median(walls["plain"]), statistics.median(walls["robench"])
    return {"examples": len(x), "runs": runs, "robench_rows_per_example": sorted(set(result.queries.tolist())),
            "plain_s": plain_s, "robench_s": robench_s, "ratio": robench_s / plain_s}


# ------------------------------------------------------------------------------------ reporting
REFERENCE = {"spsa": "advertorch LinfSPSAAttack", "square": "torchattacks Square", "pgd": "plain torch loop", "apgd-ce": "torchattacks APGD"}


def render(results: dict) -> str:
    lines = []
    for w in results["workloads"]:
        f, b = w["limit"]["fastest_forward"], w["limit"]["fastest_forward_backward"]
        lines.append(f"\n## {w['name']}: {w['examples']} examples, L-inf {w['epsilon']:.4g}")
        lines.append(f"limit: forward {f['us_per_row']:.2f} us/row at batch {f['batch']}; forward+backward {b['us_per_row']:.2f} us/row at batch {b['batch']}")
        sweep_f = ", ".join(f"{k}: {v:.2f}" for k, v in w["limit"]["forward_us_per_row"].items())
        lines.append(f"forward us/row by batch: {sweep_f}")
        lines.append("")
        lines.append("| attack | implementation | budget | wall s | rows | us/row | x limit | wall vs reference | robust acc |")
        lines.append("|---|---|---|---:|---:|---:|---:|---:|---:|")
        for attack, impls in w["attacks"].items():
            ref = impls.get(REFERENCE[attack])
            limit = f["us_per_row"] if attack in ("spsa", "square") else b["us_per_row"]
            for name, r in impls.items():
                if isinstance(r, str):
                    lines.append(f"| {attack} | {name} | {w['budgets'][attack]} | {r} | | | | | |")
                    continue
                vs = f"{r['wall_s'] / ref['wall_s']:.2f}x" if isinstance(ref, dict) else "n/a"
                lines.append(
                    f"| {attack} | {name} | {w['budgets'][attack]} | {r['wall_s']:.3f} | {r['rows']} | {r['us_per_row']:.2f} | "
                    f"{r['us_per_row'] / limit:.2f} | {vs} | {r['robust_accuracy']:.3f} |"
                )
        if "pgd_step_overhead" in w:
            o = w["pgd_step_overhead"]
            lines.append(f"\nPGD step without early exit (epsilon 1e-4, {o['examples']} examples, rows per example {o['robench_rows_per_example']}, "
                         f"median of {o['runs']} interleaved runs): robench {o['robench_s']:.3f} s, plain loop {o['plain_s']:.3f} s, {o['ratio']:.2f}x")
        if "spsa_memory" in w:
            lines.append(f"\nSPSA peak RSS growth (MiB) by samples at max_batch {w['spsa_memory']['max_batch']}: {w['spsa_memory']['peak_rss_growth_mib_by_samples']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a fast smoke run: few examples, tiny budgets, one repeat")
    parser.add_argument("--json", type=Path, help="write all figures to this JSON file")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per measurement (median; default 3, quick 1)")
    parser.add_argument("--budget-s", type=float, default=20.0, help="stop repeating a measurement once its runs took this long")
    parser.add_argument("--max-batch", type=int, default=None, help="robench's forward chunk size (default: timed probe)")
    parser.add_argument("--examples", type=int, default=None, help="digits examples (default 256, quick 16)")
    parser.add_argument("--cifar-examples", type=int, default=None, help="CIFAR-size examples (default 32, quick 4)")
    parser.add_argument("--only", default="", help="comma-separated attacks to run (default: all)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    repeats = args.repeats or (1 if args.quick else 3)
    shims = _shims.install()
    results: dict = {"command": " ".join(["python", "benchmarks/attacks.py", *(argv if argv is not None else sys.argv[1:])]),
                     "torch": torch.__version__, "threads": args.threads, "repeats": repeats, "shims": shims, "workloads": []}
    workloads = [
        digits_workload(args.examples or (16 if args.quick else 256), args.quick),
        cifar_workload(args.cifar_examples or (4 if args.quick else 32), args.quick),
    ]
    only = {a for a in args.only.split(",") if a}
    for w in workloads:
        log.info("%s: limit sweep", w.name)
        sizes = [128, 512, 1024, 4096] if args.quick else [128, 256, 512, 1024, 2048, 4096, 8192, 16384]
        if w.x.shape[-1] > 8:
            sizes = [s for s in sizes if s <= 4096]
        entry = {"name": w.name, "examples": len(w.x), "epsilon": w.epsilon, "limit": sweep(w.model, w.x, sizes, repeats), "attacks": {},
                 "budgets": {"spsa": f"{w.spsa_steps} steps x {w.spsa_samples}", "square": f"{w.square_queries} queries",
                             "pgd": f"{w.pgd_steps} steps", "apgd-ce": f"{w.pgd_steps} steps"}}
        for attack, impls in implementations(w, args.max_batch).items():
            if only and attack not in only:
                continue
            entry["attacks"][attack] = {}
            for name, fn in impls.items():
                if isinstance(fn, str):
                    entry["attacks"][attack][name] = fn
                    continue
                log.info("%s: %s / %s", w.name, attack, name)
                try:
                    entry["attacks"][attack][name] = measure(w, fn, repeats, args.budget_s)
                except Exception as exc:  # noqa: BLE001 - a failing peer is reported, not fatal
                    entry["attacks"][attack][name] = f"unavailable ({type(exc).__name__}: {str(exc).splitlines()[0][:90] if str(exc) else ''})"
        if not only or "pgd" in only:
            log.info("%s: pgd step overhead", w.name)
            entry["pgd_step_overhead"] = pgd_step_overhead(w, 1 if args.quick else 9)
        if w.x.shape[1] == 1 and not args.quick and (not only or "spsa" in only):
            entry["spsa_memory"] = spsa_peak_memory(args.threads, args.max_batch or 1024, [128, 1024, 4096])
        results["workloads"].append(entry)
    text = render(results)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
