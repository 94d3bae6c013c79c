"""A tqdm progress bar over a run's units, with examples and model queries per second.

Shown only on a terminal and without ``--quiet``; log lines and the bar share stderr.
"""
from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from robench.plan import Unit
    from robench.units import UnitResult


class UnitProgress:
    def __init__(self, *, enabled: bool = True) -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self.bar = None
        self.queries = 0
        self.examples = 0
        self.started = time.perf_counter()

    def start(self, todo: list[Unit], done: int) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        self.started = time.perf_counter()
        self.bar = tqdm(total=len(todo) + done, initial=done, unit="unit", desc="evaluate", leave=False,
                        dynamic_ncols=True, file=sys.stderr)

    def update(self, result: UnitResult) -> None:
        if self.bar is None:
            return
        self.queries += result.queries
        self.examples += result.unit.stop - result.unit.start
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        self.bar.set_postfix_str(f"{result.unit.defense} eps={result.unit.epsilon:g} {result.unit.attack} | "
                                 f"{self.examples / elapsed:.0f} ex/s, {self.queries / elapsed:,.0f} queries/s")
        self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
