"""Reports built from a run directory: the HTML page people read and the CI gate.

``write_report(run_dir)`` renders ``report.html``; ``check_run(run_dir, baseline)`` compares a
run with a committed baseline (robench.reports.gate). Both read only the stored files.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from robench.reports.gate import GateResult

__all__ = ["write_report", "check_run"]


def write_report(run_dir: str | Path) -> Path:
    """Write ``run_dir/report.html`` atomically from the run's files; see robench.reports.html."""
    from robench.reports.html import write_report as _write

    return _write(run_dir)


def check_run(run_dir: str | Path, baseline: str | Path, **options: Any) -> "GateResult":
    """Compare a run with a baseline CSV; see robench.reports.gate.check_run."""
    from robench.reports.gate import check_run as _check

    return _check(run_dir, baseline, **options)
