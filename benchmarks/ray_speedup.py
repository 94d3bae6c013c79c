"""Ray with N workers against the local executor, on a compute-bound suite, measured in one run.

    python benchmarks/ray_speedup.py [--workers 2] [--n-examples 64] [--json PATH]

Both executors run the same configuration (digits, cnn, two defenses, an SPSA-heavy suite, shards
of 16 examples) from a warm model cache; the script checks that their examples.csv are identical
and prints wall times and the speed-up. Ray's start-up is included in its time (it is part of
what a user waits for); the local run is measured after a warm-up so that imports and the model
cache do not count against it.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

#: seconds spent starting Ray and its workers, per executor (reported beside the totals)
STARTUP: dict[str, float] = {}

SUITE = """
name = "compute-bound"
[[attack]]
attack = "spsa"
[attack.params]
steps = 40
samples = 128
delta = 0.1
early_stop = false
"""


def run(executor: str, suite: Path, out: Path, n_examples: int, workers: int) -> float:
    from robench.runner import evaluate_config
    from robench.spec import EvalConfig
    from robench.store import RunStore

    config = EvalConfig(defenses=("none", "adv-trained"), suite=str(suite), n_examples=n_examples, shard_size=16,
                        diagnostics=False, device="cpu")
    started = time.perf_counter()
    if executor == "ray":
        import ray

        ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, configure_logging=False,
                 _node_ip_address="127.0.0.1")  # loopback only
        ray.get([ray.remote(lambda: None).remote() for _ in range(workers)])  # workers up
        STARTUP[executor] = time.perf_counter() - started
    try:
        evaluation = evaluate_config(config, store=RunStore(out), executor=executor)
    finally:
        if executor == "ray":
            import ray

            ray.shutdown()
    seconds = time.perf_counter() - started
    evaluation.examples.to_csv(out / "examples.csv", index=False)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--n-examples", type=int, default=64)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        suite = tmp / "suite.toml"
        suite.write_text(SUITE)
        run("local", suite, tmp / "warmup", 16, args.workers)  # trains/loads models, imports
        torch.set_num_threads(1)  # one core per worker on both sides: the comparison is about workers
        local = run("local", suite, tmp / "local", args.n_examples, args.workers)
        ray_seconds = run("ray", suite, tmp / "ray", args.n_examples, args.workers)
        same = (tmp / "local" / "examples.csv").read_text() == (tmp / "ray" / "examples.csv").read_text()
    startup = STARTUP.get("ray", 0.0)
    result = {"workers": args.workers, "n_examples": args.n_examples, "local_seconds": round(local, 2),
              "ray_seconds": round(ray_seconds, 2), "speedup": round(local / ray_seconds, 2),
              "ray_startup_seconds": round(startup, 2),
              "speedup_after_startup": round(local / max(ray_seconds - startup, 1e-9), 2),
              "identical_examples_csv": same, "cpus": os.cpu_count()}
    print(f"local (1 thread): {local:.1f}s   ray ({args.workers} workers, start-up included): {ray_seconds:.1f}s   "
          f"speed-up {local / ray_seconds:.2f}x ({local / max(ray_seconds - startup, 1e-9):.2f}x after Ray's "
          f"{startup:.1f}s start-up)   identical results: {same}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    sys.exit(0 if same else 1)


if __name__ == "__main__":
    main()
