#!/usr/bin/env python
"""Re-make the weights robench ships (robench/zoo/weights/ and its manifest.json) from code.

    python scripts/ship-weights.py [--cache DIR]

Builds every recipe of ``robench.zoo.shipped.RECIPES`` the way a cold run does (the shipped weights
are never read), in a fresh temporary cache, or in ``--cache DIR``: a model already there is
taken as it is, so give only a cache the current code filled. Then copies the files into the
package and rewrites the manifest (file, cache key name, recipe, sha256, size, clean accuracy).
Run it after changing a shipped model's code, configuration or ``CODE_VERSION``
(``tests/zoo/test_shipped.py`` says when), with ``OMP_NUM_THREADS=1``: that is how the shipped
files were trained (the weights can differ in their last bits with the thread count).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # this checkout's robench, whatever else is installed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, help="a model cache the current code filled (default: a fresh one: train everything)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with tempfile.TemporaryDirectory(prefix="robench-ship-") as scratch:
        os.environ["ROBENCH_CACHE"] = str(args.cache.resolve() if args.cache else scratch)
        from robench.zoo.shipped import SHIPPED_DIR, ship

        start = time.perf_counter()
        entries = ship()
        total = sum(entry["bytes"] for entry in entries)
        for entry in entries:
            accuracy = entry["meta"].get("clean_test_accuracy")
            print(f"{entry['file']:<40} {entry['bytes'] / 1e6:6.3f} MB  clean acc {accuracy:.4f}  ({entry['recipe']})")
        print(f"{len(entries)} files, {total / 1e6:.2f} MB in {SHIPPED_DIR.relative_to(REPO)} "
              f"({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
