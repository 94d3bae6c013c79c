"""``robench report DIR`` and ``robench check DIR --baseline PATH``: thin click wrappers.

robench/cli.py adds these to its group (``main.add_command(report)``, ``main.add_command(check)``);
the shared ``friendly_errors`` decorator comes from robench.console, so nothing here imports cli.py.
Exit codes: 0 pass, 1 regression (check only), 2 bad input (one line on stderr, no traceback).
"""
from __future__ import annotations

import sys
from pathlib import Path

import click

from robench.console import friendly_errors


@click.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@friendly_errors
def report(run_dir: Path) -> None:
    """Regenerate DIR/report.html from the files of a run directory (results.csv, run.json, ...)."""
    from robench.reports.html import write_report

    path = write_report(run_dir)
    click.echo(f"wrote {path}")


@click.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--baseline", required=True, type=click.Path(path_type=Path),
              help="Committed baseline CSV (e.g. reports/baseline.csv).")
@click.option("--junit", type=click.Path(path_type=Path), default=None,
              help="Also write JUnit XML here: one test per defense and epsilon.")
@click.option("--update-baseline", is_flag=True, help="Rewrite the baseline from this run (after showing the comparison).")
@click.option("--alpha", type=float, default=None, help="One-sided significance level per comparison [default: 0.01].")
@friendly_errors
def check(run_dir: Path, baseline: Path, junit: Path | None, update_baseline: bool, alpha: float | None) -> None:
    """Fail (exit 1) when worst-case robust accuracy fell significantly below the baseline."""
    from robench.reports.gate import ALPHA, check_run, diff_table

    result = check_run(run_dir, baseline, junit=junit, update_baseline=update_baseline,
                       alpha=ALPHA if alpha is None else alpha)
    click.echo(diff_table(result))
    if junit is not None:
        click.echo(f"wrote {junit}")
    if update_baseline:
        click.echo(f"baseline {baseline} rewritten from {run_dir}; review and commit it")
        return
    if not result.passed:
        sys.exit(1)
