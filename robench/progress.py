"""Progress of a run in estimated model queries (``robench.budget``), not units.

On a terminal: a tqdm bar over the query budget, with the rate measured so far and the time left.
Elsewhere (a log file, CI, a notebook's captured stderr): one line every ``interval`` seconds,
from a background thread, so a long unit is never a long silence. Both stop at ``close``.
Nothing here changes a result: budgets and timings only decide what is printed.
"""
from __future__ import annotations

import sys
import threading
import time
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from robench.plan import Unit
    from robench.units import UnitResult

#: seconds between progress lines when the stream is not a terminal
INTERVAL = 30.0


def duration(seconds: float) -> str:
    """``1h02m``, ``3m10s`` or ``42s``."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def count(value: float) -> str:
    """``1.2M``, ``35k``, ``512``."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.1f}{suffix}"
    return f"{value:.0f}"


class Progress:
    """``start(todo, done, budgets)`` once the plan is known, ``update(result)`` per finished unit, ``close()``.

    ``enabled``: print at all; ``tty``: draw a bar (default: whether ``stream`` is a terminal);
    ``interval``: seconds between lines otherwise.
    """

    def __init__(self, *, enabled: bool = True, stream: TextIO | None = None, tty: bool | None = None,
                 interval: float = INTERVAL) -> None:
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = self.stream.isatty() if tty is None else tty
        self.interval = interval
        self.bar = None
        self.total = self.finished = 0
        self.units = self.units_done = 0
        self.queries = 0
        self.last = ""
        self.started = time.monotonic()
        self.budgets: dict[str, int] = {}
        self.unmeasured: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # -- what the runner calls ----------------------------------------------------------

    def start(self, todo: list[Unit], done: int, budgets: dict[str, int] | None = None) -> None:
        if not self.enabled or not todo:
            return
        self.budgets = dict(budgets or {})
        self.total = sum(self.budgets.get(u.store_key, 1) for u in todo)
        self.unmeasured = {u.store_key for u in todo if self.budgets.get(u.store_key, 1) == 0}
        self.units, self.units_done = len(todo), 0
        self.started = time.monotonic()
        if self.tty:
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, unit="q", unit_scale=True, desc="evaluate (query budget)", leave=False,
                            dynamic_ncols=True, file=self.stream, smoothing=0.05)
        else:
            self.line(f"robench: {len(todo)} unit(s) to run ({done} already done), about {count(self.total)} model queries "
                      f"at most; a line every {self.interval:g}s")
            self._thread = threading.Thread(target=self._tick, name="robench-progress", daemon=True)
            self._thread.start()

    def update(self, result: UnitResult) -> None:
        if not self.enabled or not self.units:
            return
        unit = result.unit
        step = self.budgets.get(unit.store_key, 1)
        with self._lock:
            self.unmeasured.discard(unit.store_key)
            self.finished += step
            self.units_done += 1
            self.queries += result.queries
            self.last = f"{unit.defense} eps={unit.epsilon:g} {unit.name}"
        if self.bar is not None:
            elapsed = max(time.monotonic() - self.started, 1e-9)
            self.bar.set_postfix_str(f"unit {self.units_done}/{self.units}: {self.last} | {count(self.queries / elapsed)} queries/s sent",
                                     refresh=False)
            self.bar.update(step)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    # -- the line ------------------------------------------------------------------------

    def status(self) -> str:
        """One line: share of the budget done, units, elapsed, and the time left at the rate so far."""
        with self._lock:
            finished, units_done, last, unmeasured = self.finished, self.units_done, self.last, len(self.unmeasured)
        elapsed = time.monotonic() - self.started
        share = finished / self.total if self.total else 0.0
        if share >= 1.0 or not self.total:
            left = "the query budget is spent"
        else:
            left = f"about {duration(elapsed * (1 - share) / share)} left" if share > 0 else "no unit finished yet"
        tail = f"; last finished: {last}" if last else ""
        if unmeasured:
            tail += f"; {unmeasured} certifier unit(s) to go, whose time the budget does not count"
        return (f"robench: {100 * share:.0f}% of the query budget ({units_done}/{self.units} units) in "
                f"{duration(elapsed)}, {left}{tail}")

    def line(self, text: str) -> None:
        try:
            print(text, file=self.stream, flush=True)
        except (OSError, ValueError):  # a closed or broken stream: progress is never worth an error
            pass

    def _tick(self) -> None:
        while not self._stop.wait(self.interval):
            self.line(self.status())

